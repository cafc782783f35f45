//go:build linux

// Package limits tells whether this (Linux) host can hold a connection target before
// a capacity run starts: open files per process, fs.nr_open, fs.file-max,
// ephemeral ports per client source address, the accept queue, conntrack and
// memory, read from /proc and RLIMIT_NOFILE. It is the Go counterpart of
// kernel-tuning/check and uses the same per-connection costs (the memory
// arithmetic in kernel-tuning/README.md).
//
// The /proc root is injectable (Checker.ProcRoot) so tests run against a fake
// tree, and so are the rlimit calls.
package limits

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// Need describes a run: how many connections, spread over how many
// processes, and whether the load-generating clients share this host.
type Need struct {
	// Conns is the number of connections to hold (> 0).
	Conns int
	// GatewayProcs is the number of gateway processes on this host sharing
	// the listening port (SO_REUSEPORT). 0 means no gateway here (a
	// load-generator host), which requires ClientsOnThisHost.
	GatewayProcs int
	// ClientProcs is the number of client (load-generator) processes. Used
	// only when ClientsOnThisHost; then it must be > 0.
	ClientProcs int
	// SourceIPs is the number of client source addresses (127.0.0.x on
	// loopback) the clients bind, each with its own ephemeral port range
	// toward the one gateway port. Used only when ClientsOnThisHost; 0
	// means one per client process.
	SourceIPs int
	// ClientsOnThisHost counts the client side on this host too: each
	// connection is then two sockets here, the client processes need open
	// files and memory, and the ephemeral ports come from this host.
	ClientsOnThisHost bool
	// Heartbeat is the interval at which every connection PINGs (0: not
	// checked). Conns/Heartbeat PINGs a second cost CPU on this host
	// (Costs.PerHeartbeat); a run whose heartbeats alone need more CPU than
	// the host has cannot hold its connections.
	Heartbeat time.Duration
}

// Costs are the per-unit figures the memory and open-files estimates use.
type Costs struct {
	// KernelPerSocket is kernel memory per TCP socket: tcp_sock, socket
	// inode, file, dentry, epoll item and small objects. Measured on this
	// box (kernel 6.18): 4,955 B of slab objects per idle loopback socket,
	// 5,162 B by the Slab delta in /proc/meminfo.
	KernelPerSocket int64
	// GatewayPerConn is the gateway's private memory per idle
	// authenticated connection: measured 2.7-3.5 KB of RssAnon marginal
	// from 100,000 to 1,000,000 connections (docs/benchmarks.md).
	GatewayPerConn int64
	// ClientPerConn is a load generator's memory per connection, for a
	// client that, like the gateway, holds idle connections without a
	// goroutine or read buffer each.
	ClientPerConn int64
	// PerProcess is each process's fixed cost: Go runtime, stacks, GC
	// headroom; measured ~8 MiB of private memory per gateway process and
	// ~7 MiB per load worker at a million connections, so 24 MiB leaves
	// room for a busier process. The binary's pages are one copy in the
	// page cache for all processes and are not counted per process.
	PerProcess int64
	// PerHeartbeat is the CPU one heartbeat (PING read, PONG written)
	// costs the gateway side, and PerHeartbeatClient what it costs a
	// client on the same host (the PING's write, the PONG's read).
	// Measured on this 2-vCPU VM at 19,000 and 1,000,000 connections: 64-90
	// µs and 55-76 µs, most of it waking a sleeping thread for each one.
	PerHeartbeat, PerHeartbeatClient time.Duration
	// FDSlack is the open files a process needs besides its connections:
	// listener, epoll and eventfds, stdio, logs, upstream connections.
	FDSlack int
}

// DefaultCosts are the figures kernel-tuning/check and kernel-tuning/README.md use.
var DefaultCosts = Costs{
	KernelPerSocket: 5 << 10,
	GatewayPerConn:  3584,
	ClientPerConn:   2 << 10,
	PerProcess:      24 << 20,
	FDSlack:         256,

	PerHeartbeat:       80 * time.Microsecond,
	PerHeartbeatClient: 70 * time.Microsecond,
}

// fullPortRange is the size of the widest usable ephemeral range, 1024-65535.
const fullPortRange = 65535 - 1024 + 1

// minSomaxconn is the accept-queue cap below which a reconnect burst
// overflows the per-listener queue (the kernel default since 5.4).
const minSomaxconn = 4096

// Item is one check.
type Item struct {
	Name    string
	Current string
	Needed  string
	OK      bool
	// Advisory items are reported (with their knob when not OK) but do not
	// make Report.OK false: the run fits, with a risk worth knowing.
	Advisory bool
	// Knob says what to turn when the item is not OK, e.g.
	// "sysctl -w fs.file-max=2600000" or "use more gateway processes".
	Knob string
	// Note is extra context (how a figure was computed, what was assumed).
	Note string
}

// Memory is the memory estimate for a Need, in bytes.
type Memory struct {
	Sockets     int   // TCP sockets on this host
	Kernel      int64 // Sockets x Costs.KernelPerSocket
	GatewayHeap int64 // Conns x Costs.GatewayPerConn, if gateway processes run here
	ClientHeap  int64 // Conns x Costs.ClientPerConn, if clients run here
	Processes   int   // processes on this host
	Runtimes    int64 // Processes x Costs.PerProcess
	Total       int64
}

// Estimate computes the memory a Need takes on this host under c.
func (c Costs) Estimate(n Need) Memory {
	var m Memory
	if n.GatewayProcs > 0 {
		m.Sockets += n.Conns
		m.GatewayHeap = int64(n.Conns) * c.GatewayPerConn
		m.Processes += n.GatewayProcs
	}
	if n.ClientsOnThisHost {
		m.Sockets += n.Conns
		m.ClientHeap = int64(n.Conns) * c.ClientPerConn
		m.Processes += n.ClientProcs
	}
	m.Kernel = int64(m.Sockets) * c.KernelPerSocket
	m.Runtimes = int64(m.Processes) * c.PerProcess
	m.Total = m.Kernel + m.GatewayHeap + m.ClientHeap + m.Runtimes
	return m
}

// Report is the outcome of Check.
type Report struct {
	Need  Need
	Items []Item
	// Notes lists what Check did or assumed, e.g. raising the soft
	// RLIMIT_NOFILE to the hard limit.
	Notes []string
	// Memory is the estimate the memory item compared with MemAvailable.
	Memory Memory
	// MemAvailable is /proc/meminfo's MemAvailable in bytes (0 if unread).
	MemAvailable int64
}

// OK reports whether every non-advisory item passed.
func (r Report) OK() bool { return len(r.Failed()) == 0 }

// Failed returns the non-advisory items that did not pass.
func (r Report) Failed() []Item {
	var out []Item
	for _, it := range r.Items {
		if !it.OK && !it.Advisory {
			out = append(out, it)
		}
	}
	return out
}

// Item returns the item with the given name.
func (r Report) Item(name string) (Item, bool) {
	for _, it := range r.Items {
		if it.Name == name {
			return it, true
		}
	}
	return Item{}, false
}

// String renders the report as a table followed by the knobs to turn and a
// verdict line ("FITS" or "DOES NOT FIT").
func (r Report) String() string {
	var b strings.Builder
	n := r.Need
	fmt.Fprintf(&b, "limits: %s connections, %d gateway processes", group(int64(n.Conns)), n.GatewayProcs)
	if n.ClientsOnThisHost {
		fmt.Fprintf(&b, ", %d client processes and %d source IPs on this host", n.ClientProcs, n.SourceIPs)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  \tCHECK\tCURRENT\tNEEDED")
	for _, it := range r.Items {
		st := "ok"
		switch {
		case !it.OK && it.Advisory:
			st = "WARN"
		case !it.OK:
			st = "FAIL"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", st, it.Name, it.Current, it.Needed)
	}
	tw.Flush()
	for _, it := range r.Items {
		if !it.OK && it.Knob != "" {
			fmt.Fprintf(&b, "  %s: %s\n", it.Name, it.Knob)
		}
		if it.Note != "" {
			fmt.Fprintf(&b, "  %s: %s\n", it.Name, it.Note)
		}
	}
	for _, note := range r.Notes {
		fmt.Fprintf(&b, "  note: %s\n", note)
	}
	if r.OK() {
		fmt.Fprintf(&b, "FITS: %s connections\n", group(int64(n.Conns)))
	} else {
		fmt.Fprintf(&b, "DOES NOT FIT: %s connections (%d failing)\n", group(int64(n.Conns)), len(r.Failed()))
	}
	return b.String()
}

// Checker runs the checks. The zero value reads /proc, uses DefaultCosts and
// the real getrlimit/setrlimit.
type Checker struct {
	// ProcRoot replaces "/proc": sysctls are read from ProcRoot/sys/...,
	// memory from ProcRoot/meminfo.
	ProcRoot string
	// Costs replaces DefaultCosts when non-zero.
	Costs Costs
	// Getrlimit and Setrlimit replace unix.Getrlimit and unix.Setrlimit.
	Getrlimit func(resource int, rlim *unix.Rlimit) error
	Setrlimit func(resource int, rlim *unix.Rlimit) error
	// KeepSoftLimit stops Check from raising the soft RLIMIT_NOFILE.
	KeepSoftLimit bool
}

// Check runs Checker{}.Check: against /proc and this process's RLIMIT_NOFILE,
// raising its soft limit to the hard limit first.
func Check(n Need) (Report, error) { return Checker{}.Check(n) }

// MinProcs runs Checker{}.MinProcs.
func MinProcs(conns int) (int, error) { return Checker{}.MinProcs(conns) }

func (c Checker) root() string {
	if c.ProcRoot == "" {
		return "/proc"
	}
	return c.ProcRoot
}

func (c Checker) costs() Costs {
	if c.Costs == (Costs{}) {
		return DefaultCosts
	}
	return c.Costs
}

func (c Checker) getrlimit(rl *unix.Rlimit) error {
	if c.Getrlimit != nil {
		return c.Getrlimit(unix.RLIMIT_NOFILE, rl)
	}
	return unix.Getrlimit(unix.RLIMIT_NOFILE, rl)
}

func (c Checker) setrlimit(rl *unix.Rlimit) error {
	if c.Setrlimit != nil {
		return c.Setrlimit(unix.RLIMIT_NOFILE, rl)
	}
	return unix.Setrlimit(unix.RLIMIT_NOFILE, rl)
}

// sysPath maps a sysctl key ("fs.file-max") to its file under the root.
func (c Checker) sysPath(key string) string {
	return filepath.Join(c.root(), "sys", filepath.FromSlash(strings.ReplaceAll(key, ".", "/")))
}

// sysFields reads a sysctl and splits it on blanks.
func (c Checker) sysFields(key string) ([]string, error) {
	b, err := os.ReadFile(c.sysPath(key))
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return nil, fmt.Errorf("%s: empty", c.sysPath(key))
	}
	return f, nil
}

// sysInt reads field i of a sysctl as an integer.
func (c Checker) sysInt(key string, i int) (int64, error) {
	f, err := c.sysFields(key)
	if err != nil {
		return 0, err
	}
	if i >= len(f) {
		return 0, fmt.Errorf("%s: %d fields, want field %d", c.sysPath(key), len(f), i+1)
	}
	v, err := strconv.ParseInt(f[i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", c.sysPath(key), err)
	}
	return v, nil
}

// memAvailable reads MemAvailable from meminfo, in bytes.
func (c Checker) memAvailable() (int64, error) {
	path := filepath.Join(c.root(), "meminfo")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: MemAvailable: %w", path, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s: no MemAvailable line", path)
}

// usableNofile is what any process here can raise its soft RLIMIT_NOFILE to
// without privilege: the hard limit, or fs.nr_open when the hard limit is
// unlimited.
func (c Checker) usableNofile(rl unix.Rlimit) (int64, error) {
	if rl.Max != unix.RLIM_INFINITY {
		return int64(rl.Max), nil
	}
	return c.sysInt("fs.nr_open", 0)
}

// MinProcs returns the number of processes needed to hold conns connections
// under this host's RLIMIT_NOFILE: ceil(conns / (limit - Costs.FDSlack)),
// where limit is the hard limit (any process may raise its soft limit that
// far without privilege; Go programs raise theirs to one below it at
// startup, which the slack covers), or fs.nr_open if the hard limit is
// unlimited.
func (c Checker) MinProcs(conns int) (int, error) {
	if conns <= 0 {
		return 0, fmt.Errorf("limits: conns must be > 0, got %d", conns)
	}
	var rl unix.Rlimit
	if err := c.getrlimit(&rl); err != nil {
		return 0, fmt.Errorf("limits: getrlimit(RLIMIT_NOFILE): %w", err)
	}
	limit, err := c.usableNofile(rl)
	if err != nil {
		return 0, fmt.Errorf("limits: hard RLIMIT_NOFILE is unlimited and fs.nr_open is unreadable: %w", err)
	}
	return minProcs(conns, limit, c.costs().FDSlack)
}

func minProcs(conns int, limit int64, slack int) (int, error) {
	per := limit - int64(slack)
	if per <= 0 {
		return 0, fmt.Errorf("limits: RLIMIT_NOFILE %d leaves no fds for connections after %d spare", limit, slack)
	}
	return int(ceilDiv(int64(conns), per)), nil
}

func (n *Need) validate() error {
	switch {
	case n.Conns <= 0:
		return fmt.Errorf("limits: Conns must be > 0, got %d", n.Conns)
	case n.GatewayProcs < 0 || n.ClientProcs < 0 || n.SourceIPs < 0:
		return errors.New("limits: process and source-IP counts must not be negative")
	case n.GatewayProcs == 0 && !n.ClientsOnThisHost:
		return errors.New("limits: nothing runs on this host: set GatewayProcs, or ClientsOnThisHost with ClientProcs")
	case n.ClientsOnThisHost && n.ClientProcs == 0:
		return errors.New("limits: ClientsOnThisHost needs ClientProcs > 0")
	}
	if !n.ClientsOnThisHost {
		n.ClientProcs, n.SourceIPs = 0, 0
	} else if n.SourceIPs == 0 {
		n.SourceIPs = n.ClientProcs
	}
	return nil
}

// Check reports whether n fits on this host. It first raises this process's
// soft RLIMIT_NOFILE to the hard limit (unless KeepSoftLimit), which child
// processes then inherit (once a Go program calls Setrlimit for
// RLIMIT_NOFILE, os/exec no longer restores the original soft limit in its
// children), and says so in Report.Notes.
//
// The error is non-nil when n is invalid (the Report is then empty), or when
// files the checks need could not be read; in that case the Report is still
// complete and marks those checks as failing, naming the file.
func (c Checker) Check(n Need) (Report, error) {
	if err := n.validate(); err != nil {
		return Report{}, err
	}
	costs := c.costs()
	r := Report{Need: n}
	var errs []error
	unreadable := func(name, needed string, err error) {
		errs = append(errs, err)
		r.Items = append(r.Items, Item{Name: name, Current: "unreadable", Needed: needed,
			Knob: "cannot read: " + err.Error()})
	}

	// RLIMIT_NOFILE: raise soft to hard, then compare per-process needs.
	nrOpen, nrOpenErr := c.sysInt("fs.nr_open", 0)
	var rl unix.Rlimit
	if err := c.getrlimit(&rl); err != nil {
		return r, fmt.Errorf("limits: getrlimit(RLIMIT_NOFILE): %w", err)
	}
	usable := int64(rl.Max)
	if rl.Max == unix.RLIM_INFINITY {
		usable = nrOpen // 0 if unreadable: every per-process check then fails, naming fs.nr_open
	}
	if !c.KeepSoftLimit && usable > 0 && int64(rl.Cur) < usable {
		want := rl
		want.Cur = uint64(usable)
		if err := c.setrlimit(&want); err != nil {
			r.Notes = append(r.Notes, fmt.Sprintf("could not raise the soft RLIMIT_NOFILE from %d to %d: %v", rl.Cur, usable, err))
		} else {
			r.Notes = append(r.Notes, fmt.Sprintf("raised the soft RLIMIT_NOFILE from %d to %d (the hard limit); child processes inherit it", rl.Cur, usable))
			rl.Cur = want.Cur
		}
	}
	soft := int64(rl.Cur)
	if rl.Cur == unix.RLIM_INFINITY {
		soft = usable
	}
	limitStr := fmt.Sprintf("soft %d / hard %s", soft, rlimStr(rl.Max))
	maxPerProc := int64(0)
	perProc := func(side, flag string, procs int) {
		need := ceilDiv(int64(n.Conns), int64(procs)) + int64(costs.FDSlack)
		maxPerProc = max(maxPerProc, need)
		it := Item{
			Name:    "open files per " + side + " process",
			Current: limitStr,
			Needed:  fmt.Sprintf("%s (%s/%d + %d)", group(need), group(int64(n.Conns)), procs, costs.FDSlack),
			OK:      need <= soft,
		}
		switch {
		case it.OK:
		case usable > 0 && need <= usable:
			it.Knob = fmt.Sprintf("raise the soft limit: ulimit -n %d (the hard limit)", usable)
		default:
			it.Knob = fmt.Sprintf("use more %s: at least %s, or raise the hard limit (LimitNOFILE=, /etc/security/limits.d; needs CAP_SYS_RESOURCE and fs.nr_open >= %d)",
				flag, minProcsStr(n.Conns, usable, costs.FDSlack), need)
		}
		r.Items = append(r.Items, it)
	}
	if n.GatewayProcs > 0 {
		perProc("gateway", "--gateway-procs", n.GatewayProcs)
	}
	if n.ClientsOnThisHost {
		perProc("client", "--client-procs", n.ClientProcs)
	}

	// fs.nr_open: the ceiling for any hard limit.
	if nrOpenErr != nil {
		unreadable("fs.nr_open", group(maxPerProc), nrOpenErr)
	} else {
		it := Item{Name: "fs.nr_open", Current: group(nrOpen), Needed: group(maxPerProc), OK: maxPerProc <= nrOpen}
		if !it.OK {
			it.Knob = fmt.Sprintf("sysctl -w fs.nr_open=%d", 2*maxPerProc)
		}
		r.Items = append(r.Items, it)
	}

	// fs.file-max: every socket on this host is an open file.
	mem := costs.Estimate(n)
	r.Memory = mem
	files := int64(mem.Sockets) + int64(mem.Processes)*int64(costs.FDSlack)
	filesNeeded := fmt.Sprintf("%s (%s sockets)", group(files), group(int64(mem.Sockets)))
	if fileMax, err := c.sysInt("fs.file-max", 0); err != nil {
		unreadable("fs.file-max", filesNeeded, err)
	} else {
		it := Item{Name: "fs.file-max", Current: group(fileMax), Needed: filesNeeded, OK: files <= fileMax}
		if !it.OK {
			it.Knob = fmt.Sprintf("sysctl -w fs.file-max=%d", roundUp(files*5/4, 100000))
		}
		if inUse, err := c.sysInt("fs.file-nr", 0); err == nil {
			it.Current += fmt.Sprintf(" (%s in use)", group(inUse))
		}
		r.Items = append(r.Items, it)
	}

	// Ephemeral ports: one per connection per source IP toward one server port.
	if n.ClientsOnThisHost {
		perIP := ceilDiv(int64(n.Conns), int64(n.SourceIPs))
		needed := fmt.Sprintf("%s (%s/%d IPs)", group(perIP), group(int64(n.Conns)), n.SourceIPs)
		if f, err := c.sysFields("net.ipv4.ip_local_port_range"); err != nil || len(f) != 2 {
			if err == nil {
				err = fmt.Errorf("%s: want 2 fields, got %q", c.sysPath("net.ipv4.ip_local_port_range"), f)
			}
			unreadable("ports per source IP", needed, err)
		} else {
			lo, err1 := strconv.ParseInt(f[0], 10, 64)
			hi, err2 := strconv.ParseInt(f[1], 10, 64)
			if err := errors.Join(err1, err2); err != nil {
				unreadable("ports per source IP", needed, err)
			} else {
				ports := hi - lo + 1
				it := Item{Name: "ports per source IP", Current: fmt.Sprintf("%d-%d = %s", lo, hi, group(ports)), Needed: needed, OK: perIP <= ports}
				switch {
				case it.OK:
				case perIP <= fullPortRange:
					it.Knob = fmt.Sprintf("add source IPs: at least %d (127.0.0.x), or sysctl -w net.ipv4.ip_local_port_range='1024 65535'",
						ceilDiv(int64(n.Conns), ports))
				default:
					it.Knob = fmt.Sprintf("add source IPs: at least %d (127.0.0.x); %d with the full 1024-65535 range",
						ceilDiv(int64(n.Conns), ports), ceilDiv(int64(n.Conns), fullPortRange))
				}
				r.Items = append(r.Items, it)
			}
		}
	}

	// Accept queue per listener (advisory: it slows a connect burst, it does
	// not cap the count).
	if n.GatewayProcs > 0 {
		needed := fmt.Sprintf(">= %d per listener", minSomaxconn)
		if v, err := c.sysInt("net.core.somaxconn", 0); err != nil {
			unreadable("net.core.somaxconn", needed, err)
		} else {
			it := Item{Name: "net.core.somaxconn", Current: group(v), Needed: needed, OK: v >= minSomaxconn, Advisory: true}
			if !it.OK {
				it.Knob = "sysctl -w net.core.somaxconn=65535 (connect bursts overflow the accept queue and wait for SYN-ACK retransmits)"
			}
			r.Items = append(r.Items, it)
		}
	}

	// Conntrack: one entry per connection, loopback included, when tracking.
	if ctMax, err := c.sysInt("net.netfilter.nf_conntrack_max", 0); err == nil {
		count, _ := c.sysInt("net.netfilter.nf_conntrack_count", 0)
		it := Item{Name: "nf_conntrack_max", Current: fmt.Sprintf("%s (%s tracked)", group(ctMax), group(count)),
			Needed: group(int64(n.Conns)) + " if tracking", OK: ctMax >= int64(n.Conns)}
		if !it.OK {
			it.Knob = "sysctl -w net.netfilter.nf_conntrack_max=2097152, or NOTRACK loopback in the raw table (kernel-tuning/README.md)"
			if count == 0 {
				it.Advisory = true
				it.Note = "conntrack is loaded but tracks nothing now (no rule uses it); once one does, loopback connections are tracked too"
			}
		}
		r.Items = append(r.Items, it)
	} else if !errors.Is(err, fs.ErrNotExist) {
		unreadable("nf_conntrack_max", group(int64(n.Conns)), err)
	}

	// Memory.
	breakdown := fmt.Sprintf("kernel %s sockets x %d B = %s; gateway heap %s; client heap %s; %d processes x %s = %s",
		group(int64(mem.Sockets)), costs.KernelPerSocket, gib(mem.Kernel), gib(mem.GatewayHeap), gib(mem.ClientHeap),
		mem.Processes, mib(costs.PerProcess), gib(mem.Runtimes))
	if avail, err := c.memAvailable(); err != nil {
		unreadable("memory", gib(mem.Total), err)
	} else {
		r.MemAvailable = avail
		it := Item{Name: "memory", Current: gib(avail) + " available", Needed: gib(mem.Total), OK: mem.Total <= avail, Note: breakdown}
		if !it.OK {
			perConn := (mem.Kernel + mem.GatewayHeap + mem.ClientHeap) / int64(n.Conns)
			fit := max((avail-mem.Runtimes)/perConn, 0)
			it.Knob = fmt.Sprintf("about %s connections fit: lower Conns, run the clients on another host, or add RAM", group(fit))
		}
		r.Items = append(r.Items, it)

		// Socket buffers live outside the estimate; tcp_mem caps them.
		if it.OK {
			if pages, err := c.sysInt("net.ipv4.tcp_mem", 2); err == nil {
				spare := avail - mem.Total
				bufMax := pages * 4096
				b := Item{Name: "tcp_mem max vs spare memory", Current: gib(bufMax), Needed: "<= " + gib(spare), OK: bufMax <= spare, Advisory: true}
				if !b.OK {
					p := spare / 4096
					b.Knob = fmt.Sprintf("socket buffers could outgrow the spare memory (OOM instead of back-pressure): sysctl -w net.ipv4.tcp_mem='%d %d %d'", p/2, p*3/4, p)
				}
				r.Items = append(r.Items, b)
			}
		}
	}
	if n.Heartbeat > 0 {
		r.Items = append(r.Items, heartbeatItem(n, costs, runtime.NumCPU()))
	}
	// Autogroup (advisory: it changes timings, not what fits). Absent on
	// kernels built without it.
	if v, err := c.sysInt(autogroupKey, 0); err == nil {
		it := Item{Name: autogroupKey, Current: group(v), Needed: "0", OK: v == 0, Advisory: true}
		if !it.OK {
			it.Knob = "sysctl -w kernel.sched_autogroup_enabled=0 (CPU is split between sessions first: a busy process in another session takes a whole CPU at once and latencies stall with it)"
		}
		r.Items = append(r.Items, it)
	} else if !errors.Is(err, fs.ErrNotExist) {
		unreadable(autogroupKey, "0", err)
	}
	return r, errors.Join(errs...)
}

const autogroupKey = "kernel.sched_autogroup_enabled"

// SchedAutogroup reads kernel.sched_autogroup_enabled: 0 or 1, or -1 when
// the kernel has no such setting or it cannot be read.
func SchedAutogroup() int {
	v, err := Checker{}.sysInt(autogroupKey, 0)
	if err != nil {
		return -1
	}
	return int(v)
}

// heartbeatItem checks that the heartbeats of n's connections leave CPU
// for everything else: more than the host's CPUs cannot hold the run (it
// falls behind and connections time out halfway), more than half of them
// is a warning.
func heartbeatItem(n Need, costs Costs, cpus int) Item {
	per := costs.PerHeartbeat
	if n.ClientsOnThisHost {
		per += costs.PerHeartbeatClient
	}
	rate := float64(n.Conns) / n.Heartbeat.Seconds()
	need := rate * per.Seconds() // CPUs
	it := Item{Name: "heartbeat CPU", Current: fmt.Sprintf("%d CPUs", cpus),
		Needed: fmt.Sprintf("%.2f CPUs (%s PINGs/s every %v, %v each)", need, group(int64(rate)), n.Heartbeat, per),
		OK:     need <= float64(cpus)/2}
	if !it.OK {
		it.Advisory = need <= float64(cpus)
		// The interval that keeps heartbeats at a quarter of the CPUs.
		quarter := time.Duration(float64(n.Conns) * per.Seconds() / (float64(cpus) / 4) * float64(time.Second)).Round(time.Second)
		it.Knob = fmt.Sprintf("a longer heartbeat: chatd --heartbeat %v (chatbench --server-heartbeat %v) keeps it to a quarter of the CPUs", quarter, quarter)
	}
	return it
}

func rlimStr(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}

func minProcsStr(conns int, limit int64, slack int) string {
	p, err := minProcs(conns, limit, slack)
	if err != nil {
		return "more"
	}
	return strconv.Itoa(p)
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func roundUp(v, to int64) int64 { return ceilDiv(v, to) * to }

// group formats an integer with thousands separators.
func group(v int64) string {
	s := strconv.FormatInt(v, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// gib formats a byte count in GiB, or MiB below 1 GiB.
func gib(b int64) string {
	if b < 1<<30 && b > -(1<<30) {
		return fmt.Sprintf("%d MiB", b>>20)
	}
	return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
}

func mib(b int64) string { return fmt.Sprintf("%d MiB", b>>20) }

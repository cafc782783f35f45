//go:build linux

package limits

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeProc writes a fake /proc tree: keys are sysctl names ("fs.file-max")
// or "meminfo".
func fakeProc(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for k, v := range files {
		p := filepath.Join(root, "meminfo")
		if k != "meminfo" {
			p = filepath.Join(root, "sys", strings.ReplaceAll(k, ".", "/"))
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// tunedHost is a 24 GiB host after kernel-tuning/gateway.conf and loadgen.conf.
func tunedHost() map[string]string {
	return map[string]string{
		"fs.file-max":                    "3000000",
		"fs.file-nr":                     "512\t0\t3000000",
		"fs.nr_open":                     "2097152",
		"net.ipv4.ip_local_port_range":   "1024\t65535",
		"net.core.somaxconn":             "65535",
		"net.ipv4.tcp_mem":               "196608\t294912\t393216",
		"kernel.sched_autogroup_enabled": "0",
		"meminfo":                        "MemTotal:       24684100 kB\nMemFree:        23000000 kB\nMemAvailable:   24143040 kB\n",
	}
}

// rlimits fakes getrlimit/setrlimit: the soft limit may be raised up to the
// hard limit unless refuse is set.
type rlimits struct {
	cur, max uint64
	refuse   error
	sets     int
}

func (f *rlimits) checker(root string) Checker {
	return Checker{
		ProcRoot: root,
		Getrlimit: func(res int, rl *unix.Rlimit) error {
			if res != unix.RLIMIT_NOFILE {
				return errors.New("unexpected resource")
			}
			rl.Cur, rl.Max = f.cur, f.max
			return nil
		},
		Setrlimit: func(res int, rl *unix.Rlimit) error {
			f.sets++
			if f.refuse != nil {
				return f.refuse
			}
			if rl.Max > f.max || rl.Cur > rl.Max {
				return unix.EPERM
			}
			f.cur, f.max = rl.Cur, rl.Max
			return nil
		},
	}
}

var oneBox = Need{Conns: 1_000_000, GatewayProcs: 51, ClientProcs: 51, SourceIPs: 51, ClientsOnThisHost: true}

func mustItem(t *testing.T, r Report, name string) Item {
	t.Helper()
	it, ok := r.Item(name)
	if !ok {
		t.Fatalf("no item %q in\n%s", name, r)
	}
	return it
}

func TestCheckFitsOneMillionOnOneBox(t *testing.T) {
	rl := &rlimits{cur: 20000, max: 20000}
	r, err := rl.checker(fakeProc(t, tunedHost())).Check(oneBox)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("want fit, got\n%s", r)
	}
	for _, it := range r.Items {
		if !it.OK {
			t.Errorf("item %q not ok: %+v", it.Name, it)
		}
	}
	if rl.sets != 0 {
		t.Errorf("soft == hard: setrlimit called %d times", rl.sets)
	}
	m := r.Memory
	if m.Sockets != 2_000_000 || m.Processes != 102 {
		t.Errorf("sockets %d processes %d, want 2,000,000 and 102", m.Sockets, m.Processes)
	}
	want := int64(2_000_000*5120 + 1_000_000*3584 + 1_000_000*2048 + 102*24<<20)
	if m.Total != want {
		t.Errorf("memory total %d, want %d", m.Total, want)
	}
	s := r.String()
	for _, line := range []string{"FITS: 1,000,000 connections", "open files per gateway process", "open files per client process",
		"fs.file-max", "fs.nr_open", "ports per source IP", "memory", "19,864 (1,000,000/51 + 256)"} {
		if !strings.Contains(s, line) {
			t.Errorf("String() lacks %q:\n%s", line, s)
		}
	}
	if _, ok := r.Item("nf_conntrack_max"); ok {
		t.Error("conntrack item without nf_conntrack_max")
	}
}

func TestCheckTooFewProcsNamesProcs(t *testing.T) {
	rl := &rlimits{cur: 20000, max: 20000}
	n := oneBox
	n.GatewayProcs = 10
	r, err := rl.checker(fakeProc(t, tunedHost())).Check(n)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK() {
		t.Fatalf("10 gateway procs for 1M under 20,000 fds: want not OK\n%s", r)
	}
	it := mustItem(t, r, "open files per gateway process")
	if it.OK || !strings.Contains(it.Knob, "--gateway-procs: at least 51") {
		t.Errorf("knob %q, want --gateway-procs: at least 51", it.Knob)
	}
	if c := mustItem(t, r, "open files per client process"); !c.OK {
		t.Errorf("client side should fit: %+v", c)
	}
	if got := len(r.Failed()); got != 1 {
		t.Errorf("%d failed items, want 1:\n%s", got, r)
	}
	if !strings.Contains(r.String(), "DOES NOT FIT") {
		t.Errorf("String() lacks the verdict:\n%s", r)
	}
}

func TestCheckRaisesSoftLimit(t *testing.T) {
	rl := &rlimits{cur: 1024, max: 20000}
	r, err := rl.checker(fakeProc(t, tunedHost())).Check(oneBox)
	if err != nil {
		t.Fatal(err)
	}
	if rl.cur != 20000 || rl.sets != 1 {
		t.Fatalf("soft limit %d after %d setrlimit calls, want 20000 after 1", rl.cur, rl.sets)
	}
	if !r.OK() || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "raised the soft RLIMIT_NOFILE from 1024 to 20000") {
		t.Fatalf("notes %q\n%s", r.Notes, r)
	}
}

func TestCheckRaiseRefusedNamesUlimit(t *testing.T) {
	rl := &rlimits{cur: 1024, max: 20000, refuse: unix.EPERM}
	r, err := rl.checker(fakeProc(t, tunedHost())).Check(oneBox)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK() {
		t.Fatalf("soft limit 1024: want not OK\n%s", r)
	}
	it := mustItem(t, r, "open files per gateway process")
	if !strings.Contains(it.Knob, "ulimit -n 20000") {
		t.Errorf("knob %q, want ulimit -n 20000", it.Knob)
	}
	if len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "could not raise") {
		t.Errorf("notes %q", r.Notes)
	}
}

func TestCheckKeepSoftLimit(t *testing.T) {
	rl := &rlimits{cur: 1024, max: 20000}
	c := rl.checker(fakeProc(t, tunedHost()))
	c.KeepSoftLimit = true
	if _, err := c.Check(oneBox); err != nil {
		t.Fatal(err)
	}
	if rl.sets != 0 || rl.cur != 1024 {
		t.Errorf("KeepSoftLimit: %d setrlimit calls, soft %d", rl.sets, rl.cur)
	}
}

func TestCheckFileMaxNamesSysctl(t *testing.T) {
	files := tunedHost()
	files["fs.file-max"] = "1000000"
	r, err := (&rlimits{cur: 20000, max: 20000}).checker(fakeProc(t, files)).Check(oneBox)
	if err != nil {
		t.Fatal(err)
	}
	it := mustItem(t, r, "fs.file-max")
	// 2,000,000 sockets + 102 x 256 = 2,026,112; x 1.25 rounded up to 100,000.
	if it.OK || it.Knob != "sysctl -w fs.file-max=2600000" {
		t.Errorf("fs.file-max item %+v", it)
	}
	if r.OK() {
		t.Error("want not OK")
	}
}

func TestCheckNrOpen(t *testing.T) {
	files := tunedHost()
	files["fs.nr_open"] = "1048576"
	n := Need{Conns: 1_500_000, GatewayProcs: 1}
	r, err := (&rlimits{cur: 2_000_000, max: 2_000_000}).checker(fakeProc(t, files)).Check(n)
	if err != nil {
		t.Fatal(err)
	}
	if it := mustItem(t, r, "fs.nr_open"); it.OK || it.Knob != "sysctl -w fs.nr_open=3000512" {
		t.Errorf("fs.nr_open item %+v", it)
	}
}

func TestCheckPortsNameSourceIPs(t *testing.T) {
	files := tunedHost()
	files["net.ipv4.ip_local_port_range"] = "32768\t60999"
	for _, tc := range []struct {
		ips  int
		knob []string
	}{
		// 100,000 per IP: more than any range; 36 IPs with 28,232 ports, 16 with 64,512.
		{10, []string{"add source IPs: at least 36", "16 with the full 1024-65535 range"}},
		// 50,000 per IP: the full range would do.
		{20, []string{"add source IPs: at least 36", "ip_local_port_range='1024 65535'"}},
	} {
		n := oneBox
		n.SourceIPs = tc.ips
		r, err := (&rlimits{cur: 20000, max: 20000}).checker(fakeProc(t, files)).Check(n)
		if err != nil {
			t.Fatal(err)
		}
		it := mustItem(t, r, "ports per source IP")
		if it.OK {
			t.Errorf("%d IPs: ports item OK", tc.ips)
		}
		for _, k := range tc.knob {
			if !strings.Contains(it.Knob, k) {
				t.Errorf("%d IPs: knob %q lacks %q", tc.ips, it.Knob, k)
			}
		}
	}
	// 51 IPs: 19,608 per IP fit even the default range.
	r, err := (&rlimits{cur: 20000, max: 20000}).checker(fakeProc(t, files)).Check(oneBox)
	if err != nil {
		t.Fatal(err)
	}
	if it := mustItem(t, r, "ports per source IP"); !it.OK {
		t.Errorf("51 IPs on the default range: %+v", it)
	}
}

func TestCheckSourceIPsDefaultToClientProcs(t *testing.T) {
	n := oneBox
	n.SourceIPs = 0
	r, err := (&rlimits{cur: 20000, max: 20000}).checker(fakeProc(t, tunedHost())).Check(n)
	if err != nil {
		t.Fatal(err)
	}
	if r.Need.SourceIPs != 51 {
		t.Errorf("SourceIPs %d, want 51", r.Need.SourceIPs)
	}
}

func TestCheckMemoryNamesFit(t *testing.T) {
	files := tunedHost()
	files["meminfo"] = "MemAvailable:    8388608 kB\n" // 8 GiB
	r, err := (&rlimits{cur: 20000, max: 20000}).checker(fakeProc(t, files)).Check(oneBox)
	if err != nil {
		t.Fatal(err)
	}
	it := mustItem(t, r, "memory")
	// (8 GiB - 102 x 24 MiB) / 15,872 B per connection = 379,474.
	if it.OK || !strings.Contains(it.Knob, "about 379,474 connections fit") {
		t.Errorf("memory item %+v", it)
	}
	if _, ok := r.Item("tcp_mem max vs spare memory"); ok {
		t.Error("tcp_mem headroom checked although memory does not fit")
	}
}

func TestCheckTCPMemHeadroomIsAdvisory(t *testing.T) {
	files := tunedHost()
	files["net.ipv4.tcp_mem"] = "287901\t383870\t2000000" // 7.6 GiB max, spare is ~1.7 GiB
	r, err := (&rlimits{cur: 20000, max: 20000}).checker(fakeProc(t, files)).Check(oneBox)
	if err != nil {
		t.Fatal(err)
	}
	it := mustItem(t, r, "tcp_mem max vs spare memory")
	if it.OK || !it.Advisory || !strings.Contains(it.Knob, "sysctl -w net.ipv4.tcp_mem=") {
		t.Errorf("tcp_mem item %+v", it)
	}
	if !r.OK() {
		t.Errorf("an advisory item must not fail the report:\n%s", r)
	}
	if !strings.Contains(r.String(), "WARN") {
		t.Errorf("String() lacks WARN:\n%s", r)
	}
}

func TestCheckConntrack(t *testing.T) {
	for _, tc := range []struct {
		count    string
		ok       bool
		advisory bool
	}{
		{"0", true, true},      // loaded, tracking nothing: a warning
		{"1234", false, false}, // tracking: 262,144 < 1M fails
	} {
		files := tunedHost()
		files["net.netfilter.nf_conntrack_max"] = "262144"
		files["net.netfilter.nf_conntrack_count"] = tc.count
		r, err := (&rlimits{cur: 20000, max: 20000}).checker(fakeProc(t, files)).Check(oneBox)
		if err != nil {
			t.Fatal(err)
		}
		it := mustItem(t, r, "nf_conntrack_max")
		if it.OK || it.Advisory != tc.advisory || !strings.Contains(it.Knob, "nf_conntrack_max=2097152") {
			t.Errorf("count %s: item %+v", tc.count, it)
		}
		if r.OK() != tc.ok {
			t.Errorf("count %s: OK() = %v, want %v", tc.count, r.OK(), tc.ok)
		}
	}
}

func TestCheckMissingFiles(t *testing.T) {
	root := fakeProc(t, map[string]string{"fs.file-max": "3000000"})
	r, err := (&rlimits{cur: 20000, max: 20000}).checker(root).Check(oneBox)
	if err == nil {
		t.Fatal("want an error for the missing files")
	}
	for _, missing := range []string{"nr_open", "ip_local_port_range", "somaxconn", "meminfo"} {
		if !strings.Contains(err.Error(), missing) {
			t.Errorf("error %q does not name %s", err, missing)
		}
	}
	if r.OK() {
		t.Fatalf("missing files: want not OK\n%s", r)
	}
	for _, name := range []string{"fs.nr_open", "ports per source IP", "net.core.somaxconn", "memory"} {
		it := mustItem(t, r, name)
		if it.OK || it.Current != "unreadable" || !strings.HasPrefix(it.Knob, "cannot read: ") {
			t.Errorf("%s: %+v", name, it)
		}
	}
	if it := mustItem(t, r, "fs.file-max"); !it.OK {
		t.Errorf("fs.file-max present and large enough: %+v", it)
	}
}

func TestCheckGatewayOnly(t *testing.T) {
	n := Need{Conns: 1_000_000, GatewayProcs: 51, ClientProcs: 51, SourceIPs: 3}
	r, err := (&rlimits{cur: 20000, max: 20000}).checker(fakeProc(t, tunedHost())).Check(n)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Item("ports per source IP"); ok {
		t.Error("ports checked without clients on this host")
	}
	if _, ok := r.Item("open files per client process"); ok {
		t.Error("client fds checked without clients on this host")
	}
	if r.Memory.Sockets != 1_000_000 || r.Memory.ClientHeap != 0 || r.Memory.Processes != 51 {
		t.Errorf("memory %+v", r.Memory)
	}
	if r.Need.ClientProcs != 0 || r.Need.SourceIPs != 0 {
		t.Errorf("client fields kept without clients on this host: %+v", r.Need)
	}
}

func TestCheckLoadgenOnly(t *testing.T) {
	n := Need{Conns: 1_000_000, ClientProcs: 51, ClientsOnThisHost: true}
	r, err := (&rlimits{cur: 20000, max: 20000}).checker(fakeProc(t, tunedHost())).Check(n)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Item("net.core.somaxconn"); ok {
		t.Error("accept queue checked without a gateway")
	}
	if !r.OK() || r.Memory.GatewayHeap != 0 {
		t.Errorf("loadgen-only:\n%s", r)
	}
}

func TestCheckInvalidNeed(t *testing.T) {
	c := (&rlimits{cur: 20000, max: 20000}).checker(fakeProc(t, tunedHost()))
	for _, n := range []Need{
		{},
		{Conns: 10},
		{Conns: -1, GatewayProcs: 1},
		{Conns: 10, GatewayProcs: -1},
		{Conns: 10, GatewayProcs: 1, ClientsOnThisHost: true},
	} {
		if _, err := c.Check(n); err == nil {
			t.Errorf("%+v: want error", n)
		}
	}
}

func TestMinProcs(t *testing.T) {
	root := fakeProc(t, tunedHost())
	for _, tc := range []struct {
		conns    int
		cur, max uint64
		want     int
	}{
		{1_000_000, 20000, 20000, 51}, // 19,744 connections per process
		{1_000_000, 1024, 20000, 51},  // the hard limit counts, not the soft one
		{800_000, 20000, 20000, 41},
		{19_744, 20000, 20000, 1},
		{19_745, 20000, 20000, 2},
		{1_000_000, unix.RLIM_INFINITY, unix.RLIM_INFINITY, 1}, // fs.nr_open = 2,097,152
	} {
		got, err := (&rlimits{cur: tc.cur, max: tc.max}).checker(root).MinProcs(tc.conns)
		if err != nil || got != tc.want {
			t.Errorf("MinProcs(%d) with %d/%d = %d, %v; want %d", tc.conns, tc.cur, tc.max, got, err, tc.want)
		}
	}
	if _, err := (&rlimits{cur: 20000, max: 20000}).checker(root).MinProcs(0); err == nil {
		t.Error("MinProcs(0): want error")
	}
	if _, err := (&rlimits{cur: 100, max: 100}).checker(root).MinProcs(10); err == nil {
		t.Error("hard limit below the slack: want error")
	}
	empty := t.TempDir()
	if _, err := (&rlimits{cur: unix.RLIM_INFINITY, max: unix.RLIM_INFINITY}).checker(empty).MinProcs(10); err == nil {
		t.Error("unlimited hard limit without fs.nr_open: want error")
	}
}

func TestEstimate(t *testing.T) {
	m := DefaultCosts.Estimate(oneBox)
	// 2M x 5 KiB + 1M x 3.5 KiB + 1M x 2 KiB + 102 x 24 MiB = 18,438,914,048 B = 17.2 GiB.
	if m.Kernel != 10_240_000_000 || m.GatewayHeap != 3_584_000_000 || m.ClientHeap != 2_048_000_000 ||
		m.Runtimes != 102*24<<20 || m.Total != 18_438_914_048 {
		t.Errorf("estimate %+v", m)
	}
	if got := gib(m.Total); got != "17.2 GiB" {
		t.Errorf("gib(total) = %s", got)
	}
}

func TestGroup(t *testing.T) {
	for v, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1000000: "1,000,000", -12345: "-12,345"} {
		if got := group(v); got != want {
			t.Errorf("group(%d) = %q, want %q", v, got, want)
		}
	}
}

// TestCheckThisHost runs against the real /proc without touching the limit.
func TestCheckThisHost(t *testing.T) {
	if _, err := os.Stat("/proc/meminfo"); err != nil {
		t.Skip("no /proc/meminfo on this system")
	}
	r, err := Checker{KeepSoftLimit: true}.Check(Need{Conns: 1000, GatewayProcs: 1, ClientProcs: 1, ClientsOnThisHost: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", r)
	if _, err := MinProcs(1_000_000); err != nil {
		t.Fatal(err)
	}
}

// TestHeartbeatCPU: heartbeats that need more CPU than the host has refuse
// the run and name the knob; more than half is a warning; less passes.
func TestHeartbeatCPU(t *testing.T) {
	costs := DefaultCosts // 80 + 70 µs per heartbeat with the clients here
	for _, tc := range []struct {
		conns              int
		every              time.Duration
		ok, advisory, knob bool
	}{
		{1_000_000, 30 * time.Second, false, false, true}, // 5 CPUs
		{300_000, 30 * time.Second, false, true, true},    // 1.5 CPUs: a warning
		{100_000, 30 * time.Second, true, false, false},   // 0.5 CPUs
		{1_000_000, 300 * time.Second, true, false, false},
	} {
		it := heartbeatItem(Need{Conns: tc.conns, GatewayProcs: 1, ClientProcs: 1, ClientsOnThisHost: true, Heartbeat: tc.every}, costs, 2)
		if it.OK != tc.ok || it.Advisory != tc.advisory || (it.Knob != "") != tc.knob {
			t.Errorf("%d every %v: %+v", tc.conns, tc.every, it)
		}
		if tc.knob && !strings.Contains(it.Knob, "--heartbeat") {
			t.Errorf("%d every %v: knob %q names no heartbeat flag", tc.conns, tc.every, it.Knob)
		}
	}
	// Only the gateway here: half the cost.
	it := heartbeatItem(Need{Conns: 300_000, GatewayProcs: 16, Heartbeat: 30 * time.Second}, costs, 2)
	if !it.OK {
		t.Errorf("gateway-only 300,000 every 30s: %+v", it)
	}
}

// TestCheckAutogroup: autogroup on is reported with its knob but does not
// refuse the run (it changes timings, not what fits); a kernel without it
// has no row.
func TestCheckAutogroup(t *testing.T) {
	host := tunedHost()
	host["kernel.sched_autogroup_enabled"] = "1"
	r, err := (&rlimits{cur: 20000, max: 20000}).checker(fakeProc(t, host)).Check(oneBox)
	if err != nil {
		t.Fatal(err)
	}
	it := mustItem(t, r, "kernel.sched_autogroup_enabled")
	if it.OK || !it.Advisory || !strings.Contains(it.Knob, "sched_autogroup_enabled=0") || !r.OK() {
		t.Errorf("autogroup on: %+v, report ok %v", it, r.OK())
	}
	delete(host, "kernel.sched_autogroup_enabled")
	r, err = (&rlimits{cur: 20000, max: 20000}).checker(fakeProc(t, host)).Check(oneBox)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Item("kernel.sched_autogroup_enabled"); ok {
		t.Error("a row for a kernel without autogroup")
	}
}

package swarm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"
)

// WorkerStats is one line of a worker's output: a Stats snapshot (its
// fields flattened into the object) plus the worker process's own memory.
// The last line has Final set and carries the latency histograms, so the
// harness can merge workers exactly (Stats.Merge).
type WorkerStats struct {
	Time      time.Time `json:"time"`
	PID       int       `json:"pid"`
	SourceIP  string    `json:"source_ip,omitempty"`  // Config.SourceIP
	SourceIPs []string  `json:"source_ips,omitempty"` // Config.SourceIPs
	Final     bool      `json:"final,omitempty"`
	// Error is set on the final line when the worker could not run.
	Error string `json:"error,omitempty"`

	RSSBytes       int64 `json:"rss_bytes"`        // VmRSS from /proc/self/status
	HeapInuseBytes int64 `json:"heap_inuse_bytes"` // heap bytes in objects, live or not yet swept
	HeapLiveBytes  int64 `json:"heap_live_bytes"`  // heap bytes live at the last GC
	GoTotalBytes   int64 `json:"go_total_bytes"`   // everything the Go runtime mapped
	Goroutines     int   `json:"goroutines"`

	Stats
}

// WorkerMain runs one load-generation worker process: it reads a Config as
// JSON from stdin (or from the file named by -config), runs it, and writes
// one WorkerStats JSON line per second to stdout, then a final one. It
// stops on SIGTERM, SIGINT or EOF on stdin (-stdin-eof=false disables the
// latter) and returns the process exit code: 0 after a run, 1 if the run
// could not start, 2 for bad arguments or configuration.
//
// Unless GOMAXPROCS is set in the environment, the worker uses as many Ps
// as it has event loops: a worker is one of ~50 processes on the box.
//
// Flags:
//
//	-config FILE   read the Config from FILE instead of stdin
//	-stdin-eof     stop when stdin reaches EOF (default true)
//	-gc            run a GC before each line, so that the heap figures are
//	               exact (costs a mark phase per second)
func WorkerMain(args []string) int {
	fs := flag.NewFlagSet("swarm-worker", flag.ContinueOnError)
	cfgPath := fs.String("config", "-", "Config JSON file; - reads it from stdin")
	stdinEOF := fs.Bool("stdin-eof", true, "stop when stdin reaches EOF")
	forceGC := fs.Bool("gc", false, "run a GC before each stats line")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	out := json.NewEncoder(os.Stdout)
	failed := func(code int, err error) int {
		_ = out.Encode(WorkerStats{Time: time.Now(), PID: os.Getpid(), Final: true, Error: err.Error()})
		return code
	}

	var cfg Config
	var rest io.Reader = os.Stdin
	if *cfgPath == "-" {
		dec := json.NewDecoder(os.Stdin)
		if err := dec.Decode(&cfg); err != nil {
			return failed(2, fmt.Errorf("read config from stdin: %w", err))
		}
		rest = io.MultiReader(dec.Buffered(), os.Stdin)
	} else {
		b, err := os.ReadFile(*cfgPath)
		if err != nil {
			return failed(2, err)
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			return failed(2, fmt.Errorf("config %s: %w", *cfgPath, err))
		}
	}
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(max(1, cfg.Loops))
	}
	// SWARM_CPUPROFILE=PREFIX writes a CPU profile of the whole run to
	// PREFIX.<pid>: where a load worker spends its CPU (docs/benchmarks.md).
	if prefix := os.Getenv("SWARM_CPUPROFILE"); prefix != "" {
		if f, err := os.Create(fmt.Sprintf("%s.%d", prefix, os.Getpid())); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *stdinEOF {
		go func() {
			_, _ = io.Copy(io.Discard, rest)
			stop()
		}()
	}
	mem := newMemReader()
	progress := func(s Stats) {
		if *forceGC {
			runtime.GC()
		}
		ws := WorkerStats{Time: time.Now(), PID: os.Getpid(), SourceIP: cfg.SourceIP, SourceIPs: cfg.SourceIPs, Stats: s}
		ws.Final = s.ConnectHist != "" // Run's last call carries the histograms
		mem.read(&ws)
		_ = out.Encode(ws)
	}
	if err := Run(ctx, cfg, progress); err != nil {
		return failed(2, err)
	}
	return 0
}

// memReader samples the runtime's memory metrics without stopping the world.
type memReader struct{ samples []metrics.Sample }

func newMemReader() *memReader {
	return &memReader{samples: []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/total:bytes"},
	}}
}

func (m *memReader) read(ws *WorkerStats) {
	metrics.Read(m.samples)
	val := func(i int) int64 {
		if m.samples[i].Value.Kind() == metrics.KindUint64 {
			return int64(m.samples[i].Value.Uint64())
		}
		return 0
	}
	ws.HeapInuseBytes, ws.HeapLiveBytes, ws.GoTotalBytes = val(0), val(1), val(2)
	ws.Goroutines = runtime.NumGoroutine()
	ws.RSSBytes = ReadRSS()
}

// ReadRSS returns this process's resident set size (VmRSS), or 0 if
// /proc/self/status cannot be read.
func ReadRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			v = bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))
			kb, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

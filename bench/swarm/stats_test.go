package swarm

import (
	"path/filepath"
	"testing"
	"time"
	"unsafe"
)

func TestStatsMerge(t *testing.T) {
	a, b := newCounters(), newCounters()
	a.established.Add(3)
	b.established.Add(4)
	a.failure("goaway:shutting_down")
	b.failure("goaway:shutting_down")
	b.failure("connect:ECONNREFUSED")
	for i := 1; i <= 100; i++ {
		a.record(a.connectH, time.Millisecond)
		b.record(b.connectH, 10*time.Millisecond)
	}
	sa, sb := a.snapshot(time.Second, 10, true), b.snapshot(2*time.Second, 20, true)
	sa.Merge(sb)
	if sa.Conns != 30 || sa.Established != 7 || sa.FailuresTotal != 3 || sa.ElapsedSec != 2 {
		t.Fatalf("merged %+v", sa)
	}
	if sa.Failures["goaway:shutting_down"] != 2 || sa.Failures["connect:ECONNREFUSED"] != 1 {
		t.Fatalf("failures %v", sa.Failures)
	}
	h, err := DecodeHist(sa.ConnectHist)
	if err != nil {
		t.Fatal(err)
	}
	if h.TotalCount() != 200 {
		t.Fatalf("merged histogram holds %d values", h.TotalCount())
	}
	if sa.ConnectP50Ms < 0.99 || sa.ConnectP50Ms > 1.01 || sa.ConnectP99Ms < 9.9 || sa.ConnectP99Ms > 10.1 {
		t.Fatalf("p50 %v p99 %v", sa.ConnectP50Ms, sa.ConnectP99Ms)
	}
	// Progress snapshots carry no histograms: percentiles merge as maxima.
	pa, pb := a.snapshot(time.Second, 1, false), b.snapshot(time.Second, 1, false)
	pa.Merge(pb)
	if pa.ConnectHist != "" || pa.ConnectP50Ms != pb.ConnectP50Ms {
		t.Fatalf("progress merge: %q %v", pa.ConnectHist, pa.ConnectP50Ms)
	}
}

func TestConfigValidate(t *testing.T) {
	spec := func(peer int, init bool) ConnSpec {
		return ConnSpec{Token: "t", Peer: peer, PeerUser: "u", Initiator: init}
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"pair", Config{Target: "127.0.0.1:1", RoundTrip: true, Conns: []ConnSpec{spec(1, true), spec(0, false)}}, true},
		{"no target", Config{}, false},
		{"asymmetric", Config{Target: "127.0.0.1:1", RoundTrip: true, Conns: []ConnSpec{spec(1, true), spec(1, false)}}, false},
		{"two initiators", Config{Target: "127.0.0.1:1", RoundTrip: true, Conns: []ConnSpec{spec(1, true), spec(0, true)}}, false},
		{"peer out of range", Config{Target: "127.0.0.1:1", RoundTrip: true, Conns: []ConnSpec{spec(5, true)}}, false},
		{"peers ignored without round trip", Config{Target: "127.0.0.1:1", Conns: []ConnSpec{spec(5, true)}}, true},
		{"family mismatch", Config{Target: "127.0.0.1:1", SourceIP: "::1"}, false},
		{"bad source", Config{Target: "127.0.0.1:1", SourceIP: "nope"}, false},
	} {
		tc.cfg.setDefaults()
		_, _, err := tc.cfg.validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", tc.name, err)
		}
	}
}

func TestWorkerMainBadConfig(t *testing.T) {
	if code := WorkerMain([]string{"-config", filepath.Join(t.TempDir(), "missing.json")}); code != 2 {
		t.Fatalf("exit code %d", code)
	}
}

// The per-connection struct stays small: it is the swarm's whole cost per
// idle connection besides its ConnSpec and a heap slot.
func TestConnSize(t *testing.T) {
	if s := unsafe.Sizeof(conn{}); s > 72 {
		t.Fatalf("conn is %d bytes, was 72", s)
	}
}

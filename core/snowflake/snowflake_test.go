package snowflake

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock for the generator.
type fakeClock struct{ ms atomic.Int64 }

func (c *fakeClock) now() time.Time  { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) set(t time.Time) { c.ms.Store(t.UnixMilli()) }

func TestLayout(t *testing.T) {
	var clk fakeClock
	at := Epoch.Add(123456789 * time.Millisecond)
	clk.set(at)
	g, err := New(1023, WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	id := g.Next()
	if id>>63 != 0 {
		t.Fatalf("top bit set: %#x", id)
	}
	if got := Node(id); got != 1023 {
		t.Fatalf("Node = %d, want 1023", got)
	}
	if got := Time(id); !got.Equal(at) {
		t.Fatalf("Time = %v, want %v", got, at)
	}
	if got := Seq(id); got != 0 {
		t.Fatalf("Seq = %d, want 0", got)
	}
	if want := uint64(123456789)<<22 | 1023<<12; id != want {
		t.Fatalf("id = %#x, want %#x", id, want)
	}
	if id2 := g.Next(); Seq(id2) != 1 || Node(id2) != 1023 || id2 != id+1 {
		t.Fatalf("second id %#x: seq %d node %d", id2, Seq(id2), Node(id2))
	}
}

func TestNodeRange(t *testing.T) {
	if _, err := New(1024); !errors.Is(err, ErrNode) {
		t.Fatalf("New(1024) err = %v, want ErrNode", err)
	}
	for _, n := range []uint16{0, 1, 512, 1023} {
		g, err := New(n)
		if err != nil {
			t.Fatal(err)
		}
		if got := Node(g.Next()); got != n {
			t.Fatalf("Node = %d, want %d", got, n)
		}
	}
}

func TestClockBackwards(t *testing.T) {
	var clk fakeClock
	t0 := Epoch.Add(1000 * time.Hour)
	clk.set(t0)
	g, _ := New(7, WithClock(clk.now))
	a := g.Next()
	clk.set(t0.Add(-time.Hour)) // NTP step back
	prev := a
	for i := 0; i < 10000; i++ {
		id := g.Next()
		if id <= prev {
			t.Fatalf("id %d: %#x <= previous %#x", i, id, prev)
		}
		if Node(id) != 7 {
			t.Fatalf("node bits clobbered: %d", Node(id))
		}
		prev = id
	}
	// 10001 ids from t0's millisecond on: 4096 per ms, so the ids borrowed
	// two milliseconds ahead of t0 while the clock read an hour earlier.
	if got, want := Time(prev), t0.Add(2*time.Millisecond); !got.Equal(want) {
		t.Fatalf("Time(last) = %v, want %v", got, want)
	}
	// Once the clock passes the borrowed milliseconds, ids follow it again.
	later := t0.Add(time.Second)
	clk.set(later)
	id := g.Next()
	if id <= prev || !Time(id).Equal(later) || Seq(id) != 0 {
		t.Fatalf("after clock recovered: id %#x time %v seq %d", id, Time(id), Seq(id))
	}
}

func TestSequenceOverflow(t *testing.T) {
	var clk fakeClock
	t0 := Epoch.Add(time.Minute)
	clk.set(t0)
	g, _ := New(3, WithClock(clk.now))
	var prev uint64
	for i := 0; i < 3*4096; i++ {
		id := g.Next()
		if id <= prev {
			t.Fatalf("id %d not increasing", i)
		}
		wantMS := time.Duration(i/4096) * time.Millisecond
		if !Time(id).Equal(t0.Add(wantMS)) || Seq(id) != uint16(i%4096) || Node(id) != 3 {
			t.Fatalf("id %d: time %v seq %d node %d", i, Time(id), Seq(id), Node(id))
		}
		prev = id
	}
}

func TestFloor(t *testing.T) {
	var clk fakeClock
	t0 := Epoch.Add(time.Hour)
	clk.set(t0)
	ahead := uint64(t0.Add(time.Minute).UnixMilli()-Epoch.UnixMilli()) << 22
	for _, tc := range []struct {
		name  string
		node  uint16
		floor uint64
	}{
		{"same node", 5, ahead | 5<<12 | 17},
		{"lower node", 5, ahead | 9<<12 | 17},
		{"higher node", 5, ahead | 1<<12 | 17},
		{"end of ms", 5, ahead | 5<<12 | MaxSeq},
		{"below clock", 5, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := New(tc.node, WithFloor(tc.floor), WithClock(clk.now))
			if err != nil {
				t.Fatal(err)
			}
			prev := tc.floor
			for i := 0; i < 5000; i++ {
				id := g.Next()
				if id <= prev || Node(id) != tc.node {
					t.Fatalf("id %d = %#x, previous %#x, node %d", i, id, prev, Node(id))
				}
				prev = id
			}
		})
	}
	if _, err := New(1, WithFloor(1<<63)); err == nil {
		t.Fatal("floor with top bit accepted")
	}
}

func TestConcurrentMonotonic(t *testing.T) {
	g, err := New(42)
	if err != nil {
		t.Fatal(err)
	}
	const workers, per = 8, 20000
	out := make([][]uint64, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids := make([]uint64, per)
			for i := range ids {
				ids[i] = g.Next()
			}
			out[w] = ids
		}()
	}
	wg.Wait()
	seen := make(map[uint64]struct{}, workers*per)
	for w, ids := range out {
		for i, id := range ids {
			if i > 0 && id <= ids[i-1] {
				t.Fatalf("worker %d: id %d not increasing", w, i)
			}
			if _, dup := seen[id]; dup {
				t.Fatalf("duplicate id %#x", id)
			}
			seen[id] = struct{}{}
		}
	}
	// Ids are close to now: the generator borrows at most what 160000 ids
	// need (40 ms) ahead of the clock.
	if d := time.Until(Time(g.Next())); d > time.Second {
		t.Fatalf("ids ran %v ahead of the clock", d)
	}
}

func TestOverflowPanics(t *testing.T) {
	g, _ := New(0, WithFloor(uint64(maxMS)<<22|MaxSeq))
	defer func() {
		if recover() == nil {
			t.Fatal("no panic at the end of the timestamp field")
		}
	}()
	g.Next()
}

func TestNextZeroAllocs(t *testing.T) {
	g, _ := New(1)
	if n := testing.AllocsPerRun(1000, func() { g.Next() }); n != 0 {
		t.Fatalf("Next allocates %v times per call", n)
	}
}

func BenchmarkNext(b *testing.B) {
	g, _ := New(1)
	b.ReportAllocs()
	for b.Loop() {
		g.Next()
	}
}

func BenchmarkNextParallel(b *testing.B) {
	g, _ := New(1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.Next()
		}
	})
}

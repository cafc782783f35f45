package consume

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatd-dev/chatd/core/bus"
)

// These tests run Run against kfake (bus.StartEmbedded), the same broker
// the embedded default uses.

func setup(t *testing.T) (bus.Config, *kgo.Client) {
	t.Helper()
	e, err := bus.StartEmbedded(bus.EmbeddedOptions{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	bc := e.Config()
	prod, err := kgo.NewClient(bc.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	return bc, prod
}

func produce(t *testing.T, prod *kgo.Client, n, from int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		r := &kgo.Record{Topic: bus.TopicInbound, Key: []byte(fmt.Sprint(i % 7)), Value: []byte(fmt.Sprint(i))}
		if err := prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// consumeAll runs a consumer in group until it has seen want records, then
// stops it, and returns what it saw.
func consumeAll(t *testing.T, bc bus.Config, group string, want int, h Handler) map[string]int {
	t.Helper()
	return consumeWith(t, bc, group, want, time.Hour, NewOffsets(), h)
}

// consumeWith is consumeAll with the given commit interval and offsets
// tracker.
func consumeWith(t *testing.T, bc bus.Config, group string, want int, every time.Duration, offs *Offsets, h Handler) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(append(bc.ConsumerOpts(group, bus.TopicInbound),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) { CommitOnRevoke(ctx, cl, offs, m) }))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.CloseAllowingRebalance()
	var mu sync.Mutex
	seen := map[string]int{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cl, Config{CommitInterval: every, Offsets: offs}, func(ctx context.Context, recs []*kgo.Record) error {
			if h != nil {
				if err := h(ctx, recs); err != nil {
					return err
				}
			}
			mu.Lock()
			for _, r := range recs {
				seen[string(r.Value)]++
			}
			mu.Unlock()
			return nil
		})
	}()
	deadline := time.After(30 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= want {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("saw %d of %d records", n, want)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	return seen
}

// TestStopCommitsMarkedOffsets: with a commit interval far away, stopping
// Run still commits what was handled, so the next consumer of the group
// starts after it: nothing handled twice, nothing skipped.
func TestStopCommitsMarkedOffsets(t *testing.T) {
	bc, prod := setup(t)
	produce(t, prod, 100, 0)
	first := consumeAll(t, bc, "g", 100, nil)
	produce(t, prod, 50, 100)
	second := consumeAll(t, bc, "g", 50, nil)
	if len(first) != 100 || len(second) != 50 {
		t.Fatalf("first %d, second %d", len(first), len(second))
	}
	for v := range second {
		if first[v] > 0 {
			t.Fatalf("record %s handled by both consumers", v)
		}
	}
}

// TestHandlerErrorRetriesSameBatch: a failing handler sees the same
// records again; nothing is skipped or committed past them.
func TestHandlerErrorRetriesSameBatch(t *testing.T) {
	bc, prod := setup(t)
	produce(t, prod, 20, 0)
	fails := 3
	var mu sync.Mutex
	attempts := map[string]int{}
	seen := consumeAll(t, bc, "g", 20, func(_ context.Context, recs []*kgo.Record) error {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			attempts[string(r.Value)]++
		}
		if fails > 0 {
			fails--
			return errors.New("store down")
		}
		return nil
	})
	for i := 0; i < 20; i++ {
		if seen[fmt.Sprint(i)] != 1 {
			t.Fatalf("record %d handled %d times after success", i, seen[fmt.Sprint(i)])
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts["0"] < 2 {
		t.Fatalf("the failed batch was not retried: %v", attempts)
	}
}

// holder is a Deferrer that holds the effects of the records whose value
// is in hold until a Flush that may succeed; failing Flushes keep them.
type holder struct {
	mu     sync.Mutex
	hold   map[string]bool
	floors map[TopicPartition]kgo.EpochOffset
	fail   bool
}

func (h *holder) handle(_ context.Context, recs []*kgo.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range recs {
		k := TopicPartition{r.Topic, r.Partition}
		if _, ok := h.floors[k]; !ok && h.hold[string(r.Value)] {
			h.floors[k] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
		}
	}
	return nil
}

func (h *holder) Floors(f map[TopicPartition]kgo.EpochOffset) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, v := range h.floors {
		f[k] = v
	}
}

func (h *holder) Flush(context.Context, bool) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail {
		return len(h.floors) > 0, errors.New("store down")
	}
	clear(h.floors)
	return false, nil
}

// TestDeferredEffectsHoldTheCommit: a record whose effects the handler
// still holds (a failing write-behind, then a stop: as good as a crash)
// is not committed, nor is anything after it in its partition, so the
// group's next consumer handles them again; the rest of the partition
// before it, and the other partition, are committed.
func TestDeferredEffectsHoldTheCommit(t *testing.T) {
	bc, prod := setup(t)
	produce(t, prod, 40, 0)
	h := &holder{hold: map[string]bool{"20": true}, floors: map[TopicPartition]kgo.EpochOffset{}, fail: true}
	var mu sync.Mutex
	order := map[TopicPartition][]string{}
	first := consumeWith(t, bc, "g", 40, 10*time.Millisecond, NewDeferredOffsets(h), func(ctx context.Context, recs []*kgo.Record) error {
		mu.Lock()
		for _, r := range recs {
			k := TopicPartition{r.Topic, r.Partition}
			order[k] = append(order[k], string(r.Value))
		}
		mu.Unlock()
		return h.handle(ctx, recs)
	})
	if len(first) != 40 {
		t.Fatalf("first consumer saw %d records", len(first))
	}
	// What must come back: "20" and every later record of its partition.
	var want []string
	for _, vs := range order {
		for i, v := range vs {
			if v == "20" {
				want = vs[i:]
			}
		}
	}
	h2 := &holder{floors: map[TopicPartition]kgo.EpochOffset{}}
	second := consumeWith(t, bc, "g", len(want), time.Hour, NewDeferredOffsets(h2), h2.handle)
	if len(second) != len(want) {
		t.Fatalf("re-delivered %v, want %v", second, want)
	}
	for _, v := range want {
		if second[v] != 1 {
			t.Fatalf("held record %s not re-delivered: got %v", v, second)
		}
	}
}

// TestFlushedEffectsReleaseTheCommit: once the write-behind flushes, the
// commit moves past the records it held: nothing comes back.
func TestFlushedEffectsReleaseTheCommit(t *testing.T) {
	bc, prod := setup(t)
	produce(t, prod, 40, 0)
	h := &holder{hold: map[string]bool{"20": true}, floors: map[TopicPartition]kgo.EpochOffset{}}
	if first := consumeWith(t, bc, "g", 40, 10*time.Millisecond, NewDeferredOffsets(h), h.handle); len(first) != 40 {
		t.Fatalf("first consumer saw %d records", len(first))
	}
	produce(t, prod, 1, 40)
	if second := consumeAll(t, bc, "g", 1, nil); len(second) != 1 || second["40"] != 1 {
		t.Fatalf("second consumer saw %v, want only the new record", second)
	}
}

// TestCommitAfterTheGroupMovedOn: a member holds a batch (and so the
// rebalance) past its rebalance timeout, so the broker drops it from the
// group and gives its partitions to the other member. Its commit is then
// refused (the group moved to a new generation). Run must not retry that
// commit in place, which can never succeed before the member rejoins; it
// polls and allows the rebalance, rejoins, and goes on consuming. Every
// record is handled by one member or the other (at least once).
func TestCommitAfterTheGroupMovedOn(t *testing.T) {
	bc, prod := setup(t)
	produce(t, prod, 100, 0)

	type member struct {
		mu   sync.Mutex
		seen map[string]int
	}
	var stale, other member
	stale.seen, other.seen = map[string]int{}, map[string]int{}
	blocked, release := make(chan struct{}), make(chan struct{})
	otherOwnsAll := make(chan struct{})
	var ownsAllOnce sync.Once
	start := func(m *member, extra []kgo.Opt, h func()) {
		offs := NewOffsets()
		owned := map[int32]bool{}
		var omu sync.Mutex
		opts := append(bc.ConsumerOpts("moved", bus.TopicInbound),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
				omu.Lock()
				defer omu.Unlock()
				for _, p := range a[bus.TopicInbound] {
					owned[p] = true
				}
				if m == &other && len(owned) == 2 {
					ownsAllOnce.Do(func() { close(otherOwnsAll) })
				}
			}),
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, r map[string][]int32) {
				CommitOnRevoke(ctx, cl, offs, r)
				omu.Lock()
				defer omu.Unlock()
				for _, p := range r[bus.TopicInbound] {
					delete(owned, p)
				}
			}),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, l map[string][]int32) {
				offs.Forget(l)
				omu.Lock()
				defer omu.Unlock()
				for _, p := range l[bus.TopicInbound] {
					delete(owned, p)
				}
			}))
		cl, err := kgo.NewClient(append(opts, extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = Run(ctx, cl, Config{CommitInterval: time.Millisecond, Offsets: offs, RetryMax: 100 * time.Millisecond},
				func(_ context.Context, recs []*kgo.Record) error {
					if h != nil {
						h()
					}
					m.mu.Lock()
					defer m.mu.Unlock()
					for _, r := range recs {
						m.seen[string(r.Value)]++
					}
					return nil
				})
		}()
		t.Cleanup(func() {
			cancel()
			<-done
			cl.CloseAllowingRebalance()
		})
	}
	first := true
	start(&stale, []kgo.Opt{kgo.RebalanceTimeout(time.Second)}, func() {
		if first {
			first = false
			close(blocked)
			<-release
		}
	})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	<-blocked
	// The stale member holds its first batch; the other joins, and the
	// rebalance waits for the stale member until the rebalance timeout
	// (the longest of the members') drops it.
	start(&other, []kgo.Opt{kgo.RebalanceTimeout(time.Second)}, nil)
	select {
	case <-otherOwnsAll:
	case <-time.After(30 * time.Second):
		t.Fatal("the other member never got both partitions")
	}
	close(release)
	released = true

	// Records from 100 on are produced after the stale member was dropped,
	// so it handles one only after it rejoined and was given a partition
	// back (cooperative-sticky). Keep producing until it has, so the other
	// member cannot have consumed everything before the rejoin completed.
	produced := 100
	deadline := time.Now().Add(30 * time.Second)
	for {
		stale.mu.Lock()
		other.mu.Lock()
		seen := len(stale.seen)
		for v := range other.seen {
			if stale.seen[v] == 0 {
				seen++
			}
		}
		rejoined := false
		for v := range stale.seen {
			if n, _ := strconv.Atoi(v); n >= 100 {
				rejoined = true
				break
			}
		}
		other.mu.Unlock()
		stale.mu.Unlock()
		if seen == produced && rejoined {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d records handled; stale member rejoined and handled a new one: %v", seen, produced, rejoined)
		}
		if !rejoined {
			produce(t, prod, 10, produced)
			produced += 10
		}
		time.Sleep(10 * time.Millisecond)
	}
}

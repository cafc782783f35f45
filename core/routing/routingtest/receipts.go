package routingtest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/chatd-dev/chatd/core/routing"
)

// RunReceipts runs the routing.ReceiptCounter contract. newCounter returns a
// fresh, empty counter for one subtest; it registers its own cleanup with t.
//
// Expected counts come from receiptModel, a direct transcription of the
// contract (per member: pointer = max of the seqs advanced; a read advance
// also advances delivered; a message's count is the members other than the
// sender whose pointer reaches it), so the tests check any mix of advances
// against it rather than hand-computed numbers.
func RunReceipts(t *testing.T, newCounter func(t *testing.T) routing.ReceiptCounter) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, routing.ReceiptCounter)
	}{
		{"ZeroInitially", testReceiptZero},
		{"AdvanceMovesCounts", testReceiptAdvance},
		{"ReadImpliesDelivered", testReceiptReadImpliesDelivered},
		{"NeverBackwards", testReceiptNeverBackwards},
		{"Idempotent", testReceiptIdempotent},
		{"SenderExcluded", testReceiptSenderExcluded},
		{"ConversationsIsolated", testReceiptIsolated},
		{"LargeBatch", testReceiptLargeBatch},
		{"Readers", testReceiptReaders},
		{"NoOps", testReceiptNoOps},
		{"InvalidAdvance", testReceiptInvalid},
		{"MaxSeq", testReceiptMaxSeq},
		{"Concurrent", testReceiptConcurrent},
		{"Pointers", testReceiptPointers},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newCounter(t)) })
	}
}

// ---- helpers ----

func deliv(conv uint64, user string, seq uint64) routing.ReceiptAdvance {
	return routing.ReceiptAdvance{Conv: conv, User: user, Kind: routing.ReceiptDelivered, Seq: seq}
}

func rd(conv uint64, user string, seq uint64) routing.ReceiptAdvance {
	return routing.ReceiptAdvance{Conv: conv, User: user, Kind: routing.ReceiptRead, Seq: seq}
}

func advance(t *testing.T, c routing.ReceiptCounter, adv ...routing.ReceiptAdvance) {
	t.Helper()
	if err := c.AdvanceReceipts(ctx(t), adv); err != nil {
		t.Fatalf("AdvanceReceipts(%d advances): %v", len(adv), err)
	}
}

func counts(t *testing.T, c routing.ReceiptCounter, conv uint64, sender string, seqs ...uint64) []routing.ReceiptCount {
	t.Helper()
	got, err := c.ReceiptCounts(ctx(t), conv, sender, seqs, nil)
	if err != nil {
		t.Fatalf("ReceiptCounts(conv %d, sender %q, %v): %v", conv, sender, seqs, err)
	}
	if len(got) != len(seqs) {
		t.Fatalf("ReceiptCounts(conv %d, sender %q, %v) returned %d counts", conv, sender, seqs, len(got))
	}
	for i, rc := range got {
		if rc.Read > rc.Delivered || rc.Read < 0 {
			t.Errorf("ReceiptCounts(conv %d, sender %q) seq %d: %+v: want 0 <= Read <= Delivered", conv, sender, seqs[i], rc)
		}
	}
	return got
}

// wantCounts checks the counts of seqs; want holds (delivered, read) pairs.
func wantCounts(t *testing.T, c routing.ReceiptCounter, conv uint64, sender string, seqs []uint64, want ...int) {
	t.Helper()
	got := counts(t, c, conv, sender, seqs...)
	for i, s := range seqs {
		if w := (routing.ReceiptCount{Delivered: want[2*i], Read: want[2*i+1]}); got[i] != w {
			t.Errorf("conv %d sender %q seq %d: got %+v, want %+v", conv, sender, s, got[i], w)
		}
	}
}

func readers(t *testing.T, c routing.ReceiptCounter, conv uint64, sender string, seq uint64, limit int) []string {
	t.Helper()
	got, err := c.ReceiptReaders(ctx(t), conv, sender, seq, limit, nil)
	if err != nil {
		t.Fatalf("ReceiptReaders(conv %d, sender %q, seq %d, limit %d): %v", conv, sender, seq, limit, err)
	}
	return got
}

func wantReaders(t *testing.T, c routing.ReceiptCounter, conv uint64, sender string, seq uint64, limit int, want ...string) {
	t.Helper()
	if got := readers(t, c, conv, sender, seq, limit); !slices.Equal(got, want) {
		t.Errorf("ReceiptReaders(conv %d, sender %q, seq %d, limit %d) = %q, want %q", conv, sender, seq, limit, got, want)
	}
}

// receiptModel is the contract as a map: conv -> member -> {delivered, read}.
type receiptModel map[uint64]map[string][2]uint64

func (m receiptModel) apply(adv ...routing.ReceiptAdvance) {
	for _, a := range adv {
		if a.Seq == 0 {
			continue
		}
		members := m[a.Conv]
		if members == nil {
			members = make(map[string][2]uint64)
			m[a.Conv] = members
		}
		p := members[a.User]
		p[0] = max(p[0], a.Seq)
		if a.Kind == routing.ReceiptRead {
			p[1] = max(p[1], a.Seq)
		}
		members[a.User] = p
	}
}

func (m receiptModel) count(conv uint64, sender string, seq uint64) routing.ReceiptCount {
	var rc routing.ReceiptCount
	if seq == 0 {
		return rc
	}
	for u, p := range m[conv] {
		if u == sender {
			continue
		}
		if p[0] >= seq {
			rc.Delivered++
		}
		if p[1] >= seq {
			rc.Read++
		}
	}
	return rc
}

func (m receiptModel) readers(conv uint64, sender string, seq uint64, limit int) []string {
	var rs []string
	for u, p := range m[conv] {
		if seq > 0 && u != sender && p[1] >= seq {
			rs = append(rs, u)
		}
	}
	slices.Sort(rs)
	return rs[:min(limit, len(rs))]
}

// check compares c with m for conv: the counts of seqs 0..maxSeq+1 for a
// sender who is a member and one who is not, and the readers of a few seqs.
func (m receiptModel) check(t *testing.T, c routing.ReceiptCounter, conv uint64, maxSeq uint64) {
	t.Helper()
	seqs := make([]uint64, 0, maxSeq+2)
	for s := range maxSeq + 2 {
		seqs = append(seqs, s)
	}
	senders := []string{"nobody"}
	for u := range m[conv] {
		senders = append(senders, u) // the first member in map order
		break
	}
	for _, sender := range senders {
		got := counts(t, c, conv, sender, seqs...)
		for i, s := range seqs {
			if want := m.count(conv, sender, s); got[i] != want {
				t.Fatalf("conv %d sender %q seq %d: got %+v, want %+v", conv, sender, s, got[i], want)
			}
		}
		for _, s := range []uint64{1, maxSeq / 2, maxSeq} {
			want := m.readers(conv, sender, s, 1<<30)
			if got := readers(t, c, conv, sender, s, 1<<30); !slices.Equal(got, want) {
				t.Fatalf("readers conv %d sender %q seq %d: got %q, want %q", conv, sender, s, got, want)
			}
		}
	}
}

// randomAdvances returns n advances over convs conversations of members
// users each, seqs 1..maxSeq, a third of them reads, with repeats.
func randomAdvances(rng *rand.Rand, n, convs, members int, maxSeq uint64) []routing.ReceiptAdvance {
	adv := make([]routing.ReceiptAdvance, n)
	for i := range adv {
		kind := routing.ReceiptDelivered
		if rng.IntN(3) == 0 {
			kind = routing.ReceiptRead
		}
		adv[i] = routing.ReceiptAdvance{
			Conv: uint64(1 + rng.IntN(convs)),
			User: fmt.Sprintf("user-%03d", rng.IntN(members)),
			Kind: kind,
			Seq:  1 + rng.Uint64N(maxSeq),
		}
	}
	return adv
}

// ---- tests ----

func testReceiptZero(t *testing.T, c routing.ReceiptCounter) {
	wantCounts(t, c, 1, "alice", []uint64{1, 2, 3}, 0, 0, 0, 0, 0, 0)
	wantReaders(t, c, 1, "alice", 1, 10)
}

func testReceiptAdvance(t *testing.T, c routing.ReceiptCounter) {
	advance(t, c, deliv(1, "alice", 5), rd(1, "bob", 3))
	seqs := []uint64{1, 3, 4, 5, 6}
	wantCounts(t, c, 1, "sam", seqs,
		2, 1, // 1: alice delivered, bob read
		2, 1, // 3
		1, 0, // 4: only alice got it
		1, 0, // 5
		0, 0) // 6: not yet
	advance(t, c, rd(1, "carol", 6))
	wantCounts(t, c, 1, "sam", seqs, 3, 2, 3, 2, 2, 1, 2, 1, 1, 1)
	advance(t, c, rd(1, "alice", 5))
	wantCounts(t, c, 1, "sam", seqs, 3, 3, 3, 3, 2, 2, 2, 2, 1, 1)
}

func testReceiptReadImpliesDelivered(t *testing.T, c routing.ReceiptCounter) {
	advance(t, c, rd(1, "alice", 4))
	wantCounts(t, c, 1, "sam", []uint64{4, 5}, 1, 1, 0, 0)
	// A delivered advance below the read pointer changes nothing; above,
	// it moves delivered only.
	advance(t, c, deliv(1, "alice", 2))
	wantCounts(t, c, 1, "sam", []uint64{2, 4, 5}, 1, 1, 1, 1, 0, 0)
	advance(t, c, deliv(1, "alice", 9))
	wantCounts(t, c, 1, "sam", []uint64{4, 5, 9, 10}, 1, 1, 1, 0, 1, 0, 0, 0)
	// A read past the delivered pointer moves both.
	advance(t, c, rd(1, "alice", 12))
	wantCounts(t, c, 1, "sam", []uint64{9, 12, 13}, 1, 1, 1, 1, 0, 0)
}

func testReceiptNeverBackwards(t *testing.T, c routing.ReceiptCounter) {
	advance(t, c, rd(1, "alice", 10))
	advance(t, c, rd(1, "alice", 4), deliv(1, "alice", 3))
	wantCounts(t, c, 1, "sam", []uint64{4, 10, 11}, 1, 1, 1, 1, 0, 0)
	// Within one batch, whatever the order.
	advance(t, c, rd(1, "bob", 7), rd(1, "bob", 2), deliv(1, "bob", 1), deliv(1, "bob", 8), deliv(1, "bob", 5))
	wantCounts(t, c, 1, "sam", []uint64{7, 8, 9}, 2, 2, 2, 1, 1, 1)
	wantReaders(t, c, 1, "sam", 7, 10, "alice", "bob")
}

// testReceiptIdempotent: a batch applied again, reordered or split (Kafka
// redelivering a consumer batch) leaves what one application left.
func testReceiptIdempotent(t *testing.T, c routing.ReceiptCounter) {
	rng := rand.New(rand.NewPCG(1, 2))
	adv := randomAdvances(rng, 400, 3, 30, 40)
	m := receiptModel{}
	m.apply(adv...)
	advance(t, c, adv...)
	for conv := uint64(1); conv <= 3; conv++ {
		m.check(t, c, conv, 40)
	}
	advance(t, c, adv...)
	shuffled := slices.Clone(adv)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	advance(t, c, shuffled[:200]...)
	advance(t, c, shuffled[200:]...)
	for conv := uint64(1); conv <= 3; conv++ {
		m.check(t, c, conv, 40)
	}
}

func testReceiptSenderExcluded(t *testing.T, c routing.ReceiptCounter) {
	advance(t, c, rd(1, "alice", 5), rd(1, "bob", 5), rd(1, "carol", 5))
	wantCounts(t, c, 1, "alice", []uint64{5}, 2, 2)
	wantCounts(t, c, 1, "nobody", []uint64{5}, 3, 3)
	wantReaders(t, c, 1, "alice", 5, 10, "bob", "carol")
	// The sender is subtracted only where they count.
	advance(t, c, rd(2, "alice", 3), rd(2, "bob", 5), deliv(2, "alice", 8))
	wantCounts(t, c, 2, "alice", []uint64{3, 5, 8}, 1, 1, 1, 1, 0, 0)
	wantCounts(t, c, 2, "bob", []uint64{3, 5, 8}, 1, 1, 1, 0, 1, 0)
	// A conversation whose only member is the sender counts nobody.
	advance(t, c, rd(3, "alice", 9))
	wantCounts(t, c, 3, "alice", []uint64{1, 9}, 0, 0, 0, 0)
	wantReaders(t, c, 3, "alice", 1, 10)
}

func testReceiptIsolated(t *testing.T, c routing.ReceiptCounter) {
	// Conversation ids that share digits (1, 10, 100, ...) and one member
	// name in all of them.
	m := receiptModel{}
	var adv []routing.ReceiptAdvance
	for i, conv := range []uint64{1, 10, 100, 11, 101, 1 << 40, 1<<64 - 1} {
		for u := range i + 1 {
			a := rd(conv, fmt.Sprintf("m%d", u), uint64(2*i+u+1))
			if u%2 == 1 {
				a.Kind = routing.ReceiptDelivered
			}
			adv = append(adv, a)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	adv = append(adv, randomAdvances(rng, 300, 50, 10, 20)...)
	m.apply(adv...)
	advance(t, c, adv...)
	for conv := range m {
		m.check(t, c, conv, 20)
	}
	wantCounts(t, c, 999, "nobody", []uint64{1}, 0, 0)
}

// testReceiptLargeBatch: one call of 2,500 advances, more than an
// implementation may write at once (Redis: 1,000 per round trip): in one
// conversation, then each in a conversation of its own.
func testReceiptLargeBatch(t *testing.T, c routing.ReceiptCounter) {
	m := receiptModel{}
	one := make([]routing.ReceiptAdvance, 2500)
	for i := range one {
		one[i] = deliv(1, fmt.Sprintf("u%04d", i), uint64(1+i%10))
		if i%2 == 0 {
			one[i].Kind = routing.ReceiptRead
		}
	}
	m.apply(one...)
	advance(t, c, one...)
	m.check(t, c, 1, 10)
	wantCounts(t, c, 1, "nobody", []uint64{1, 10}, 2500, 1250, 250, 0)

	many := make([]routing.ReceiptAdvance, 2500)
	for i := range many {
		many[i] = rd(uint64(1000+i), "alice", uint64(1+i%10))
	}
	m.apply(many...)
	advance(t, c, many...)
	for i := 0; i < len(many); i += 97 {
		m.check(t, c, many[i].Conv, 10)
	}
	m.check(t, c, many[len(many)-1].Conv, 10)
}

func testReceiptReaders(t *testing.T, c routing.ReceiptCounter) {
	// Pointers decrease as names increase: the list is by name, not by
	// pointer.
	advance(t, c,
		rd(1, "zed", 100), rd(1, "amy", 6), rd(1, "kim", 50), rd(1, "bea", 5),
		rd(1, "lou", 4), deliv(1, "dan", 100), rd(1, "sam", 9), deliv(1, "eve", 7), rd(1, "eve", 2))
	wantReaders(t, c, 1, "sam", 5, 100, "amy", "bea", "kim", "zed")
	wantReaders(t, c, 1, "nobody", 5, 100, "amy", "bea", "kim", "sam", "zed")
	wantReaders(t, c, 1, "sam", 5, 3, "amy", "bea", "kim")
	wantReaders(t, c, 1, "amy", 5, 1, "bea")
	wantReaders(t, c, 1, "sam", 7, 100, "kim", "zed")
	wantReaders(t, c, 1, "sam", 101, 100)
	wantReaders(t, c, 2, "sam", 1, 100)
	// Appends to dst.
	got, err := c.ReceiptReaders(ctx(t), 1, "sam", 50, 10, []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"x", "kim", "zed"}; !slices.Equal(got, want) {
		t.Errorf("ReceiptReaders with dst: %q, want %q", got, want)
	}
}

func testReceiptNoOps(t *testing.T, c routing.ReceiptCounter) {
	if err := c.AdvanceReceipts(ctx(t), nil); err != nil {
		t.Fatalf("AdvanceReceipts(nil): %v", err)
	}
	advance(t, c)
	advance(t, c, rd(1, "alice", 0), deliv(1, "bob", 0))
	wantCounts(t, c, 1, "sam", []uint64{1}, 0, 0)
	wantReaders(t, c, 1, "sam", 1, 10)

	advance(t, c, rd(1, "alice", 3), deliv(1, "bob", 0))
	prefix := []routing.ReceiptCount{{Delivered: 7, Read: 7}}
	got, err := c.ReceiptCounts(ctx(t), 1, "sam", nil, prefix)
	if err != nil || !slices.Equal(got, prefix) {
		t.Errorf("ReceiptCounts(no seqs) = %v, %v; want %v, nil", got, err, prefix)
	}
	// Seq 0 counts nothing (not every member); dst is appended to.
	got, err = c.ReceiptCounts(ctx(t), 1, "sam", []uint64{0, 3, 0}, prefix)
	if want := []routing.ReceiptCount{{Delivered: 7, Read: 7}, {}, {Delivered: 1, Read: 1}, {}}; err != nil || !slices.Equal(got, want) {
		t.Errorf("ReceiptCounts(0, 3, 0) = %v, %v; want %v, nil", got, err, want)
	}
	wantReaders(t, c, 1, "sam", 0, 10)
	wantReaders(t, c, 1, "sam", 3, 0)
	wantReaders(t, c, 1, "sam", 3, -1)
	wantReaders(t, c, 1, "sam", 3, 1, "alice")
}

// testReceiptInvalid: a batch with an advance of an unknown kind or an
// unrepresentable seq fails as a whole, before anything is written.
func testReceiptInvalid(t *testing.T, c routing.ReceiptCounter) {
	for _, bad := range []routing.ReceiptAdvance{
		{Conv: 1, User: "bob", Kind: 0, Seq: 5},
		{Conv: 1, User: "bob", Kind: 3, Seq: 5},
		{Conv: 1, User: "bob", Kind: routing.ReceiptRead, Seq: routing.MaxReceiptSeq + 1},
		{Conv: 1, User: "bob", Kind: routing.ReceiptDelivered, Seq: 1<<64 - 1},
	} {
		if err := c.AdvanceReceipts(ctx(t), []routing.ReceiptAdvance{rd(1, "alice", 5), bad}); err == nil {
			t.Errorf("AdvanceReceipts with %+v: no error", bad)
		}
	}
	wantCounts(t, c, 1, "sam", []uint64{1, 5}, 0, 0, 0, 0)
}

// testReceiptMaxSeq: seqs up to MaxReceiptSeq are kept exactly (Redis
// stores them as float64 scores).
func testReceiptMaxSeq(t *testing.T, c routing.ReceiptCounter) {
	const top = routing.MaxReceiptSeq
	advance(t, c, rd(1, "a", top-2), rd(1, "b", top-1), rd(1, "c", top), deliv(1, "d", top))
	wantCounts(t, c, 1, "sam", []uint64{top - 2, top - 1, top, top + 1, 1<<64 - 1},
		4, 3, 3, 2, 2, 1, 0, 0, 0, 0)
	wantReaders(t, c, 1, "sam", top, 10, "c")
	wantReaders(t, c, 1, "sam", top-1, 10, "b", "c")
	wantReaders(t, c, 1, "sam", top+1, 10)
}

// testReceiptConcurrent: advances racing on the same members (the same
// receipt redelivered to two consumers, devices of one member) end at the
// highest seq of each member, and counts read meanwhile stay consistent.
func testReceiptConcurrent(t *testing.T, c routing.ReceiptCounter) {
	const workers, rounds, members = 8, 20, 16
	m := receiptModel{}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		bad = make(chan error, workers)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 5))
			for range rounds {
				adv := randomAdvances(rng, 50, 2, members, 100)
				if err := c.AdvanceReceipts(ctx(t), adv); err != nil {
					bad <- err
					return
				}
				mu.Lock()
				m.apply(adv...)
				mu.Unlock()
				got, err := c.ReceiptCounts(ctx(t), 1, "user-000", []uint64{1, 50, 100}, nil)
				if err != nil {
					bad <- err
					return
				}
				for _, rc := range got {
					if rc.Read > rc.Delivered || rc.Delivered > members-1 || rc.Read < 0 {
						bad <- fmt.Errorf("counts %+v: want 0 <= Read <= Delivered <= %d", got, members-1)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(bad)
	for err := range bad {
		t.Fatal(err)
	}
	m.check(t, c, 1, 100)
	m.check(t, c, 2, 100)
}

// testReceiptPointers: a member's pointers come back per conversation in
// the order asked, 0 where none; read implies delivered; appended to dst.
func testReceiptPointers(t *testing.T, c routing.ReceiptCounter) {
	advance(t, c, deliv(1, "bob", 5), rd(1, "bob", 3), rd(2, "bob", 7), rd(1, "carol", 9))
	got, err := c.ReceiptPointers(ctx(t), "bob", routing.ReceiptRead, []uint64{2, 3, 1}, []uint64{42})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[42 7 0 3]" {
		t.Fatalf("read pointers %v, want [42 7 0 3]", got)
	}
	got, err = c.ReceiptPointers(ctx(t), "bob", routing.ReceiptDelivered, []uint64{1, 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[5 7]" {
		t.Fatalf("delivered pointers %v, want [5 7]", got)
	}
	if got, err := c.ReceiptPointers(ctx(t), "bob", routing.ReceiptRead, nil, nil); err != nil || len(got) != 0 {
		t.Fatalf("no conversations: %v, %v", got, err)
	}
	if _, err := c.ReceiptPointers(ctx(t), "bob", routing.ReceiptKind(7), []uint64{1}, nil); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

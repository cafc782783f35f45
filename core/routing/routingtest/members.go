package routingtest

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chatd-dev/chatd/core/routing"
)

// RunMembers runs the MemberCache contract. newCache returns a fresh, empty
// cache for one subtest; it registers its own cleanup with t.
func RunMembers(t *testing.T, newCache func(t *testing.T) routing.MemberCache) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, routing.MemberCache)
	}{
		{"MissFillHit", testMembersMissFillHit},
		{"FillDoesNotOverwrite", testMembersFillKeeps},
		{"SetOverwrites", testMembersSetOverwrites},
		{"DeleteMakesMiss", testMembersDelete},
		{"SortedDeduped", testMembersSorted},
		{"CallerSliceNotShared", testMembersCallerSlice},
		{"EmptyIsNotMiss", testMembersEmpty},
		{"ManyConversations", testMembersMany},
		{"InvalidRejected", testMembersInvalid},
		{"ReadYourWrites", testMembersReadYourWrites},
		{"Multi", testMembersMulti},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newCache(t)) })
	}
}

// members returns conv's cached members, failing t on an error.
func mcMembers(t *testing.T, c routing.MemberCache, conv uint64) ([]string, bool) {
	t.Helper()
	got, ok, err := c.Members(ctx(t), conv)
	if err != nil {
		t.Fatalf("Members(%d): %v", conv, err)
	}
	if !ok && got != nil {
		t.Fatalf("Members(%d): miss with members %q", conv, got)
	}
	if cap(got) != len(got) {
		// Callers append to a shared slice by mistake; with spare
		// capacity two such appends would write the same memory.
		t.Fatalf("Members(%d): cap %d > len %d", conv, cap(got), len(got))
	}
	return got, ok
}

func mcWant(t *testing.T, c routing.MemberCache, conv uint64, want ...string) {
	t.Helper()
	got, ok := mcMembers(t, c, conv)
	if !ok {
		t.Fatalf("Members(%d): miss, want %q", conv, want)
	}
	if got == nil || !slices.Equal(got, want) {
		t.Fatalf("Members(%d) = %q, want %q", conv, got, want)
	}
}

func mcWantMiss(t *testing.T, c routing.MemberCache, conv uint64) {
	t.Helper()
	if got, ok := mcMembers(t, c, conv); ok {
		t.Fatalf("Members(%d) = %q, want a miss", conv, got)
	}
}

func mcFill(t *testing.T, c routing.MemberCache, conv uint64, ms ...string) {
	t.Helper()
	if err := c.FillMembers(ctx(t), conv, ms); err != nil {
		t.Fatalf("FillMembers(%d): %v", conv, err)
	}
}

func mcSet(t *testing.T, c routing.MemberCache, conv uint64, ms ...string) {
	t.Helper()
	if err := c.SetMembers(ctx(t), conv, ms); err != nil {
		t.Fatalf("SetMembers(%d): %v", conv, err)
	}
}

func testMembersMissFillHit(t *testing.T, c routing.MemberCache) {
	mcWantMiss(t, c, 1)
	mcWantMiss(t, c, 1) // a miss is not cached as anything
	mcFill(t, c, 1, "alice", "bob")
	mcWant(t, c, 1, "alice", "bob")
	mcWant(t, c, 1, "alice", "bob") // and again, from wherever it is cached
	mcWantMiss(t, c, 2)
}

func testMembersFillKeeps(t *testing.T, c routing.MemberCache) {
	mcFill(t, c, 1, "alice", "bob")
	mcFill(t, c, 1, "carol") // a filler that read the store earlier
	mcWant(t, c, 1, "alice", "bob")

	// A fill after a set (the reader read the store before the change)
	// leaves the set's list.
	mcSet(t, c, 2, "alice", "dave")
	mcFill(t, c, 2, "alice")
	mcWant(t, c, 2, "alice", "dave")
}

func testMembersSetOverwrites(t *testing.T, c routing.MemberCache) {
	mcSet(t, c, 1, "alice") // no entry yet: set creates it
	mcWant(t, c, 1, "alice")
	mcFill(t, c, 2, "alice", "bob")
	mcWant(t, c, 2, "alice", "bob")
	mcSet(t, c, 2, "bob", "carol")
	mcWant(t, c, 2, "bob", "carol")
	mcSet(t, c, 2, "bob")
	mcWant(t, c, 2, "bob")
	mcWant(t, c, 1, "alice")
}

func testMembersDelete(t *testing.T, c routing.MemberCache) {
	mcSet(t, c, 1, "alice", "bob")
	mcSet(t, c, 2, "carol")
	mcWant(t, c, 1, "alice", "bob")
	if err := c.DeleteMembers(ctx(t), 1); err != nil {
		t.Fatal(err)
	}
	mcWantMiss(t, c, 1)
	mcWant(t, c, 2, "carol")
	if err := c.DeleteMembers(ctx(t), 1); err != nil { // nothing to delete
		t.Fatalf("delete of a missing entry: %v", err)
	}
	if err := c.DeleteMembers(ctx(t), 99); err != nil {
		t.Fatalf("delete of a never cached entry: %v", err)
	}
	mcFill(t, c, 1, "dave") // the entry is gone, so a fill takes
	mcWant(t, c, 1, "dave")
}

func testMembersSorted(t *testing.T, c routing.MemberCache) {
	mcSet(t, c, 1, "carol", "alice", "bob", "alice", "carol", "carol")
	mcWant(t, c, 1, "alice", "bob", "carol")
	mcFill(t, c, 2, "b", "a", "b", "", "a")
	mcWant(t, c, 2, "", "a", "b")
	// Bytes, not text: ordered as Go compares strings.
	mcSet(t, c, 3, "é", "z", "Z", "\x00", "\xff\xfe")
	mcWant(t, c, 3, "\x00", "Z", "z", "é", "\xff\xfe")
}

func testMembersCallerSlice(t *testing.T, c routing.MemberCache) {
	in := []string{"carol", "alice", "bob"}
	mcSet(t, c, 1, in...)
	if !slices.Equal(in, []string{"carol", "alice", "bob"}) {
		t.Fatalf("SetMembers changed its argument: %q", in)
	}
	in[0] = "mallory"
	mcWant(t, c, 1, "alice", "bob", "carol")

	sorted := []string{"alice", "bob"}
	mcSet(t, c, 2, sorted...)
	sorted[0] = "mallory" // already sorted input must be copied too
	mcWant(t, c, 2, "alice", "bob")
}

func testMembersEmpty(t *testing.T, c routing.MemberCache) {
	mcSet(t, c, 1) // a conversation whose members all left
	got, ok := mcMembers(t, c, 1)
	if !ok || len(got) != 0 {
		t.Fatalf("Members of an empty list = %q, %v; want empty, true", got, ok)
	}
	mcFill(t, c, 1, "alice") // cached empty is an entry: a fill keeps it
	if got, ok := mcMembers(t, c, 1); !ok || len(got) != 0 {
		t.Fatalf("after fill: %q, %v; want empty, true", got, ok)
	}
	mcFill(t, c, 2, []string{}...)
	if got, ok := mcMembers(t, c, 2); !ok || len(got) != 0 {
		t.Fatalf("filled empty: %q, %v; want empty, true", got, ok)
	}
	mcSet(t, c, 2, "alice")
	mcWant(t, c, 2, "alice")
	mcSet(t, c, 2)
	if got, ok := mcMembers(t, c, 2); !ok || len(got) != 0 {
		t.Fatalf("set back to empty: %q, %v; want empty, true", got, ok)
	}
	mcWantMiss(t, c, 3)
}

func testMembersMany(t *testing.T, c routing.MemberCache) {
	convs := []uint64{0, 1, 2, 10, 11, 100, 1 << 32, math.MaxUint64}
	for i := range 200 {
		convs = append(convs, uint64(1000+i*7919))
	}
	list := func(i int) []string {
		ms := make([]string, i%5)
		for j := range ms {
			ms[j] = fmt.Sprintf("user-%d-%d", i, j)
		}
		return ms
	}
	for i, conv := range convs {
		if i%2 == 0 {
			mcSet(t, c, conv, list(i)...)
		} else {
			mcFill(t, c, conv, list(i)...)
		}
	}
	for i, conv := range convs {
		mcWant(t, c, conv, list(i)...)
	}
	// Changing one leaves the others.
	mcSet(t, c, convs[3], "changed")
	if err := c.DeleteMembers(ctx(t), convs[4]); err != nil {
		t.Fatal(err)
	}
	for i, conv := range convs {
		switch i {
		case 3:
			mcWant(t, c, conv, "changed")
		case 4:
			mcWantMiss(t, c, conv)
		default:
			mcWant(t, c, conv, list(i)...)
		}
	}
}

func testMembersInvalid(t *testing.T, c routing.MemberCache) {
	long := strings.Repeat("x", routing.MaxMemberIDLen+1)
	tooMany := make([]string, routing.MaxMembers+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("u%07d", i)
	}
	for _, tc := range []struct {
		name string
		ms   []string
	}{
		{"IDTooLong", []string{"alice", long}},
		{"TooMany", tooMany},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, op := range []struct {
				name string
				f    func() error
			}{
				{"Fill", func() error { return c.FillMembers(ctx(t), 1, tc.ms) }},
				{"Set", func() error { return c.SetMembers(ctx(t), 2, tc.ms) }},
			} {
				if err := op.f(); !errors.Is(err, routing.ErrInvalidMembers) {
					t.Errorf("%s: err = %v, want ErrInvalidMembers", op.name, err)
				}
			}
			mcWantMiss(t, c, 1) // nothing written
			mcWantMiss(t, c, 2)
		})
	}
	// A rejected Set leaves the entry it would have replaced.
	mcSet(t, c, 3, "alice")
	if err := c.SetMembers(ctx(t), 3, []string{long}); !errors.Is(err, routing.ErrInvalidMembers) {
		t.Fatalf("err = %v, want ErrInvalidMembers", err)
	}
	mcWant(t, c, 3, "alice")

	// The bounds themselves are valid; duplicates do not count.
	atMost := append(slices.Clone(tooMany[:routing.MaxMembers]), tooMany[0])
	mcSet(t, c, 4, atMost...)
	got, ok := mcMembers(t, c, 4)
	if !ok || len(got) != routing.MaxMembers || got[0] != tooMany[0] || got[len(got)-1] != tooMany[routing.MaxMembers-1] {
		t.Fatalf("MaxMembers members: got %d, %v", len(got), ok)
	}
	maxID := strings.Repeat("y", routing.MaxMemberIDLen)
	mcSet(t, c, 5, maxID, "")
	mcWant(t, c, 5, "", maxID)
}

// testMembersReadYourWrites: a Members call that starts after SetMembers
// (or DeleteMembers) returned sees that write, even while other goroutines
// keep reading the entry (and so keep it cached, where an implementation
// caches).
func testMembersReadYourWrites(t *testing.T, c routing.MemberCache) {
	const conv = 7
	mcSet(t, c, conv, "v0")
	readCtx := ctx(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readErr error
	var errOnce sync.Once
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := c.Members(readCtx, conv); err != nil {
					errOnce.Do(func() { readErr = err })
					return
				}
				runtime.Gosched() // let the writer run on a small machine
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
		if readErr != nil {
			t.Errorf("concurrent Members: %v", readErr)
		}
	}()
	for i := range 200 {
		v := fmt.Sprintf("v%d", i)
		switch i % 4 {
		case 0, 1:
			mcSet(t, c, conv, v)
			mcWant(t, c, conv, v)
		case 2:
			mcSet(t, c, conv, v, "w")
			mcWant(t, c, conv, v, "w")
			if err := c.DeleteMembers(ctx(t), conv); err != nil {
				t.Fatal(err)
			}
			mcWantMiss(t, c, conv)
		case 3:
			mcFill(t, c, conv, v)
			mcWant(t, c, conv, v)
		}
	}
}

// testMembersMulti checks MultiMemberCache, which every implementation
// offers: reads and fills of many conversations agree with the one-at-a-time
// calls, a fill keeps existing entries, and an invalid list writes nothing.
func testMembersMulti(t *testing.T, c routing.MemberCache) {
	mc, ok := c.(routing.MultiMemberCache)
	if !ok {
		t.Fatalf("%T is not a routing.MultiMemberCache", c)
	}
	mcSet(t, c, 2, "bob", "alice")
	convs := []uint64{1, 2, 3, 2}
	out, found := make([][]string, len(convs)), make([]bool, len(convs))
	if err := mc.MembersMulti(ctx(t), convs, out, found); err != nil {
		t.Fatalf("MembersMulti: %v", err)
	}
	for i, want := range []bool{false, true, false, true} {
		if found[i] != want {
			t.Fatalf("found[%d] = %v, want %v", i, found[i], want)
		}
	}
	if !slices.Equal(out[1], []string{"alice", "bob"}) || !slices.Equal(out[3], out[1]) || out[0] != nil {
		t.Fatalf("out = %q", out)
	}
	// Fill 1 and 3, and 2 with another list, which must not replace it.
	err := mc.FillMembersMulti(ctx(t), []uint64{1, 2, 3}, [][]string{{"carol", "alice"}, {"zed"}, {}})
	if err != nil {
		t.Fatalf("FillMembersMulti: %v", err)
	}
	mcWant(t, c, 1, "alice", "carol")
	mcWant(t, c, 2, "alice", "bob")
	if got, ok := mcMembers(t, c, 3); !ok || len(got) != 0 {
		t.Fatalf("Members(3) = %q, %v, want an empty list", got, ok)
	}
	if err := mc.MembersMulti(ctx(t), []uint64{3, 1}, out, found); err != nil || !found[0] || !found[1] || !slices.Equal(out[1], []string{"alice", "carol"}) {
		t.Fatalf("MembersMulti after fill: %q %v %v", out[:2], found[:2], err)
	}
	// One invalid list rejects the call before anything is written.
	long := strings.Repeat("x", routing.MaxMemberIDLen+1)
	err = mc.FillMembersMulti(ctx(t), []uint64{4, 5}, [][]string{{"alice"}, {long}})
	if !errors.Is(err, routing.ErrInvalidMembers) {
		t.Fatalf("invalid fill: err = %v, want ErrInvalidMembers", err)
	}
	mcWantMiss(t, c, 4)
	mcWantMiss(t, c, 5)
	// Nothing to do is no error.
	if err := mc.MembersMulti(ctx(t), nil, nil, nil); err != nil {
		t.Fatalf("MembersMulti(nil): %v", err)
	}
	if err := mc.FillMembersMulti(ctx(t), nil, nil); err != nil {
		t.Fatalf("FillMembersMulti(nil): %v", err)
	}
}

package routing

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
)

var _ ReceiptCounter = (*Memory)(nil)

// memReceipts is Memory's ReceiptCounter state. It has its own lock so that
// receipts, which arrive for every member of every conversation, never wait
// on (or hold up) the registry and router behind Memory.mu. Its zero value
// is ready to use.
//
// Nothing expires: pointers live as long as the process, one entry per
// (conversation, member who acknowledged something) — unlike Redis, whose
// keys expire after RedisConfig.ReceiptTTL without an advance. The embedded
// default is a single process whose state goes with it anyway.
type memReceipts struct {
	mu    sync.RWMutex
	convs map[uint64]map[string]memPointers // conv -> member -> pointers
}

// memPointers are one member's pointers in one conversation.
type memPointers struct{ delivered, read uint64 }

// AdvanceReceipts implements ReceiptCounter. O(len(adv)).
func (m *Memory) AdvanceReceipts(_ context.Context, adv []ReceiptAdvance) error {
	if err := checkAdvances(adv); err != nil {
		return err
	}
	rc := &m.receipts
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for i := range adv {
		a := &adv[i]
		if a.Seq == 0 {
			continue
		}
		if rc.convs == nil {
			rc.convs = make(map[uint64]map[string]memPointers)
		}
		members := rc.convs[a.Conv]
		if members == nil {
			members = make(map[string]memPointers)
			rc.convs[a.Conv] = members
		}
		p := members[a.User]
		p.delivered = max(p.delivered, a.Seq) // read implies delivered
		if a.Kind == ReceiptRead {
			p.read = max(p.read, a.Seq)
		}
		members[a.User] = p
	}
	return nil
}

// ReceiptCounts implements ReceiptCounter. It reads every member of conv
// once: O(members * log(len(seqs))), not O(members * len(seqs)).
func (m *Memory) ReceiptCounts(_ context.Context, conv uint64, sender string, seqs []uint64, dst []ReceiptCount) ([]ReceiptCount, error) {
	start := len(dst)
	dst = slices.Grow(dst, len(seqs))[:start+len(seqs)]
	out := dst[start:]
	clear(out)
	// The countable seqs, in increasing order, with their index in seqs.
	type ord struct {
		seq uint64
		i   int
	}
	sorted := make([]ord, 0, len(seqs))
	for i, s := range seqs {
		if countable(s) {
			sorted = append(sorted, ord{s, i})
		}
	}
	if len(sorted) == 0 {
		return dst, nil
	}
	slices.SortFunc(sorted, func(a, b ord) int { return cmp.Compare(a.seq, b.seq) })
	// reached(p) is how many sorted seqs a pointer p covers (those <= p):
	// a member with pointer p counts for sorted[:reached(p)]. Bucketing
	// members by reached and summing the buckets from the top gives every
	// count in one pass over the members.
	reached := func(p uint64) int {
		n, _ := slices.BinarySearchFunc(sorted, p+1, func(o ord, t uint64) int { return cmp.Compare(o.seq, t) })
		return n
	}
	delivered := make([]int, len(sorted)+1)
	read := make([]int, len(sorted)+1)
	rc := &m.receipts
	rc.mu.RLock()
	for u, p := range rc.convs[conv] {
		if u == sender {
			continue
		}
		delivered[reached(p.delivered)]++
		read[reached(p.read)]++
	}
	rc.mu.RUnlock()
	d, r := 0, 0
	for j := len(sorted) - 1; j >= 0; j-- {
		d += delivered[j+1]
		r += read[j+1]
		out[sorted[j].i] = ReceiptCount{Delivered: d, Read: r}
	}
	return dst, nil
}

// ReceiptReaders implements ReceiptCounter. O(members) to find the readers,
// then O(readers * log(readers)) to sort them.
func (m *Memory) ReceiptReaders(_ context.Context, conv uint64, sender string, seq uint64, limit int, dst []string) ([]string, error) {
	if !countable(seq) || limit <= 0 {
		return dst, nil
	}
	start := len(dst)
	rc := &m.receipts
	rc.mu.RLock()
	for u, p := range rc.convs[conv] {
		if p.read >= seq && u != sender {
			dst = append(dst, u)
		}
	}
	rc.mu.RUnlock()
	slices.Sort(dst[start:])
	if len(dst)-start > limit {
		clear(dst[start+limit:])
		dst = dst[:start+limit]
	}
	return dst, nil
}

// ReceiptPointers implements ReceiptCounter.
func (m *Memory) ReceiptPointers(_ context.Context, user string, kind ReceiptKind, convs []uint64, dst []uint64) ([]uint64, error) {
	if kind != ReceiptDelivered && kind != ReceiptRead {
		return dst, fmt.Errorf("routing: receipt pointers: unknown receipt kind %d", kind)
	}
	rc := &m.receipts
	rc.mu.RLock()
	defer rc.mu.RUnlock()
	for _, c := range convs {
		p := rc.convs[c][user]
		if kind == ReceiptRead {
			dst = append(dst, p.read)
		} else {
			dst = append(dst, p.delivered)
		}
	}
	return dst, nil
}

package routing

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

var _ ReceiptCounter = (*Redis)(nil)

// Receipt pointers in Redis: per conversation two sorted sets,
// "{prefix}rc:{conv}:d" (delivered) and "{prefix}rc:{conv}:r" (read),
// member = user id, score = that member's pointer.
//
//   - Advance: ZADD key GT seq user (Redis >= 6.2). GT only ever raises a
//     score (and adds a missing member), so applying an advance again, late
//     or out of order changes nothing: exactly the at-least-once, "up to
//     seq" semantics receipts need, with no read-modify-write. A read
//     advance writes both sets (read implies delivered).
//   - Count of message s: ZCOUNT key s +inf, O(log members) with no scan,
//     minus the sender when ZSCORE key sender >= s.
//   - Retention: every advance PEXPIREs the keys it wrote to
//     RedisConfig.ReceiptTTL, so a conversation's pointers disappear only
//     after that long without a receipt. Counts of messages older than
//     that are gone with them, which the UI of a conversation idle for
//     months can live with; the alternative, keys that never expire, grows
//     with every conversation ever created.
//
// Seqs travel as decimal strings; Redis parses them into doubles, exact up
// to MaxReceiptSeq.

const (
	// defaultReceiptTTL is RedisConfig.ReceiptTTL's default.
	defaultReceiptTTL = 90 * 24 * time.Hour
	// receiptChunk is the most advances AdvanceReceipts writes per
	// pipelined round trip, so one huge batch never holds a shared
	// connection for long.
	receiptChunk = 1000
	// receiptChunkCmds caps the commands of one round trip under rueidis'
	// BlockingPipeline threshold (2,000), past which a pipeline leaves the
	// shared connections for a dedicated one (dialed on demand). A chunk
	// ends early when its next advance would pass it: 1,000 read advances
	// in 1,000 different conversations would be 4,000 commands.
	receiptChunkCmds = rueidis.DefaultBlockingPipeline - 1
	// receiptKeyMax bounds the length of a receipt key beyond the prefix:
	// "rc:" + decimal uint64 + ":d".
	receiptKeyMax = len("rc:") + 20 + len(":d")
)

// receiptKey appends the key of conv's kind pointers to arena and returns it
// as a string aliasing arena (see arenaString).
func (r *Redis) receiptKey(arena []byte, conv uint64, kind ReceiptKind) ([]byte, string) {
	n := len(arena)
	arena = append(arena, r.prefix...)
	arena = append(arena, "rc:"...)
	arena = strconv.AppendUint(arena, conv, 10)
	if kind == ReceiptRead {
		arena = append(arena, ":r"...)
	} else {
		arena = append(arena, ":d"...)
	}
	return arena, arenaString(arena, n)
}

// appendSeq appends seq in decimal to arena and returns it as a string
// aliasing arena.
func appendSeq(arena []byte, seq uint64) ([]byte, string) {
	n := len(arena)
	arena = strconv.AppendUint(arena, seq, 10)
	return arena, arenaString(arena, n)
}

// decLen is the length of seq in decimal.
func decLen(seq uint64) int {
	n := 1
	for seq >= 10 {
		seq /= 10
		n++
	}
	return n
}

// AdvanceReceipts implements ReceiptCounter. Per chunk of at most
// receiptChunk advances (fewer when they span so many conversations that
// the commands would reach receiptChunkCmds), one pipelined round trip of,
// per conversation: one ZADD GT of all its advances to the delivered set
// and a PEXPIRE of it, and if any of them is a read, the same for the read
// set. Grouping by conversation is what keeps the round trip small: a
// consumer batch typically holds many members' receipts for the same few
// busy conversations. A chunk is retried on a broken connection
// (retryBroken): ZADD GT and PEXPIRE are idempotent.
func (r *Redis) AdvanceReceipts(ctx context.Context, adv []ReceiptAdvance) error {
	if err := checkAdvances(adv); err != nil {
		return err
	}
	ttlArg := strconv.FormatInt(max(r.cfg.ReceiptTTL.Milliseconds(), 1), 10)
	var s receiptScratch
	for len(adv) > 0 {
		var n int
		err := retryBroken(func() error {
			var err error
			n, err = r.advanceChunk(ctx, adv, ttlArg, &s)
			return err
		})
		if err != nil {
			return fmt.Errorf("routing: advance receipts: %w", err)
		}
		adv = adv[n:]
	}
	return nil
}

// receiptScratch is advanceChunk's working memory, reused across the chunks
// of one AdvanceReceipts.
type receiptScratch struct {
	groups []receiptGroup
	index  map[uint64]int32 // conv -> its group
	next   []int32          // per advance of the chunk: the next one of its group, or -1
}

// receiptGroup is the advances of one chunk in one conversation, linked
// through receiptScratch.next.
type receiptGroup struct {
	conv        uint64
	first, last int32
	n, reads    int
}

// advanceChunk writes a chunk from the start of adv (see AdvanceReceipts)
// and returns how many advances it covered. The chunk depends on adv only,
// so a retry covers the same one.
func (r *Redis) advanceChunk(ctx context.Context, adv []ReceiptAdvance, ttlArg string, s *receiptScratch) (int, error) {
	if s.index == nil {
		s.index = make(map[uint64]int32)
	}
	clear(s.index)
	s.groups, s.next = s.groups[:0], s.next[:0]
	// Group the chunk's advances by conversation and size its arena.
	ncmds, taken, size, n := 0, 0, 0, 0
	keyLen := len(r.prefix) + receiptKeyMax
	for ; n < len(adv) && taken < receiptChunk; n++ {
		a := &adv[n]
		if a.Seq == 0 {
			s.next = append(s.next, -1)
			continue
		}
		read := a.Kind == ReceiptRead
		g, ok := s.index[a.Conv]
		add := 0
		if !ok {
			add += 2 // ZADD + PEXPIRE of the delivered set
		}
		if read && (!ok || s.groups[g].reads == 0) {
			add += 2 // ZADD + PEXPIRE of the read set
		}
		if ncmds+add > receiptChunkCmds {
			break
		}
		ncmds += add
		taken++
		if !ok {
			g = int32(len(s.groups))
			s.index[a.Conv] = g
			s.groups = append(s.groups, receiptGroup{conv: a.Conv, first: int32(n), last: int32(n)})
			size += keyLen
		} else {
			s.next[s.groups[g].last] = int32(n)
			s.groups[g].last = int32(n)
		}
		grp := &s.groups[g]
		grp.n++
		size += decLen(a.Seq)
		if read {
			if grp.reads == 0 {
				size += keyLen
			}
			grp.reads++
			size += decLen(a.Seq)
		}
		s.next = append(s.next, -1)
	}
	if ncmds == 0 {
		return n, nil // only seq-0 advances
	}
	arena := make([]byte, 0, size)
	cmds := make(rueidis.Commands, 0, ncmds)
	for gi := range s.groups {
		g := &s.groups[gi]
		arena, cmds = r.appendAdvanceGroup(arena, cmds, adv, s.next, g, ReceiptDelivered, ttlArg)
		if g.reads > 0 {
			arena, cmds = r.appendAdvanceGroup(arena, cmds, adv, s.next, g, ReceiptRead, ttlArg)
		}
	}
	r.count(len(cmds))
	for _, res := range r.c.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// appendAdvanceGroup appends to cmds the ZADD GT and PEXPIRE of group g's
// kind set: every advance of g for the delivered set (read implies
// delivered), its read advances for the read set.
func (r *Redis) appendAdvanceGroup(arena []byte, cmds rueidis.Commands, adv []ReceiptAdvance, next []int32, g *receiptGroup, kind ReceiptKind, ttlArg string) ([]byte, rueidis.Commands) {
	var key, seq string
	arena, key = r.receiptKey(arena, g.conv, kind)
	z := r.c.B().Arbitrary("ZADD").Keys(key).Args("GT")
	for i := g.first; i >= 0; i = next[i] {
		a := &adv[i]
		if kind == ReceiptRead && a.Kind != ReceiptRead {
			continue
		}
		arena, seq = appendSeq(arena, a.Seq)
		z = z.Args(seq, a.User)
	}
	return arena, append(cmds, z.Build(), r.c.B().Arbitrary("PEXPIRE").Keys(key).Args(ttlArg).Build())
}

// ReceiptCounts implements ReceiptCounter: one pipelined round trip of a
// ZCOUNT per countable seq and kind, then a ZSCORE of the sender per kind:
// 2*len(seqs)+2 commands, each O(log members). (Past about 1,000 seqs the
// round trip goes on a dedicated connection: rueidis' BlockingPipeline.)
//
// The commands of one key run in order on one connection, but another
// writer's advance may land between a ZCOUNT and the ZSCORE after it. The
// ZSCOREs come last so that this errs low, never high: a sender whose
// pointer passed s in between was not in the ZCOUNT but is subtracted (one
// fewer, until the next call), whereas the other order could show one
// member too many ("801 of 800"). Likewise a read advance landing between
// the two kinds could show Read > Delivered; Delivered is raised to Read.
func (r *Redis) ReceiptCounts(ctx context.Context, conv uint64, sender string, seqs []uint64, dst []ReceiptCount) ([]ReceiptCount, error) {
	start := len(dst)
	dst = slices.Grow(dst, len(seqs))[:start+len(seqs)]
	out := dst[start:]
	clear(out)
	live, size := 0, 2*(len(r.prefix)+receiptKeyMax)
	for _, s := range seqs {
		if countable(s) {
			live++
			size += decLen(s)
		}
	}
	if live == 0 {
		return dst, nil
	}
	arena := make([]byte, 0, size)
	var dkey, rkey, seq string
	arena, dkey = r.receiptKey(arena, conv, ReceiptDelivered)
	arena, rkey = r.receiptKey(arena, conv, ReceiptRead)
	cmds := make(rueidis.Commands, 0, 2*live+2)
	for _, s := range seqs {
		if !countable(s) {
			continue
		}
		arena, seq = appendSeq(arena, s)
		cmds = append(cmds,
			r.c.B().Zcount().Key(dkey).Min(seq).Max("+inf").Build(),
			r.c.B().Zcount().Key(rkey).Min(seq).Max("+inf").Build())
	}
	cmds = append(cmds,
		r.c.B().Zscore().Key(dkey).Member(sender).Build(),
		r.c.B().Zscore().Key(rkey).Member(sender).Build())
	r.count(len(cmds))
	res := r.c.DoMulti(ctx, cmds...)
	fail := func(err error) ([]ReceiptCount, error) {
		clear(out)
		return dst[:start], fmt.Errorf("routing: receipt counts of conv %d: %w", conv, err)
	}
	senderD, err := receiptPointer(res[2*live])
	if err != nil {
		return fail(err)
	}
	senderR, err := receiptPointer(res[2*live+1])
	if err != nil {
		return fail(err)
	}
	j := 0
	for i, s := range seqs {
		if !countable(s) {
			continue
		}
		d, err := res[j].AsInt64()
		if err != nil {
			return fail(err)
		}
		rd, err := res[j+1].AsInt64()
		if err != nil {
			return fail(err)
		}
		j += 2
		if senderD >= s {
			d--
		}
		if senderR >= s {
			rd--
		}
		rd = max(rd, 0)
		d = max(d, rd)
		out[i] = ReceiptCount{Delivered: int(d), Read: int(rd)}
	}
	return dst, nil
}

// ReceiptPointers implements ReceiptCounter: one ZSCORE per conversation,
// pipelined in one round trip.
func (r *Redis) ReceiptPointers(ctx context.Context, user string, kind ReceiptKind, convs []uint64, dst []uint64) ([]uint64, error) {
	if kind != ReceiptDelivered && kind != ReceiptRead {
		return dst, fmt.Errorf("routing: receipt pointers: unknown receipt kind %d", kind)
	}
	if len(convs) == 0 {
		return dst, nil
	}
	arena := make([]byte, 0, len(convs)*(len(r.prefix)+receiptKeyMax))
	cmds := make(rueidis.Commands, 0, len(convs))
	var key string
	for _, c := range convs {
		arena, key = r.receiptKey(arena, c, kind)
		cmds = append(cmds, r.c.B().Zscore().Key(key).Member(user).Build())
	}
	r.count(len(cmds))
	start := len(dst)
	for i, res := range r.c.DoMulti(ctx, cmds...) {
		p, err := receiptPointer(res)
		if err != nil {
			return dst[:start], fmt.Errorf("routing: receipt pointers of %q in conv %d: %w", user, convs[i], err)
		}
		dst = append(dst, p)
	}
	return dst, nil
}

// receiptPointer reads a ZSCORE reply: the member's pointer, 0 if absent.
func receiptPointer(res rueidis.RedisResult) (uint64, error) {
	f, err := res.AsFloat64()
	if rueidis.IsRedisNil(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return uint64(f), nil
}

// ReceiptReaders implements ReceiptCounter: ZRANGE key seq +inf BYSCORE of
// the read set, one command, then the sender is dropped and the rest sorted
// by user id and cut to limit here. Redis orders the set by pointer, not by
// user id, so no LIMIT can pick the first readers by id: the cost is
// O(readers) in Redis and on the wire, whatever limit is.
func (r *Redis) ReceiptReaders(ctx context.Context, conv uint64, sender string, seq uint64, limit int, dst []string) ([]string, error) {
	if !countable(seq) || limit <= 0 {
		return dst, nil
	}
	arena := make([]byte, 0, len(r.prefix)+receiptKeyMax+20)
	var key, from string
	arena, key = r.receiptKey(arena, conv, ReceiptRead)
	_, from = appendSeq(arena, seq)
	r.count(1)
	users, err := r.c.Do(ctx, r.c.B().Zrange().Key(key).Min(from).Max("+inf").Byscore().Build()).AsStrSlice()
	if err != nil && !rueidis.IsRedisNil(err) {
		return dst, fmt.Errorf("routing: receipt readers of conv %d: %w", conv, err)
	}
	users = slices.DeleteFunc(users, func(u string) bool { return u == sender })
	slices.Sort(users)
	return append(dst, users[:min(limit, len(users))]...), nil
}

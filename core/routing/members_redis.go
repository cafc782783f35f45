package routing

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/rueidis"
)

// Redis as a MemberCache.
//
// Data model: one string per conversation, "{prefix}m:{conv}" (conv in
// decimal), holding the member list's encoding (appendMembers) with a TTL of
// RedisConfig.MembersTTL. FillMembers is SET NX PX, SetMembers SET PX,
// DeleteMembers DEL. Both writes reset the TTL and reads do not extend it,
// so a busy conversation is read from the store again once per TTL and a
// conversation nobody reads any more leaves Redis on its own. The TTL also
// bounds how long a list stays wrong after a SetMembers that failed.
//
// Reads: Members is GET through a second rueidis client, the only one with
// client-side caching (RESP3 CLIENT TRACKING, opt-in: only the keys read
// with DoCache are tracked). The first read of a conversation in a process
// costs a round trip; every later one is answered from the process's memory
// with no round trip, until Redis pushes an invalidation because the key
// was written, deleted, expired or evicted, which makes rueidis drop its
// copy. A local copy also never outlives the key's server TTL (DoCache reads
// the PTTL with the value). This is the opposite trade-off from the
// registry's client, which disables caching (see NewRedis): routes are
// rewritten by every heartbeat, while a conversation's membership is read
// for every message and changes rarely. Keeping the caching in a client of
// its own keeps the tracking state, on both sides, to member keys only.
//
// That client has one pipelined connection per Redis node. rueidis keeps
// one client-side cache per connection and reads a key through the
// connection its slot picks; with a single connection, every write of a key
// also goes out on the connection that holds the key's cached copy, which
// the guarantee below relies on. Reads that miss are rare, and one pipelined
// connection carries them easily.
//
// When a change becomes visible:
//
//   - To the process that called SetMembers (or FillMembers or
//     DeleteMembers): at once. The write is pipelined with a PTTL of the
//     same key on that single connection. Redis sends the invalidation of a
//     key a connection tracks, when that same connection writes it, after
//     the write's reply (Redis 7 defers it to the end of the command) but
//     before the reply to the connection's next command, and rueidis
//     handles pushes on the connection's reader, in order, before it
//     delivers the replies that follow. So by the time the PTTL's reply
//     reaches the writer the old copy is gone; a read that was in flight
//     was either answered before the write (its copy is dropped by that
//     same invalidation) or executed after it (and read the new list). The
//     fence costs one more command in the same round trip and no state:
//     rueidis has no call to drop one local entry, and a per-process
//     override of the written list would have to tell which of two lists
//     is newer, which the value cannot say.
//   - To other processes: once Redis's invalidation reaches them, one
//     network hop after the write (Redis queues it to every tracking
//     connection while executing the write, before SetMembers returns). A
//     Members call in between still returns the previous list. If such a
//     connection breaks instead, rueidis discards its whole cache.
//
// Redis must not evict these keys (maxmemory-policy noeviction, which the
// registry needs anyway): an eviction between a writer's SetMembers and an
// older reader's FillMembers is the delete race described on MemberCache.
//
// A value that does not decode (another format version, written by a newer
// process during a rolling upgrade, or corruption) is a miss and counts in
// MemberStats.Malformed. It is left in place: an older process must not
// delete a newer one's entries. FillMembers cannot replace it, so until a
// SetMembers or the TTL does, that conversation is read from the store on
// every message; the counter is what shows it.
const (
	// defaultMembersTTL is RedisConfig.MembersTTL's default.
	defaultMembersTTL = 24 * time.Hour
	// maxMembersMemoBytes bounds the decoded lists redisMembers keeps (see
	// redisMembers.memo); past it they are all dropped and decoded again
	// on their next read.
	maxMembersMemoBytes = 64 << 20
)

var _ MemberCache = (*Redis)(nil)

// redisMembers is Redis's MemberCache state (the Redis.members field).
type redisMembers struct {
	c rueidis.Client // client-side caching, one pipelined connection per node

	// memo keeps, per conversation, the last value decoded and its
	// decoding. A cache hit hands back the very string rueidis holds, so
	// while rueidis returns the same string (same pointer and length)
	// Members returns the same slice instead of decoding it again, which
	// would allocate on every message. The memo holds the string, so the
	// memory cannot be reused for another value while the memo compares
	// against it: the same pointer means the same value. It is never the
	// source of a value: only what DoCache returned is, so it needs no
	// invalidation of its own.
	memoMu    sync.RWMutex
	memo      map[uint64]membersMemo
	memoBytes int

	reads, localHits, misses, malformed, writes atomic.Uint64
}

type membersMemo struct {
	key     string // conv's key, so that a read builds none
	raw     string
	members []string // decodeMembers(raw)
}

// newRedisMembers connects the caching client; opt is what NewRedis uses
// for its own client (redisClientOption).
func newRedisMembers(opt rueidis.ClientOption) (*redisMembers, error) {
	// Client-side caching needs RESP3 (Redis 6 and later; the registry
	// already needs 7). The local copies live in rueidis' default LRU of
	// 128 MiB per connection, so with one connection per node that bounds
	// this process's memory for them.
	opt.DisableCache = false
	// One connection per node (-1 means 2^0 for every client type): see
	// the comment above on why writes and cached reads of a key must
	// share a connection.
	opt.PipelineMultiplex = -1
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, err
	}
	return &redisMembers{c: c, memo: make(map[uint64]membersMemo)}, nil
}

// MemberStats are cumulative counters of one Redis's MemberCache since
// NewRedis. They are separate from RedisStats, whose round trips are the
// registry's and router's.
type MemberStats struct {
	// Reads counts Members calls that did not fail.
	Reads uint64
	// LocalHits counts the Reads answered by the client-side cache: with
	// no round trip of their own (a read that waited for another call's
	// read of the same key counts here too).
	LocalHits uint64
	// Misses counts the Reads that found no entry.
	Misses uint64
	// Malformed counts the Reads that found a value that does not decode
	// (and returned a miss).
	Malformed uint64
	// Writes counts FillMembers, SetMembers and DeleteMembers calls that
	// Redis accepted, one round trip each.
	Writes uint64
}

// MemberStats returns the MemberCache counters.
func (r *Redis) MemberStats() MemberStats {
	m := r.members
	return MemberStats{
		Reads:     m.reads.Load(),
		LocalHits: m.localHits.Load(),
		Misses:    m.misses.Load(),
		Malformed: m.malformed.Load(),
		Writes:    m.writes.Load(),
	}
}

// appendMembersKey appends "{prefix}m:{conv}" to arena (see arenaString).
func (r *Redis) appendMembersKey(arena []byte, conv uint64) ([]byte, string) {
	n := len(arena)
	arena = append(arena, r.prefix...)
	arena = append(arena, "m:"...)
	arena = strconv.AppendUint(arena, conv, 10)
	return arena, arenaString(arena, n)
}

// Members implements MemberCache: DoCache GET, usually answered from this
// process's memory (see above).
func (r *Redis) Members(ctx context.Context, conv uint64) ([]string, bool, error) {
	m := r.members
	m.memoMu.RLock()
	memo, memoized := m.memo[conv]
	m.memoMu.RUnlock()
	key := memo.key
	if !memoized {
		_, key = r.appendMembersKey(make([]byte, 0, len(r.prefix)+2+20), conv)
	}
	// The client-side TTL only caps the local copy: rueidis caps it again
	// at the key's server TTL, and invalidations end it on any change.
	res := m.c.DoCache(ctx, m.c.B().Get().Key(key).Cache(), r.cfg.MembersTTL)
	raw, err := res.ToString()
	if err != nil {
		if rueidis.IsRedisNil(err) {
			m.count(res, &m.misses)
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("routing: members %d: %w", conv, err)
	}
	if memoized && len(raw) == len(memo.raw) && unsafe.StringData(raw) == unsafe.StringData(memo.raw) {
		m.count(res, nil)
		return memo.members, true, nil
	}
	members, ok := decodeMembers(raw)
	if !ok {
		m.count(res, &m.malformed)
		return nil, false, nil
	}
	m.remember(conv, membersMemo{key: key, raw: raw, members: members})
	m.count(res, nil)
	return members, true, nil
}

var _ MultiMemberCache = (*Redis)(nil)

// MembersMulti implements MultiMemberCache: one DoMultiCache of GETs, so
// the keys not cached locally cost one round trip together.
func (r *Redis) MembersMulti(ctx context.Context, convs []uint64, out [][]string, found []bool) error {
	if len(convs) == 0 {
		return nil
	}
	m := r.members
	memos := make([]membersMemo, len(convs))
	memoized := make([]bool, len(convs))
	cmds := make([]rueidis.CacheableTTL, len(convs))
	m.memoMu.RLock()
	for i, conv := range convs {
		memos[i], memoized[i] = m.memo[conv]
	}
	m.memoMu.RUnlock()
	for i, conv := range convs {
		key := memos[i].key
		if !memoized[i] {
			_, key = r.appendMembersKey(make([]byte, 0, len(r.prefix)+2+20), conv)
			memos[i].key = key
		}
		cmds[i] = rueidis.CT(m.c.B().Get().Key(key).Cache(), r.cfg.MembersTTL)
	}
	results := m.c.DoMultiCache(ctx, cmds...)
	for _, res := range results {
		if err := res.Error(); err != nil && !rueidis.IsRedisNil(err) {
			return fmt.Errorf("routing: members of %d conversations: %w", len(convs), err)
		}
	}
	for i, res := range results {
		out[i], found[i] = nil, false
		raw, err := res.ToString()
		if err != nil { // nil: not cached
			m.count(res, &m.misses)
			continue
		}
		if memoized[i] && len(raw) == len(memos[i].raw) && unsafe.StringData(raw) == unsafe.StringData(memos[i].raw) {
			out[i], found[i] = memos[i].members, true
			m.count(res, nil)
			continue
		}
		members, ok := decodeMembers(raw)
		if !ok {
			m.count(res, &m.malformed)
			continue
		}
		m.remember(convs[i], membersMemo{key: memos[i].key, raw: raw, members: members})
		out[i], found[i] = members, true
		m.count(res, nil)
	}
	return nil
}

// FillMembersMulti implements MultiMemberCache: every SET NX PX with its
// PTTL fence (see write) in one DoMulti.
func (r *Redis) FillMembersMulti(ctx context.Context, convs []uint64, members [][]string) error {
	if len(convs) == 0 {
		return nil
	}
	m := r.members
	ttlMs := max(r.cfg.MembersTTL.Milliseconds(), 1)
	keys, vals := make([]string, len(convs)), make([]string, len(convs))
	for i, conv := range convs {
		sorted, _, err := normalizeMembers(members[i])
		if err != nil {
			return err
		}
		arena := make([]byte, 0, len(r.prefix)+2+20+membersValueLen(sorted))
		arena, keys[i] = r.appendMembersKey(arena, conv)
		n := len(arena)
		arena = appendMembers(arena, sorted)
		vals[i] = arenaString(arena, n)
	}
	// rueidis recycles a command once it is sent: a retry builds anew.
	err := retryBroken(func() error { // SET NX of the same values is idempotent
		cmds := make([]rueidis.Completed, 0, 2*len(convs))
		for i := range keys {
			cmds = append(cmds, m.c.B().Set().Key(keys[i]).Value(vals[i]).Nx().PxMilliseconds(ttlMs).Build(),
				m.c.B().Pttl().Key(keys[i]).Build())
		}
		for _, res := range m.c.DoMulti(ctx, cmds...) {
			if err := res.Error(); err != nil && !rueidis.IsRedisNil(err) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("routing: fill members of %d conversations: %w", len(convs), err)
	}
	m.writes.Add(uint64(len(convs)))
	return nil
}

func (m *redisMembers) count(res rueidis.RedisResult, outcome *atomic.Uint64) {
	m.reads.Add(1)
	if res.IsCacheHit() {
		m.localHits.Add(1)
	}
	if outcome != nil {
		outcome.Add(1)
	}
}

func (m *redisMembers) remember(conv uint64, e membersMemo) {
	size := len(e.key) + len(e.raw) + 16*len(e.members) + 64 // 64: the map entry, roughly
	m.memoMu.Lock()
	defer m.memoMu.Unlock()
	if old, ok := m.memo[conv]; ok {
		m.memoBytes -= len(old.key) + len(old.raw) + 16*len(old.members) + 64
	} else if m.memoBytes+size > maxMembersMemoBytes {
		clear(m.memo)
		m.memoBytes = 0
	}
	m.memo[conv] = e
	m.memoBytes += size
}

// FillMembers implements MemberCache: SET NX PX (see above).
func (r *Redis) FillMembers(ctx context.Context, conv uint64, members []string) error {
	return r.writeMembers(ctx, "fill", conv, members, true)
}

// SetMembers implements MemberCache: SET PX (see above).
func (r *Redis) SetMembers(ctx context.Context, conv uint64, members []string) error {
	return r.writeMembers(ctx, "set", conv, members, false)
}

func (r *Redis) writeMembers(ctx context.Context, op string, conv uint64, members []string, nx bool) error {
	sorted, _, err := normalizeMembers(members)
	if err != nil {
		return err
	}
	arena := make([]byte, 0, len(r.prefix)+2+20+membersValueLen(sorted))
	arena, key := r.appendMembersKey(arena, conv)
	n := len(arena)
	arena = appendMembers(arena, sorted)
	val := arenaString(arena, n)
	ttlMs := max(r.cfg.MembersTTL.Milliseconds(), 1)
	m := r.members
	err = retryBroken(func() error { // SET of the same value is idempotent
		set := m.c.B().Set().Key(key).Value(val)
		if nx {
			return m.write(ctx, set.Nx().PxMilliseconds(ttlMs).Build(), key)
		}
		return m.write(ctx, set.PxMilliseconds(ttlMs).Build(), key)
	})
	if err != nil {
		return fmt.Errorf("routing: %s members %d: %w", op, conv, err)
	}
	return nil
}

// DeleteMembers implements MemberCache: DEL (see above).
func (r *Redis) DeleteMembers(ctx context.Context, conv uint64) error {
	_, key := r.appendMembersKey(make([]byte, 0, len(r.prefix)+2+20), conv)
	m := r.members
	if err := retryBroken(func() error { return m.write(ctx, m.c.B().Del().Key(key).Build(), key) }); err != nil {
		return fmt.Errorf("routing: delete members %d: %w", conv, err)
	}
	return nil
}

// write sends cmd, a write of key, pipelined with PTTL key on the caching
// client: when write returns, this process's cached copy of key, if it had
// one, has been invalidated (see above). A nil reply (SET NX that found the
// key) is a success.
func (m *redisMembers) write(ctx context.Context, cmd rueidis.Completed, key string) error {
	for _, res := range m.c.DoMulti(ctx, cmd, m.c.B().Pttl().Key(key).Build()) {
		if err := res.Error(); err != nil && !rueidis.IsRedisNil(err) {
			return err
		}
	}
	m.writes.Add(1)
	return nil
}

package routing

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// MemberCache caches conversation membership: conversation -> its members'
// user ids, sorted and without duplicates.
//
// The message store stays the source of truth; this is only a cache in
// front of it, and every caller must be able to fall back to the store on a
// miss. The protocol:
//
//   - A reader calls Members; on a miss it reads the store and calls
//     FillMembers with what it read.
//   - A writer that committed a membership change to the store calls
//     SetMembers with the new member list, after the commit.
//   - DeleteMembers drops an entry (conversation deleted, cache reset).
//
// FillMembers never replaces an entry and SetMembers always does. That is
// what keeps a slow reader from caching an old list: a reader that read the
// store before a change and fills after the writer's SetMembers finds the
// entry present and changes nothing; one that fills before it is
// overwritten by it. The one race left is DeleteMembers between a writer's
// SetMembers and an older reader's FillMembers, which lets the older list
// in: use DeleteMembers when a stale entry is harmless (the conversation is
// gone) or when no membership change can be in flight.
//
// A failed SetMembers leaves the entry in an unknown state: the previous
// list may stay cached (for Redis, until the entry's TTL). A writer must
// retry it (or DeleteMembers) until it succeeds for the change to reach
// readers.
//
// Implementations: Memory (in-process, exact) and Redis (shared by every
// process, read through client-side caching; see members_redis.go for when
// a change becomes visible to other processes).
type MemberCache interface {
	// Members returns conv's members (sorted, no duplicates) and true, or
	// nil and false when not cached. A cached empty list is returned as an
	// empty slice and true. The returned slice is shared with the cache
	// and other callers: callers must not modify it (its capacity is its
	// length, so appending to it copies). An error means the cache could
	// not be read; the caller reads the store instead.
	Members(ctx context.Context, conv uint64) ([]string, bool, error)
	// FillMembers caches members for conv unless conv already has an
	// entry, which it leaves as is. Callers fill with what they read from
	// the store after Members missed.
	FillMembers(ctx context.Context, conv uint64, members []string) error
	// SetMembers caches members for conv, replacing any entry. Callers set
	// the new list after the store committed a membership change.
	SetMembers(ctx context.Context, conv uint64, members []string) error
	// DeleteMembers removes conv's entry, if any.
	DeleteMembers(ctx context.Context, conv uint64) error
}

// MultiMemberCache is a MemberCache ability: reading and filling many
// conversations at once, in one round trip for a networked cache. A fanout
// batch of events for conversations it has not seen (every new
// conversation's first message) then costs two round trips, not two per
// conversation.
type MultiMemberCache interface {
	// MembersMulti does Members for every convs[i], setting out[i] and
	// found[i] (len(out) and len(found) are at least len(convs)). An error
	// means nothing was read; the caller reads the store instead.
	MembersMulti(ctx context.Context, convs []uint64, out [][]string, found []bool) error
	// FillMembersMulti does FillMembers(convs[i], members[i]) for every i.
	// An invalid list fails the whole call before anything is written.
	FillMembersMulti(ctx context.Context, convs []uint64, members [][]string) error
}

// Bounds of a cached member list, so that one entry's encoding stays a
// reasonable single Redis value (at most 1 + 100,000 * (2 + 255) bytes,
// about 26 MB; a typical group's is a few KB).
// FillMembers and SetMembers reject larger lists with ErrInvalidMembers for
// every implementation.
const (
	// MaxMembers is the most members (after removing duplicates) one
	// conversation's entry holds.
	MaxMembers = 100_000
	// MaxMemberIDLen is the longest user id, in bytes, an entry holds.
	MaxMemberIDLen = 255
)

// ErrInvalidMembers is wrapped by the error FillMembers and SetMembers
// return for a member list beyond MaxMembers or MaxMemberIDLen.
var ErrInvalidMembers = errors.New("routing: invalid member list")

// emptyMembers is what Members returns for a cached empty list: not nil, so
// that a caller printing or comparing it sees a list, and of capacity 0, so
// that an append by a careless caller never writes into shared memory.
var emptyMembers = []string{}

// normalizeMembers checks members against the bounds and returns them
// sorted and without duplicates. The result aliases members when members
// already is (the common case: stores keep members sorted); callers that
// keep the result must copy it then.
func normalizeMembers(members []string) (sorted []string, aliased bool, err error) {
	for _, m := range members {
		if len(m) > MaxMemberIDLen {
			return nil, false, fmt.Errorf("%w: member id %.16q... is %d bytes, longer than %d", ErrInvalidMembers, m, len(m), MaxMemberIDLen)
		}
	}
	sorted, aliased = members, true
	if !strictlySorted(members) {
		sorted = slices.Clip(slices.Compact(slices.Sorted(slices.Values(members))))
		aliased = false
	}
	if len(sorted) > MaxMembers {
		return nil, false, fmt.Errorf("%w: %d members, more than %d", ErrInvalidMembers, len(sorted), MaxMembers)
	}
	if len(sorted) == 0 {
		return emptyMembers, false, nil
	}
	return sorted, aliased, nil
}

func strictlySorted(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] >= s[i] {
			return false
		}
	}
	return true
}

// A member list's encoding, the value of its Redis entry:
//
//	byte 0   format version (1)
//	then, per member in ascending order:
//	uvarint  len(id)
//	         id
//
// The count is not stored: decoding walks the value twice, once to count
// and check it, once to slice the ids out of it (each member is a substring
// of the value, so decoding allocates only the []string). An empty list is
// the version byte alone, which is how a cached empty list differs from no
// entry.
const membersVersion = 1

// membersValueLen is the length of members' encoding.
func membersValueLen(members []string) int {
	n := 1
	for _, m := range members {
		n += uvarintLen(uint64(len(m))) + len(m)
	}
	return n
}

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

// appendMembers appends the encoding of members, which must be sorted,
// without duplicates and within the bounds (normalizeMembers).
func appendMembers(b []byte, members []string) []byte {
	b = append(b, membersVersion)
	for _, m := range members {
		b = binary.AppendUvarint(b, uint64(len(m)))
		b = append(b, m...)
	}
	return b
}

// decodeMembers decodes an encoding made by appendMembers. The members
// alias v. It reports false for anything appendMembers would not have
// written: another version, a truncated value, ids out of the bounds or out
// of order.
func decodeMembers(v string) ([]string, bool) {
	if len(v) == 0 || v[0] != membersVersion {
		return nil, false
	}
	n := 0
	for i := 1; i < len(v); n++ {
		l, k := uvarintString(v[i:])
		if k <= 0 || l > MaxMemberIDLen || l > uint64(len(v)-i-k) || n == MaxMembers {
			return nil, false
		}
		i += k + int(l)
	}
	if n == 0 {
		return emptyMembers, true
	}
	out := make([]string, n)
	for i, j := 1, 0; i < len(v); j++ {
		l, k := uvarintString(v[i:])
		i += k
		out[j] = v[i : i+int(l)]
		i += int(l)
		if j > 0 && out[j-1] >= out[j] {
			return nil, false
		}
	}
	return out, true
}

// ---- Memory ----

// memMembers is Memory's MemberCache state (the Memory.members field), with
// its own lock so that membership reads never wait on the registry's.
//
// It keeps every entry until DeleteMembers: there is no TTL and no
// eviction, because in the embedded default this is the only cache of the
// only process, so write-through keeps it exact, and evicting would open
// the delete-between-set-and-fill race described on MemberCache. Its size
// is that of the membership of the conversations read or changed since the
// process started.
type memMembers struct {
	mu    sync.RWMutex
	convs map[uint64][]string
}

var _ MemberCache = (*Memory)(nil)

// Members implements MemberCache.
func (m *Memory) Members(_ context.Context, conv uint64) ([]string, bool, error) {
	m.members.mu.RLock()
	ms, ok := m.members.convs[conv]
	m.members.mu.RUnlock()
	return ms, ok, nil
}

// FillMembers implements MemberCache.
func (m *Memory) FillMembers(_ context.Context, conv uint64, members []string) error {
	return m.members.put(conv, members, false)
}

// SetMembers implements MemberCache.
func (m *Memory) SetMembers(_ context.Context, conv uint64, members []string) error {
	return m.members.put(conv, members, true)
}

var _ MultiMemberCache = (*Memory)(nil)

// MembersMulti implements MultiMemberCache.
func (m *Memory) MembersMulti(_ context.Context, convs []uint64, out [][]string, found []bool) error {
	m.members.mu.RLock()
	defer m.members.mu.RUnlock()
	for i, conv := range convs {
		out[i], found[i] = m.members.convs[conv]
	}
	return nil
}

// FillMembersMulti implements MultiMemberCache.
func (m *Memory) FillMembersMulti(_ context.Context, convs []uint64, members [][]string) error {
	for i := range convs {
		if _, _, err := normalizeMembers(members[i]); err != nil {
			return err
		}
	}
	for i, conv := range convs {
		if err := m.members.put(conv, members[i], false); err != nil {
			return err
		}
	}
	return nil
}

// DeleteMembers implements MemberCache.
func (m *Memory) DeleteMembers(_ context.Context, conv uint64) error {
	m.members.mu.Lock()
	delete(m.members.convs, conv)
	m.members.mu.Unlock()
	return nil
}

func (mm *memMembers) put(conv uint64, members []string, replace bool) error {
	ms, aliased, err := normalizeMembers(members)
	if err != nil {
		return err
	}
	if aliased {
		ms = slices.Clip(slices.Clone(ms)) // the caller keeps its slice; readers share ours
	}
	mm.mu.Lock()
	defer mm.mu.Unlock()
	if _, ok := mm.convs[conv]; ok && !replace {
		return nil
	}
	mm.convs[conv] = ms
	return nil
}

package store

// Pebble is the embedded Store: one Pebble (LSM) database in a directory.
//
// Key layout. Every key starts with a 1-byte table prefix; the tables mirror
// the CQL tables of the ScyllaDB store (docs/storage.md). Integers in keys
// are 8-byte big-endian (byte order is numeric order); strings in keys are
// length-prefixed (uvarint length, then the bytes), so ("ab", "c") and
// ("a", "bc") are different keys.
//
//	table           key                                        value
//	0x01 convs      0x01 conv                                  convVal
//	0x02 members    0x02 conv str(user)                        (empty)
//	0x03 user_convs 0x03 str(user) conv                        (empty)
//	0x04 messages   0x04 conv seq                              msgVal
//	0x05 last_seq   0x05 conv                                  uvarint seq
//	0x06 dedupe     0x06 conv str(sender) str(client_msg_id)   uvarint seq
//	0x07 pointers   0x07 conv str(user) kind (1 byte)          uvarint seq
//	0x08 settings   0x08 str(user)                             settingsVal
//
// A prefix scan of 0x03 str(user) lists a user's conversations ascending; a
// range scan of 0x04 conv lists a conversation's messages in seq order. A
// dedupe entry holds only the seq: the message is read through its messages
// key. Pointer kinds are wire.ReceiptDelivered (1), wire.ReceiptRead (2) and
// PointerSeen (3).
//
// Values are compact binary: uvarints, and strings as uvarint length +
// bytes. Values with several fields start with a format byte:
//
//	convVal: 0x01 kind createdMS n str(member)*n      (members sorted, unique)
//	      or 0x02 kind createdMS n str(member)*n str(name) m str(admin)*m
//	msgVal:  0x01 messageID serverTimeMS kind str(sender) str(senderDevice)
//	         str(clientMsgID) body                    (body: all remaining bytes)
//	settingsVal: 0x01 presenceVisibility              (later fields appended;
//	         a shorter value reads them as their zero defaults)
//
// A conversation with no name and no admins (every direct one) is written
// in format 1, byte for byte what stores before groups wrote, so a binary
// from before groups can still read it; format 2 adds the group fields.
// Both decode; format 1 reads as an empty name and no admins.
//
// A message's ConvID and Seq come from its key.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/chatd-dev/chatd/wire"
)

// Table prefixes: the first byte of every key.
const (
	tConvs     byte = 0x01
	tMembers   byte = 0x02
	tUserConvs byte = 0x03
	tMessages  byte = 0x04
	tLastSeq   byte = 0x05
	tDedupe    byte = 0x06
	tPointers  byte = 0x07
	tSettings  byte = 0x08
)

// valueFormat is the first byte of multi-field values.
const valueFormat byte = 1

// convFormatGroup is the format byte of a conversation value that carries
// a name or admins (see the layout above); others use valueFormat.
const convFormatGroup byte = 2

// Defaults of PebbleOptions.
const (
	DefaultPebbleCacheSize    = 64 << 20 // bytes
	DefaultPebbleMemTableSize = 32 << 20 // bytes
)

// PebbleOptions tunes OpenPebble. The zero value means the defaults.
//
// Memory: Pebble holds up to two memtables (the active one and one being
// flushed; writes stall beyond that) plus the block cache, so the store's
// resident memory is about CacheSize + 2*MemTableSize (128 MiB with the
// defaults) plus open iterators and in-flight batches. Compactions run one
// at a time.
type PebbleOptions struct {
	// CacheSize is the block cache size in bytes for table blocks (0:
	// 64 MiB). Pebble charges its memtables to the same cache, so
	// OpenPebble sizes Pebble's cache at CacheSize + 2*MemTableSize: with
	// the cache only as big as the memtables, two of them reserve all of
	// it, no index or filter block stays cached, and every point read
	// (the dedupe lookup of each SEND) reads them from the files again.
	CacheSize int64
	// MemTableSize is the size of one memtable in bytes (0: 32 MiB).
	MemTableSize uint64
	// Logger receives Pebble's log lines (nil: Pebble's default, which
	// writes through the standard log package). Its Fatalf must not return.
	Logger pebble.Logger
}

// Pebble is the embedded Store. Create it with OpenPebble.
//
// Every method is safe for concurrent use. Commits of disjoint sets of
// conversations run concurrently (their read-modify-writes of last seqs
// and pointers never meet, and Pebble's commit pipeline covers concurrent
// commits with one WAL fsync); a Commit touching a conversation another
// Commit holds waits for it. EnsureConversation and Commits that create
// conversations are serialized by one mutex. Reads run concurrently with
// all of them and see each Commit atomically: all of a batch or none of it.
type Pebble struct {
	db  *pebble.DB
	dir string

	// mu guards closed: every method holds it shared for its whole call and
	// Close holds it exclusively, so Close waits for calls in progress
	// (Pebble must not be closed under an open iterator or a write).
	mu     sync.RWMutex
	closed bool

	ensureMu sync.Mutex // serializes EnsureConversation

	// busy holds the conversations of the Commits in progress, from before
	// their first read until their fsync returned; busyCond is signalled
	// when a Commit leaves.
	busyMu   sync.Mutex
	busyCond *sync.Cond
	busy     map[uint64]struct{}

	scratch sync.Pool // *commitScratch
}

// commitScratch is one Commit's working space, pooled.
type commitScratch struct {
	convs     []uint64          // the batch's conversations, unique
	lastSeqs  map[uint64]uint64 // conv -> highest seq in the batch
	firstSeqs map[uint64]uint64 // conv -> lowest seq in the batch
	ptrs      map[ptrID]uint64  // pointer -> its value including this batch
	buf       []byte
}

// batchConvs appends the unique conversations b writes to dst: the set a
// Commit holds. Updated groups are in it so that two Commits updating one
// group (or one creating it while another updates it) run one after the
// other, each reading the group the previous one wrote.
func batchConvs(dst []uint64, b *Batch) []uint64 {
	for i := range b.Messages {
		dst = append(dst, b.Messages[i].ConvID)
	}
	for i := range b.Pointers {
		dst = append(dst, b.Pointers[i].ConvID)
	}
	for i := range b.Conversations {
		dst = append(dst, b.Conversations[i].ID)
	}
	for i := range b.GroupUpdates {
		dst = append(dst, b.GroupUpdates[i].Conv.ID)
	}
	slices.Sort(dst)
	return slices.Compact(dst)
}

// hold waits until no other Commit holds any of convs, then holds them.
func (p *Pebble) hold(convs []uint64) {
	p.busyMu.Lock()
	defer p.busyMu.Unlock()
	for p.anyBusy(convs) {
		p.busyCond.Wait()
	}
	for _, c := range convs {
		p.busy[c] = struct{}{}
	}
}

func (p *Pebble) anyBusy(convs []uint64) bool {
	for _, c := range convs {
		if _, ok := p.busy[c]; ok {
			return true
		}
	}
	return false
}

func (p *Pebble) release(convs []uint64) {
	p.busyMu.Lock()
	for _, c := range convs {
		delete(p.busy, c)
	}
	p.busyMu.Unlock()
	p.busyCond.Broadcast()
}

type ptrID struct {
	conv uint64
	user string
	kind wire.ReceiptKind
}

var _ Store = (*Pebble)(nil)

// OpenPebble opens (creating it if needed) the Pebble store in dir. Only
// one Pebble may have dir open at a time (Pebble locks it).
func OpenPebble(dir string, opts PebbleOptions) (*Pebble, error) {
	return openPebble(dir, opts, nil)
}

// openPebble is OpenPebble on a given file system (nil: the OS's); tests
// use an in-memory one that can simulate power loss.
func openPebble(dir string, opts PebbleOptions, fs vfs.FS) (*Pebble, error) {
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultPebbleCacheSize
	}
	if opts.MemTableSize == 0 {
		opts.MemTableSize = DefaultPebbleMemTableSize
	}
	po := &pebble.Options{
		CacheSize:                   opts.CacheSize + 2*int64(opts.MemTableSize),
		MemTableSize:                opts.MemTableSize,
		MemTableStopWritesThreshold: 2,
		FormatMajorVersion:          pebble.FormatNewest,
		Logger:                      opts.Logger,
		FS:                          fs,
	}
	// Bloom filters make the point reads (last seq, dedupe, pointers,
	// conversations) skip tables that do not hold the key.
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("store: open pebble %s: %w", dir, err)
	}
	st := &Pebble{db: db, dir: dir, busy: make(map[uint64]struct{})}
	st.busyCond = sync.NewCond(&st.busyMu)
	st.scratch.New = func() any {
		return &commitScratch{lastSeqs: make(map[uint64]uint64), firstSeqs: make(map[uint64]uint64), ptrs: make(map[ptrID]uint64)}
	}
	return st, nil
}

// Close closes the database, waiting for calls in progress. It is
// idempotent: a second Close returns nil. Every other method returns
// ErrClosed after Close.
func (p *Pebble) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if err := p.db.Close(); err != nil {
		return fmt.Errorf("store: close pebble: %w", err)
	}
	return nil
}

// enter starts a method call: it checks ctx and that the store is open.
// On success the caller holds p.mu shared (keeping the store open) and
// must call p.mu.RUnlock when done.
func (p *Pebble) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// EnsureConversation implements Store.
func (p *Pebble) EnsureConversation(ctx context.Context, c Conversation) (Conversation, error) {
	if err := p.enter(ctx); err != nil {
		return Conversation{}, err
	}
	defer p.mu.RUnlock()
	p.ensureMu.Lock()
	defer p.ensureMu.Unlock()

	key := appendConvKey(nil, c.ID)
	old, found, err := p.conversation(key, c.ID)
	if err != nil || found {
		return old, err
	}
	c.Members = sortedUnique(c.Members)
	c.Admins = sortedUnique(c.Admins)

	b := p.db.NewBatch()
	defer b.Close()
	if err := b.Set(key, appendConvVal(nil, &c), nil); err != nil {
		return Conversation{}, fmt.Errorf("store: ensure conversation %d: %w", c.ID, err)
	}
	var kb []byte
	for _, m := range c.Members {
		kb = appendMemberKey(kb[:0], c.ID, m)
		if err := b.Set(kb, nil, nil); err != nil {
			return Conversation{}, fmt.Errorf("store: ensure conversation %d: %w", c.ID, err)
		}
		kb = appendUserConvKey(kb[:0], m, c.ID)
		if err := b.Set(kb, nil, nil); err != nil {
			return Conversation{}, fmt.Errorf("store: ensure conversation %d: %w", c.ID, err)
		}
	}
	if err := p.db.Apply(b, pebble.Sync); err != nil {
		return Conversation{}, fmt.Errorf("store: ensure conversation %d: %w", c.ID, err)
	}
	return c, nil
}

// sortedUnique returns a sorted copy of ids without duplicates (nil for
// nil): member and admin lists are stored that way, and the caller's slice
// is left alone.
func sortedUnique(ids []string) []string {
	s := slices.Clone(ids)
	slices.Sort(s)
	return slices.Compact(s)
}

// addConversations writes to pb every conversation of cs that does not
// exist yet (first one wins within cs) and returns the ones it wrote, by
// id (nil when none), as stored. The caller holds ensureMu.
func (p *Pebble) addConversations(pb *pebble.Batch, cs []Conversation) (map[uint64]Conversation, error) {
	var added map[uint64]Conversation
	var kb []byte
	for i := range cs {
		c := cs[i]
		if _, ok := added[c.ID]; ok {
			continue
		}
		key := appendConvKey(nil, c.ID)
		_, found, err := p.conversation(key, c.ID)
		if err != nil {
			return nil, fmt.Errorf("store: commit: %w", err)
		}
		if found {
			continue
		}
		c.Members = sortedUnique(c.Members)
		c.Admins = sortedUnique(c.Admins)
		if err := pb.Set(key, appendConvVal(nil, &c), nil); err != nil {
			return nil, fmt.Errorf("store: commit: conversation %d: %w", c.ID, err)
		}
		for _, m := range c.Members {
			kb = appendMemberKey(kb[:0], c.ID, m)
			if err := pb.Set(kb, nil, nil); err != nil {
				return nil, fmt.Errorf("store: commit: conversation %d: %w", c.ID, err)
			}
			kb = appendUserConvKey(kb[:0], m, c.ID)
			if err := pb.Set(kb, nil, nil); err != nil {
				return nil, fmt.Errorf("store: commit: conversation %d: %w", c.ID, err)
			}
		}
		if added == nil {
			added = map[uint64]Conversation{}
		}
		added[c.ID] = c
	}
	return added, nil
}

// applyGroupUpdates writes ups to pb in order. An update's group is looked
// up in groups first (the conversations this batch created, then the
// descriptions earlier updates wrote: so a later update sees an earlier
// one), then in the store; groups is updated as it goes (nil is fine).
// The caller holds the updated groups (hold), so what it reads from the
// store stays current until pb is applied.
//
// A missing or non-group conversation is ErrInvalid. Nothing is written
// then: every write of Commit goes to pb, which Commit applies only after
// all of them succeeded.
//
// Within one update Added are indexed before Removed are unindexed, so a
// user in both ends up without the group; a later update's index rows
// override an earlier one's (Pebble applies a batch's operations in order).
func (p *Pebble) applyGroupUpdates(pb *pebble.Batch, ups []GroupUpdate, groups map[uint64]Conversation) error {
	var kb []byte
	for i := range ups {
		u := &ups[i]
		id := u.Conv.ID
		base, ok := groups[id]
		if !ok {
			var err error
			base, ok, err = p.conversation(appendConvKey(kb[:0], id), id)
			if err != nil {
				return fmt.Errorf("store: commit: %w", err)
			}
		}
		if !ok {
			return fmt.Errorf("%w: group update %d: conversation %d does not exist", ErrInvalid, i, id)
		}
		if base.Kind != wire.ConvGroup {
			return fmt.Errorf("%w: group update %d: conversation %d is not a group (kind %d)", ErrInvalid, i, id, base.Kind)
		}
		next := Conversation{
			ID:        id,
			Kind:      base.Kind,
			CreatedMS: base.CreatedMS,
			Name:      u.Conv.Name,
			Members:   sortedUnique(u.Conv.Members),
			Admins:    sortedUnique(u.Conv.Admins),
		}
		if err := pb.Set(appendConvKey(kb[:0], id), appendConvVal(nil, &next), nil); err != nil {
			return fmt.Errorf("store: commit: group %d: %w", id, err)
		}
		for _, m := range u.Added {
			if err := pb.Set(appendMemberKey(kb[:0], id, m), nil, nil); err != nil {
				return fmt.Errorf("store: commit: group %d: %w", id, err)
			}
			if err := pb.Set(appendUserConvKey(kb[:0], m, id), nil, nil); err != nil {
				return fmt.Errorf("store: commit: group %d: %w", id, err)
			}
		}
		for _, m := range u.Removed {
			if err := pb.Delete(appendMemberKey(kb[:0], id, m), nil); err != nil {
				return fmt.Errorf("store: commit: group %d: %w", id, err)
			}
			if err := pb.Delete(appendUserConvKey(kb[:0], m, id), nil); err != nil {
				return fmt.Errorf("store: commit: group %d: %w", id, err)
			}
		}
		if groups == nil {
			groups = map[uint64]Conversation{}
		}
		groups[id] = next
	}
	return nil
}

// Conversation implements Store.
func (p *Pebble) Conversation(ctx context.Context, id uint64) (Conversation, error) {
	if err := p.enter(ctx); err != nil {
		return Conversation{}, err
	}
	defer p.mu.RUnlock()
	var kb [9]byte
	c, found, err := p.conversation(appendConvKey(kb[:0], id), id)
	if err == nil && !found {
		err = ErrNotFound
	}
	return c, err
}

func (p *Pebble) conversation(key []byte, id uint64) (Conversation, bool, error) {
	v, closer, err := p.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return Conversation{}, false, nil
	}
	if err != nil {
		return Conversation{}, false, fmt.Errorf("store: conversation %d: %w", id, err)
	}
	defer closer.Close()
	c, err := decodeConvVal(v) // copies
	if err != nil {
		return Conversation{}, false, fmt.Errorf("store: conversation %d: %w", id, err)
	}
	c.ID = id
	return c, true, nil
}

// UserConversations implements Store.
func (p *Pebble) UserConversations(ctx context.Context, user string) ([]uint64, error) {
	if err := p.enter(ctx); err != nil {
		return nil, err
	}
	defer p.mu.RUnlock()
	lower := appendUserConvPrefix(nil, user)
	it, err := p.db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: lower,
		UpperBound: prefixEnd(appendUserConvPrefix(nil, user)),
	})
	if err != nil {
		return nil, fmt.Errorf("store: user conversations: %w", err)
	}
	var ids []uint64
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != len(lower)+8 {
			it.Close()
			return nil, fmt.Errorf("store: user conversations: %w: key length %d", errCorrupt, len(k))
		}
		ids = append(ids, binary.BigEndian.Uint64(k[len(lower):]))
	}
	if err := closeIter(it); err != nil {
		return nil, fmt.Errorf("store: user conversations: %w", err)
	}
	return ids, nil
}

// LastSeq implements Store.
func (p *Pebble) LastSeq(ctx context.Context, conv uint64) (uint64, error) {
	if err := p.enter(ctx); err != nil {
		return 0, err
	}
	defer p.mu.RUnlock()
	var kb [9]byte
	seq, _, err := p.getUvarint(appendLastSeqKey(kb[:0], conv))
	if err != nil {
		return 0, fmt.Errorf("store: last seq of %d: %w", conv, err)
	}
	return seq, nil
}

// getUvarint reads a uvarint value; a missing key reads as (0, false).
func (p *Pebble) getUvarint(key []byte) (uint64, bool, error) {
	v, closer, err := p.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	n, m := binary.Uvarint(v)
	if m <= 0 || m != len(v) {
		return 0, false, fmt.Errorf("%w: bad uvarint value", errCorrupt)
	}
	return n, true, nil
}

// Commit implements Store. It applies one Pebble batch with Sync: when it
// returns nil the batch is in the fsynced WAL. Commits are serialized.
//
// Pebble makes a batch visible to readers as soon as it is in the memtable,
// which may be just before its WAL fsync completes: a reader can see a
// batch that a crash at that instant then loses. Deliver messages to users
// only after Commit returns.
func (p *Pebble) Commit(ctx context.Context, b *Batch) (err error) {
	defer func() {
		if err != nil {
			for i := range b.Pointers {
				b.Pointers[i].Advanced = false
			}
		}
	}()
	for i := range b.Pointers {
		b.Pointers[i].Advanced = false
	}
	if err := p.enter(ctx); err != nil {
		return err
	}
	defer p.mu.RUnlock()
	if len(b.Messages) == 0 && len(b.Pointers) == 0 && len(b.Conversations) == 0 && len(b.GroupUpdates) == 0 {
		return nil
	}
	for i := range b.Messages {
		if b.Messages[i].Seq == 0 {
			return fmt.Errorf("%w: message %d of conversation %d has seq 0", ErrInvalid, i, b.Messages[i].ConvID)
		}
	}
	for i := range b.Pointers {
		if k := b.Pointers[i].Kind; !ValidPointerKind(k) {
			return fmt.Errorf("%w: pointer update %d has unknown kind %d", ErrInvalid, i, k)
		}
	}

	sc := p.scratch.Get().(*commitScratch)
	defer p.scratch.Put(sc)
	clear(sc.lastSeqs)
	clear(sc.firstSeqs)
	clear(sc.ptrs)
	sc.convs = batchConvs(sc.convs[:0], b)
	p.hold(sc.convs)
	defer p.release(sc.convs)

	pb := p.db.NewBatch()
	defer pb.Close()
	var kb [16 + 2*binary.MaxVarintLen64 + 2*wire.MaxIDLen]byte
	var vb [binary.MaxVarintLen64]byte
	var created map[uint64]Conversation
	if len(b.Conversations) > 0 {
		// Lock order: the batch's conversations, then ensureMu
		// (EnsureConversation takes only ensureMu), so a conversation is
		// created once.
		p.ensureMu.Lock()
		defer p.ensureMu.Unlock()
		if created, err = p.addConversations(pb, b.Conversations); err != nil {
			return err
		}
	}
	// Group updates need no ensureMu: they only change conversations that
	// exist, which EnsureConversation leaves alone.
	if len(b.GroupUpdates) > 0 {
		if err := p.applyGroupUpdates(pb, b.GroupUpdates, created); err != nil {
			return err
		}
	}
	for i := range b.Messages {
		m := &b.Messages[i]
		sc.buf = appendMsgVal(sc.buf[:0], m)
		if err := pb.Set(appendMsgKey(kb[:0], m.ConvID, m.Seq), sc.buf, nil); err != nil {
			return fmt.Errorf("store: commit: %w", err)
		}
		if m.ClientMsgID != "" {
			k := appendDedupeKey(kb[:0], m.ConvID, m.Sender, m.ClientMsgID)
			if err := pb.Set(k, binary.AppendUvarint(vb[:0], m.Seq), nil); err != nil {
				return fmt.Errorf("store: commit: %w", err)
			}
		}
		if m.Seq > sc.lastSeqs[m.ConvID] {
			sc.lastSeqs[m.ConvID] = m.Seq
		}
		if f, ok := sc.firstSeqs[m.ConvID]; !ok || m.Seq < f {
			sc.firstSeqs[m.ConvID] = m.Seq
		}
	}
	for conv, seq := range sc.lastSeqs {
		k := appendLastSeqKey(kb[:0], conv)
		stored, _, err := p.getUvarint(k)
		if err != nil {
			return fmt.Errorf("store: commit: last seq of %d: %w", conv, err)
		}
		// The fence (ErrSeqConflict): checked under hold, so no other Commit
		// of this conversation lands between this read and the Apply.
		if first := sc.firstSeqs[conv]; first <= stored {
			return fmt.Errorf("%w: conversation %d: seq %d is not above the last seq %d", ErrSeqConflict, conv, first, stored)
		}
		if seq > stored {
			if err := pb.Set(k, binary.AppendUvarint(vb[:0], seq), nil); err != nil {
				return fmt.Errorf("store: commit: %w", err)
			}
		}
	}
	for i := range b.Pointers {
		u := &b.Pointers[i]
		id := ptrID{u.ConvID, u.User, u.Kind}
		k := appendPointerKey(kb[:0], u.ConvID, u.User, u.Kind)
		cur, ok := sc.ptrs[id]
		if !ok {
			cur, _, err = p.getUvarint(k)
			if err != nil {
				return fmt.Errorf("store: commit: pointer: %w", err)
			}
		}
		if u.Seq > cur {
			if err := pb.Set(k, binary.AppendUvarint(vb[:0], u.Seq), nil); err != nil {
				return fmt.Errorf("store: commit: %w", err)
			}
			cur = u.Seq
			u.Advanced = true
		}
		sc.ptrs[id] = cur
	}
	if !pb.Empty() {
		if err := p.db.Apply(pb, pebble.Sync); err != nil {
			return fmt.Errorf("store: commit: %w", err)
		}
	}
	return nil
}

// LookupClientMsg implements Store.
func (p *Pebble) LookupClientMsg(ctx context.Context, conv uint64, sender, clientMsgID string) (Message, bool, error) {
	if err := p.enter(ctx); err != nil {
		return Message{}, false, err
	}
	defer p.mu.RUnlock()
	return p.lookupClientMsg(nil, conv, sender, clientMsgID)
}

// LookupClientMsgs implements Store.
func (p *Pebble) LookupClientMsgs(ctx context.Context, keys []ClientMsgKey) ([]ClientMsgResult, error) {
	if err := p.enter(ctx); err != nil {
		return nil, err
	}
	defer p.mu.RUnlock()
	res := make([]ClientMsgResult, len(keys))
	var kb []byte
	for i, k := range keys {
		m, ok, err := p.lookupClientMsg(kb, k.ConvID, k.Sender, k.ClientMsgID)
		if err != nil {
			return nil, err
		}
		res[i] = ClientMsgResult{Message: m, Found: ok}
	}
	return res, nil
}

// lookupClientMsg is LookupClientMsg for a caller that entered the store;
// kb is scratch space for the keys (nil is fine).
func (p *Pebble) lookupClientMsg(kb []byte, conv uint64, sender, clientMsgID string) (Message, bool, error) {
	if clientMsgID == "" {
		return Message{}, false, nil
	}
	if n := 1 + 8 + 2*binary.MaxVarintLen64 + len(sender) + len(clientMsgID); cap(kb) < n {
		kb = make([]byte, 0, n)
	}
	kb = appendDedupeKey(kb[:0], conv, sender, clientMsgID)
	seq, found, err := p.getUvarint(kb)
	if err != nil || !found {
		if err != nil {
			err = fmt.Errorf("store: lookup client msg: %w", err)
		}
		return Message{}, false, err
	}
	v, closer, err := p.db.Get(appendMsgKey(kb[:0], conv, seq))
	if errors.Is(err, pebble.ErrNotFound) {
		// Cannot happen: the dedupe entry is written in the message's batch.
		return Message{}, false, fmt.Errorf("store: lookup client msg: %w: dedupe entry for missing seq %d of %d", errCorrupt, seq, conv)
	}
	if err != nil {
		return Message{}, false, fmt.Errorf("store: lookup client msg: %w", err)
	}
	defer closer.Close()
	m := Message{ConvID: conv, Seq: seq}
	// Seeded with the strings we looked up, the decoder reuses them.
	d := msgDecoder{sender: sender, cmid: clientMsgID}
	if err := d.decode(&m, v); err != nil {
		return Message{}, false, fmt.Errorf("store: lookup client msg: %w", err)
	}
	return m, true, nil
}

// MessagesAfter implements Store.
func (p *Pebble) MessagesAfter(ctx context.Context, conv, after uint64, limit int) ([]Message, error) {
	if err := p.enter(ctx); err != nil {
		return nil, err
	}
	defer p.mu.RUnlock()
	limit = ClampLimit(limit)
	if after == ^uint64(0) {
		return nil, nil
	}
	var lb, ub [17]byte
	it, err := p.db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: appendMsgKey(lb[:0], conv, after+1),
		UpperBound: prefixEnd(appendMsgPrefix(ub[:0], conv)),
	})
	if err != nil {
		return nil, fmt.Errorf("store: messages after: %w", err)
	}
	var msgs []Message
	var d msgDecoder
	for ok := it.First(); ok && len(msgs) < limit; ok = it.Next() {
		if msgs == nil {
			msgs = make([]Message, 0, min(limit, 64))
		}
		msgs = append(msgs, Message{})
		if err := d.decodeKV(&msgs[len(msgs)-1], it); err != nil {
			it.Close()
			return nil, fmt.Errorf("store: messages after: %w", err)
		}
	}
	if err := closeIter(it); err != nil {
		return nil, fmt.Errorf("store: messages after: %w", err)
	}
	return msgs, nil
}

// MessagesBefore implements Store.
func (p *Pebble) MessagesBefore(ctx context.Context, conv, before uint64, limit int) ([]Message, bool, error) {
	if err := p.enter(ctx); err != nil {
		return nil, false, err
	}
	defer p.mu.RUnlock()
	limit = ClampLimit(limit)
	if before == 1 {
		return nil, false, nil
	}
	var lb, ub [17]byte
	lower := appendMsgPrefix(lb[:0], conv)
	var upper []byte
	if before == 0 {
		upper = prefixEnd(appendMsgPrefix(ub[:0], conv))
	} else {
		upper = appendMsgKey(ub[:0], conv, before)
	}
	it, err := p.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, false, fmt.Errorf("store: messages before: %w", err)
	}
	var msgs []Message
	var d msgDecoder
	ok := it.Last()
	for ; ok && len(msgs) < limit; ok = it.Prev() {
		if msgs == nil {
			msgs = make([]Message, 0, min(limit, 64))
		}
		msgs = append(msgs, Message{})
		if err := d.decodeKV(&msgs[len(msgs)-1], it); err != nil {
			it.Close()
			return nil, false, fmt.Errorf("store: messages before: %w", err)
		}
	}
	hasMore := ok // positioned on an older message we did not take
	if err := closeIter(it); err != nil {
		return nil, false, fmt.Errorf("store: messages before: %w", err)
	}
	slices.Reverse(msgs)
	return msgs, hasMore, nil
}

// Pointers implements Store.
func (p *Pebble) Pointers(ctx context.Context, conv uint64, user string) (Pointers, error) {
	if err := p.enter(ctx); err != nil {
		return Pointers{}, err
	}
	defer p.mu.RUnlock()
	var kb [64]byte
	var ps Pointers
	var err error
	ps.Delivered, _, err = p.getUvarint(appendPointerKey(kb[:0], conv, user, wire.ReceiptDelivered))
	if err != nil {
		return Pointers{}, fmt.Errorf("store: pointers: %w", err)
	}
	ps.Read, _, err = p.getUvarint(appendPointerKey(kb[:0], conv, user, wire.ReceiptRead))
	if err != nil {
		return Pointers{}, fmt.Errorf("store: pointers: %w", err)
	}
	ps.Seen, _, err = p.getUvarint(appendPointerKey(kb[:0], conv, user, PointerSeen))
	if err != nil {
		return Pointers{}, fmt.Errorf("store: pointers: %w", err)
	}
	return ps, nil
}

// UserSettings implements Store.
func (p *Pebble) UserSettings(ctx context.Context, user string) (Settings, error) {
	if err := p.enter(ctx); err != nil {
		return Settings{}, err
	}
	defer p.mu.RUnlock()
	v, closer, err := p.db.Get(appendStr([]byte{tSettings}, user))
	if errors.Is(err, pebble.ErrNotFound) {
		return Settings{}, nil
	}
	if err != nil {
		return Settings{}, fmt.Errorf("store: settings: %w", err)
	}
	defer closer.Close()
	var st Settings
	if len(v) < 1 || v[0] != valueFormat {
		return Settings{}, fmt.Errorf("store: settings of %q: %w", user, errCorrupt)
	}
	if len(v) > 1 {
		st.PresenceVisibility = Visibility(v[1])
	}
	return st, nil
}

// SetUserSettings implements Store.
func (p *Pebble) SetUserSettings(ctx context.Context, user string, st Settings) error {
	if !st.PresenceVisibility.Valid() {
		return fmt.Errorf("store: presence visibility %d: %w", st.PresenceVisibility, ErrInvalid)
	}
	if err := p.enter(ctx); err != nil {
		return err
	}
	defer p.mu.RUnlock()
	if err := p.db.Set(appendStr([]byte{tSettings}, user), []byte{valueFormat, byte(st.PresenceVisibility)}, pebble.Sync); err != nil {
		return fmt.Errorf("store: set settings: %w", err)
	}
	return nil
}

// closeIter closes it, returning its error or Close's.
func closeIter(it *pebble.Iterator) error {
	err := it.Error()
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	return err
}

// errCorrupt marks undecodable stored data.
var errCorrupt = errors.New("corrupt value")

// Keys.

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendConvKey(b []byte, conv uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, tConvs), conv)
}

func appendMemberKey(b []byte, conv uint64, user string) []byte {
	return appendStr(binary.BigEndian.AppendUint64(append(b, tMembers), conv), user)
}

func appendUserConvPrefix(b []byte, user string) []byte {
	return appendStr(append(b, tUserConvs), user)
}

func appendUserConvKey(b []byte, user string, conv uint64) []byte {
	return binary.BigEndian.AppendUint64(appendUserConvPrefix(b, user), conv)
}

func appendMsgPrefix(b []byte, conv uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, tMessages), conv)
}

func appendMsgKey(b []byte, conv, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendMsgPrefix(b, conv), seq)
}

func appendLastSeqKey(b []byte, conv uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, tLastSeq), conv)
}

func appendDedupeKey(b []byte, conv uint64, sender, clientMsgID string) []byte {
	b = binary.BigEndian.AppendUint64(append(b, tDedupe), conv)
	return appendStr(appendStr(b, sender), clientMsgID)
}

func appendPointerKey(b []byte, conv uint64, user string, kind wire.ReceiptKind) []byte {
	b = binary.BigEndian.AppendUint64(append(b, tPointers), conv)
	return append(appendStr(b, user), byte(kind))
}

// prefixEnd returns the smallest key greater than every key with the given
// prefix, modifying prefix in place (it is never all 0xff: it starts with
// a table byte).
func prefixEnd(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] != 0xff {
			prefix[i]++
			return prefix[:i+1]
		}
	}
	panic("store: prefixEnd of all-0xff prefix")
}

// Values.

// appendConvVal encodes c (its ID is in the key): format 1 when it has no
// name and no admins, format 2 otherwise (see the layout at the top).
func appendConvVal(b []byte, c *Conversation) []byte {
	group := c.Name != "" || len(c.Admins) > 0
	if group {
		b = append(b, convFormatGroup)
	} else {
		b = append(b, valueFormat)
	}
	b = binary.AppendUvarint(b, uint64(c.Kind))
	b = binary.AppendUvarint(b, c.CreatedMS)
	b = appendStrs(b, c.Members)
	if group {
		b = appendStr(b, c.Name)
		b = appendStrs(b, c.Admins)
	}
	return b
}

// appendStrs appends uvarint(len(ss)) and each string.
func appendStrs(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendStr(b, s)
	}
	return b
}

// decodeConvVal decodes both formats; nothing in the result aliases v.
// ID is left zero (it is in the key).
func decodeConvVal(v []byte) (Conversation, error) {
	r := reader{b: v}
	f := r.byte()
	if r.err == nil && f != valueFormat && f != convFormatGroup {
		return Conversation{}, fmt.Errorf("%w: conversation format %d", errCorrupt, f)
	}
	var c Conversation
	kind := r.uvarint()
	c.Kind = wire.ConvKind(kind)
	c.CreatedMS = r.uvarint()
	c.Members = r.strs()
	if f == convFormatGroup {
		c.Name = string(r.str())
		c.Admins = r.strs()
	}
	if r.err != nil || kind > 0xff || len(r.b) != 0 {
		return Conversation{}, fmt.Errorf("%w: conversation", errCorrupt)
	}
	return c, nil
}

func appendMsgVal(b []byte, m *Message) []byte {
	b = append(b, valueFormat)
	b = binary.AppendUvarint(b, m.MessageID)
	b = binary.AppendUvarint(b, m.ServerTimeMS)
	b = binary.AppendUvarint(b, uint64(m.Kind))
	b = appendStr(b, m.Sender)
	b = appendStr(b, m.SenderDevice)
	b = appendStr(b, m.ClientMsgID)
	return append(b, m.Body...)
}

// msgDecoder decodes message values, copying them out of Pebble's memory.
// It reuses the previous message's Sender and SenderDevice strings when
// they repeat (common within a page), and cmid when ClientMsgID equals it,
// saving allocations. Strings are immutable, so sharing them is safe.
type msgDecoder struct {
	sender, device, cmid string
}

// decodeKV decodes the message at the iterator's position.
func (d *msgDecoder) decodeKV(m *Message, it *pebble.Iterator) error {
	k := it.Key()
	if len(k) != 17 {
		return fmt.Errorf("%w: message key length %d", errCorrupt, len(k))
	}
	m.ConvID = binary.BigEndian.Uint64(k[1:])
	m.Seq = binary.BigEndian.Uint64(k[9:])
	v, err := it.ValueAndErr()
	if err != nil {
		return err
	}
	return d.decode(m, v)
}

// decode fills m's value fields from v; m.ConvID and m.Seq are set by the
// caller. Nothing in m aliases v.
func (d *msgDecoder) decode(m *Message, v []byte) error {
	r := reader{b: v}
	if f := r.byte(); f != valueFormat && r.err == nil {
		return fmt.Errorf("%w: message format %d", errCorrupt, f)
	}
	m.MessageID = r.uvarint()
	m.ServerTimeMS = r.uvarint()
	m.Kind = wire.MsgKind(r.uvarint())
	if s := r.str(); string(s) == d.sender { // no allocation for the compare
		m.Sender = d.sender
	} else {
		m.Sender = string(s)
		d.sender = m.Sender
	}
	if s := r.str(); string(s) == d.device {
		m.SenderDevice = d.device
	} else {
		m.SenderDevice = string(s)
		d.device = m.SenderDevice
	}
	if s := r.str(); string(s) == d.cmid {
		m.ClientMsgID = d.cmid
	} else {
		m.ClientMsgID = string(s)
	}
	if r.err != nil {
		return fmt.Errorf("%w: message %d/%d", errCorrupt, m.ConvID, m.Seq)
	}
	if len(r.b) > 0 {
		m.Body = slices.Clone(r.b)
	} else {
		m.Body = nil
	}
	return nil
}

// reader decodes values; the first error sticks and zeroes later reads.
type reader struct {
	b   []byte
	err error
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errCorrupt
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	n, m := binary.Uvarint(r.b)
	if m <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[m:]
	return n
}

// strs reads a uvarint count and that many strings, copied (nil for none).
func (r *reader) strs() []string {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)) { // each string takes >= 1 byte
		r.err = errCorrupt
	}
	if r.err != nil || n == 0 {
		return nil
	}
	ss := make([]string, 0, n)
	for range n {
		ss = append(ss, string(r.str()))
	}
	return ss
}

// str returns the next length-prefixed string, aliasing the input.
func (r *reader) str() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

// Package scylla is the store.Store for clusters of several machines: it
// keeps the store in ScyllaDB or Cassandra through gocqlx.
//
// Why gocqlx v3 with the scylladb/gocql fork (go.mod replaces
// github.com/gocql/gocql with github.com/scylladb/gocql): v3 is the
// maintained line of gocqlx, and it is built and tested against that fork,
// which adds shard-aware routing on ScyllaDB and still speaks plain CQL to
// Cassandra. gocqlx v2 pins the older upstream driver.
//
// Layout (migrations/; docs/storage.md): messages are partitioned by
// (conv_id, bucket = seq / 1000) and clustered by seq DESC; members, and
// a group's name and admins (0002_groups.cql), by conversation, and
// conversations by user; pointers per member; client_msg_id dedupe rows
// with a TTL; the last seq per conversation.
//
// Consistency: every read and write is QUORUM (Options.Consistency), and
// conversation creation is a lightweight transaction, so a conversation is
// created once however many cores race for it. A group update rewrites the
// description with a lightweight transaction too (IF kind = group): Paxos
// then orders it after the creating one, which a plain write with a
// client timestamp would not be guaranteed to be.
//
// How Commit keeps store.Store's contract without cross-partition
// transactions: it writes the messages, then their dedupe rows, then the
// conversation's last seq, then the pointers. Readers (MessagesAfter,
// MessagesBefore, LookupClientMsg) show nothing above the last seq, so a
// Commit that failed part-way is invisible until the caller's retry of the
// same batch completes it. The last seq and the pointers are written USING
// TIMESTAMP seq, which makes the highest value win whatever order writes
// land in: neither ever moves backwards.
//
// Every check that can refuse a batch (ErrInvalid, ErrSeqConflict) reads
// before Commit's first write, so a refused batch writes nothing. Group
// updates are not hidden like messages are: Commit writes the batch's new
// conversations, then the updated groups' descriptions and their
// user_conversations rows, then the messages, so once the message that
// announces an update is visible, the update has landed; but a reader can
// see an update of a Commit that fails later, until the caller's retry
// writes the same values again (they are idempotent). The index rows are
// plain writes, and between two cores whose clocks disagree an add and a
// remove of one user in quick succession may resolve either way.
//
// The contract suite (core/store/storetest) runs against a cluster when
// CHAT_SCYLLA_HOSTS names one; no CQL server can run on the development
// machine (docs/operations.md).
package scylla

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/gocql/gocql"
	"github.com/scylladb/gocqlx/v3"
	"github.com/scylladb/gocqlx/v3/migrate"
	"golang.org/x/sync/errgroup"

	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

//go:embed migrations/*.cql
var migrations embed.FS

// BucketSize is the number of seqs in one messages partition.
const BucketSize = 1000

// bucket is the messages partition of seq.
func bucket(seq uint64) int64 { return int64(seq / BucketSize) }

// Options configures Open. Hosts and Keyspace are required.
type Options struct {
	Hosts    []string
	Keyspace string
	// Replication is the keyspace's replication factor when Open creates
	// it (default 3; NetworkTopologyStrategy). An existing keyspace is left
	// as it is.
	Replication int
	// Consistency of every read and write (default QUORUM).
	Consistency gocql.Consistency
	// DedupeTTL is how long a client_msg_id is remembered (default 7
	// days): a client resending after that gets a new message.
	DedupeTTL time.Duration
	// Timeout of one query (default 5s).
	Timeout time.Duration
	// Username and Password authenticate when set.
	Username, Password string
}

var keyspaceName = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_]{0,47}$`)

// Store is a store.Store in ScyllaDB or Cassandra.
type Store struct {
	s   gocqlx.Session
	ttl int // dedupe TTL, seconds

	// mu is held shared by calls in progress, exclusively by Close.
	mu     sync.RWMutex
	closed bool
}

var _ store.Store = (*Store)(nil)

// Open connects, creates the keyspace if it does not exist, and applies the
// migrations that have not been applied yet.
func Open(ctx context.Context, o Options) (*Store, error) {
	if len(o.Hosts) == 0 {
		return nil, errors.New("scylla: no hosts")
	}
	if !keyspaceName.MatchString(o.Keyspace) {
		return nil, fmt.Errorf("scylla: bad keyspace name %q", o.Keyspace)
	}
	if o.Replication <= 0 {
		o.Replication = 3
	}
	if o.Consistency == 0 {
		o.Consistency = gocql.Quorum
	}
	if o.DedupeTTL <= 0 {
		o.DedupeTTL = 7 * 24 * time.Hour
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	cluster := func(keyspace string) *gocql.ClusterConfig {
		c := gocql.NewCluster(o.Hosts...)
		c.Keyspace = keyspace
		c.Consistency = o.Consistency
		c.Timeout = o.Timeout
		if o.Username != "" {
			c.Authenticator = gocql.PasswordAuthenticator{Username: o.Username, Password: o.Password}
		}
		return c
	}
	boot, err := gocqlx.WrapSession(cluster("").CreateSession())
	if err != nil {
		return nil, fmt.Errorf("scylla: connect: %w", err)
	}
	err = boot.ContextQuery(ctx, fmt.Sprintf(
		`CREATE KEYSPACE IF NOT EXISTS %s WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': %d}`,
		o.Keyspace, o.Replication), nil).ExecRelease()
	boot.Close()
	if err != nil {
		return nil, fmt.Errorf("scylla: create keyspace: %w", err)
	}
	s, err := gocqlx.WrapSession(cluster(o.Keyspace).CreateSession())
	if err != nil {
		return nil, fmt.Errorf("scylla: connect to %s: %w", o.Keyspace, err)
	}
	if err := migrate.FromFS(ctx, s, migrations); err != nil {
		s.Close()
		return nil, fmt.Errorf("scylla: migrate: %w", err)
	}
	return &Store{s: s, ttl: int(o.DedupeTTL / time.Second)}, nil
}

func (st *Store) enter() error {
	st.mu.RLock()
	if st.closed {
		st.mu.RUnlock()
		return store.ErrClosed
	}
	return nil
}

func (st *Store) exit() { st.mu.RUnlock() }

// Close waits for calls in progress and closes the session. Idempotent.
func (st *Store) Close() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.closed {
		st.closed = true
		st.s.Close()
	}
	return nil
}

func (st *Store) q(ctx context.Context, stmt string, args ...any) *gocqlx.Queryx {
	return st.s.ContextQuery(ctx, stmt, nil).Bind(args...)
}

type convRow struct {
	Kind      int
	Members   []string
	CreatedMS int64
	Name      string   // null (before 0002_groups.cql, or a direct conversation) reads as ""
	Admins    []string // null reads as nil
}

// sortedUnique returns a sorted copy of ids without duplicates: member and
// admin lists are stored that way, and the caller's slice is left alone.
func sortedUnique(ids []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(ids)))
}

// EnsureConversation implements store.Store with a lightweight
// transaction. The user index is written for the stored members on every
// call (idempotent), which also repairs an index a crash left incomplete.
func (st *Store) EnsureConversation(ctx context.Context, c store.Conversation) (store.Conversation, error) {
	if err := st.enter(); err != nil {
		return store.Conversation{}, err
	}
	defer st.exit()
	return st.ensure(ctx, c)
}

func (st *Store) ensure(ctx context.Context, c store.Conversation) (store.Conversation, error) {
	members, admins := sortedUnique(c.Members), sortedUnique(c.Admins)
	// A failed IF NOT EXISTS answers with the existing row; it is read
	// again below in a known column order instead.
	applied, err := st.q(ctx, `INSERT INTO conversations (conv_id, kind, members, created_ms, name, admins) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS`,
		int64(c.ID), int(c.Kind), members, int64(c.CreatedMS), c.Name, admins).
		Query.MapScanCAS(map[string]any{})
	if err != nil {
		return store.Conversation{}, fmt.Errorf("scylla: ensure conversation %d: %w", c.ID, err)
	}
	out := store.Conversation{ID: c.ID, Kind: c.Kind, Members: members, CreatedMS: c.CreatedMS, Name: c.Name, Admins: admins}
	if !applied {
		if out, err = st.conversation(ctx, c.ID); err != nil {
			return store.Conversation{}, err
		}
	}
	// Unlogged: each row is its own partition and idempotent.
	for from := 0; from < len(out.Members); from += maxBatch {
		b := st.s.ContextBatch(ctx, gocql.UnloggedBatch)
		for _, m := range out.Members[from:min(from+maxBatch, len(out.Members))] {
			b.Query(`INSERT INTO user_conversations (user_id, conv_id) VALUES (?, ?)`, m, int64(out.ID))
		}
		if err := st.s.ExecuteBatch(b); err != nil {
			return store.Conversation{}, fmt.Errorf("scylla: index conversation %d: %w", c.ID, err)
		}
	}
	return out, nil
}

// Conversation implements store.Store.
func (st *Store) Conversation(ctx context.Context, id uint64) (store.Conversation, error) {
	if err := st.enter(); err != nil {
		return store.Conversation{}, err
	}
	defer st.exit()
	return st.conversation(ctx, id)
}

func (st *Store) conversation(ctx context.Context, id uint64) (store.Conversation, error) {
	var r convRow
	err := st.q(ctx, `SELECT kind, members, created_ms, name, admins FROM conversations WHERE conv_id = ?`, int64(id)).
		Query.Scan(&r.Kind, &r.Members, &r.CreatedMS, &r.Name, &r.Admins)
	if errors.Is(err, gocql.ErrNotFound) {
		return store.Conversation{}, store.ErrNotFound
	}
	if err != nil {
		return store.Conversation{}, fmt.Errorf("scylla: conversation %d: %w", id, err)
	}
	slices.Sort(r.Members)
	slices.Sort(r.Admins)
	return store.Conversation{
		ID: id, Kind: wire.ConvKind(r.Kind), Members: r.Members, CreatedMS: uint64(r.CreatedMS),
		Name: r.Name, Admins: r.Admins,
	}, nil
}

// UserConversations implements store.Store.
func (st *Store) UserConversations(ctx context.Context, user string) ([]uint64, error) {
	if err := st.enter(); err != nil {
		return nil, err
	}
	defer st.exit()
	iter := st.q(ctx, `SELECT conv_id FROM user_conversations WHERE user_id = ?`, user).Query.Iter()
	var ids []uint64
	var id int64
	for iter.Scan(&id) {
		ids = append(ids, uint64(id))
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("scylla: user conversations: %w", err)
	}
	return ids, nil
}

// LastSeq implements store.Store.
func (st *Store) LastSeq(ctx context.Context, conv uint64) (uint64, error) {
	if err := st.enter(); err != nil {
		return 0, err
	}
	defer st.exit()
	return st.lastSeq(ctx, conv)
}

func (st *Store) lastSeq(ctx context.Context, conv uint64) (uint64, error) {
	var last int64
	err := st.q(ctx, `SELECT last_seq FROM conv_meta WHERE conv_id = ?`, int64(conv)).Query.Scan(&last)
	if errors.Is(err, gocql.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("scylla: last seq of %d: %w", conv, err)
	}
	return uint64(last), nil
}

// maxBatch bounds the statements of one logged batch: Scylla and Cassandra
// warn about large batches and refuse them past batch_size_fail_threshold
// (50 KiB by default).
const maxBatch = 20

// Commit implements store.Store; the package comment says how a failure
// part-way stays invisible.
func (st *Store) Commit(ctx context.Context, b *store.Batch) error {
	for i := range b.Pointers {
		b.Pointers[i].Advanced = false
	}
	if err := st.enter(); err != nil {
		return err
	}
	defer st.exit()
	for i := range b.Messages {
		if b.Messages[i].Seq == 0 {
			return fmt.Errorf("%w: message %d of conversation %d has seq 0", store.ErrInvalid, i, b.Messages[i].ConvID)
		}
	}
	for i := range b.Pointers {
		if k := b.Pointers[i].Kind; !store.ValidPointerKind(k) {
			return fmt.Errorf("%w: pointer update %d has unknown kind %d", store.ErrInvalid, i, k)
		}
	}
	// The reads that can refuse the batch, before its first write.
	if err := st.checkFence(ctx, b.Messages); err != nil {
		return err
	}
	var groups groupPlan
	if len(b.GroupUpdates) > 0 {
		var err error
		if groups, err = planGroupUpdates(b.GroupUpdates, func(id uint64) (store.Conversation, bool, error) {
			return st.groupBase(ctx, id, b.Conversations)
		}); err != nil {
			return err
		}
	}
	for _, c := range b.Conversations {
		if _, err := st.ensure(ctx, c); err != nil {
			return fmt.Errorf("scylla: commit: %w", err)
		}
	}
	if err := st.writeGroups(ctx, groups); err != nil {
		return err
	}
	// Messages, then dedupe rows, then the last seqs.
	last := map[uint64]uint64{}
	if err := st.batched(ctx, len(b.Messages), func(bt *gocqlx.Batch, i int) {
		m := &b.Messages[i]
		bt.Query(`INSERT INTO messages (conv_id, bucket, seq, message_id, server_ms, sender, sender_device, client_msg_id, kind, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			int64(m.ConvID), bucket(m.Seq), int64(m.Seq), int64(m.MessageID), int64(m.ServerTimeMS),
			m.Sender, m.SenderDevice, m.ClientMsgID, int64(m.Kind), m.Body)
		last[m.ConvID] = max(last[m.ConvID], m.Seq)
	}); err != nil {
		return fmt.Errorf("scylla: commit messages: %w", err)
	}
	var dedupe []*store.Message
	for i := range b.Messages {
		if b.Messages[i].ClientMsgID != "" {
			dedupe = append(dedupe, &b.Messages[i])
		}
	}
	if err := st.batched(ctx, len(dedupe), func(bt *gocqlx.Batch, i int) {
		m := dedupe[i]
		bt.Query(`INSERT INTO client_msgs (conv_id, sender, client_msg_id, seq) VALUES (?, ?, ?, ?) USING TTL ?`,
			int64(m.ConvID), m.Sender, m.ClientMsgID, int64(m.Seq), st.ttl)
	}); err != nil {
		return fmt.Errorf("scylla: commit dedupe: %w", err)
	}
	convs := make([]uint64, 0, len(last))
	for c := range last {
		convs = append(convs, c)
	}
	if err := st.batched(ctx, len(convs), func(bt *gocqlx.Batch, i int) {
		bt.Query(`UPDATE conv_meta USING TIMESTAMP ? SET last_seq = ? WHERE conv_id = ?`,
			int64(last[convs[i]]), int64(last[convs[i]]), int64(convs[i]))
	}); err != nil {
		return fmt.Errorf("scylla: commit last seq: %w", err)
	}
	return st.commitPointers(ctx, b.Pointers)
}

// groupPlan is what a batch's GroupUpdates write, net: each updated
// group's last description, and one user_conversations change per (user,
// group). Net, because the statements of one logged batch share a
// timestamp and Scylla resolves a tie between an insert and a delete of
// one row by letting the delete win whatever the order: writing an add,
// then a remove, then an add of one user would leave the user out.
type groupPlan struct {
	convs []store.Conversation // in the order of each group's first update
	index []indexChange        // in the order of each (user, group)'s first mention
}

// indexChange is a user_conversations row to insert (add) or delete.
type indexChange struct {
	user string
	conv uint64
	add  bool
}

// planGroupUpdates applies ups in order, as store.Batch defines: base
// returns a group as it is before the batch's updates (after its
// Conversations); each later update of a group starts from the previous
// one's description. A missing or non-group conversation is
// store.ErrInvalid. Within one update, Added apply before Removed (a user
// in both ends up without the group), as in the Pebble store.
func planGroupUpdates(ups []store.GroupUpdate, base func(id uint64) (store.Conversation, bool, error)) (groupPlan, error) {
	var p groupPlan
	convAt := map[uint64]int{}
	type rowKey struct {
		user string
		conv uint64
	}
	rowAt := map[rowKey]int{}
	set := func(user string, conv uint64, add bool) {
		k := rowKey{user, conv}
		if i, ok := rowAt[k]; ok {
			p.index[i].add = add
			return
		}
		rowAt[k] = len(p.index)
		p.index = append(p.index, indexChange{user: user, conv: conv, add: add})
	}
	for i := range ups {
		u := &ups[i]
		id := u.Conv.ID
		var cur store.Conversation
		at, seen := convAt[id]
		if seen {
			cur = p.convs[at]
		} else {
			c, ok, err := base(id)
			if err != nil {
				return groupPlan{}, fmt.Errorf("scylla: commit: %w", err)
			}
			if !ok {
				return groupPlan{}, fmt.Errorf("scylla: commit: %w: group update %d: conversation %d does not exist", store.ErrInvalid, i, id)
			}
			cur = c
		}
		if cur.Kind != wire.ConvGroup {
			return groupPlan{}, fmt.Errorf("scylla: commit: %w: group update %d: conversation %d is not a group (kind %d)", store.ErrInvalid, i, id, cur.Kind)
		}
		next := store.Conversation{
			ID: id, Kind: cur.Kind, CreatedMS: cur.CreatedMS,
			Name: u.Conv.Name, Members: sortedUnique(u.Conv.Members), Admins: sortedUnique(u.Conv.Admins),
		}
		if seen {
			p.convs[at] = next
		} else {
			convAt[id] = len(p.convs)
			p.convs = append(p.convs, next)
		}
		for _, m := range u.Added {
			set(m, id, true)
		}
		for _, m := range u.Removed {
			set(m, id, false)
		}
	}
	return p, nil
}

// groupBase is planGroupUpdates' base: the stored conversation, or when
// there is none the first of the batch's Conversations with that id (the
// one ensure will create).
func (st *Store) groupBase(ctx context.Context, id uint64, creates []store.Conversation) (store.Conversation, bool, error) {
	c, err := st.conversation(ctx, id)
	if err == nil {
		return c, true, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return store.Conversation{}, false, err
	}
	for _, c := range creates {
		if c.ID == id {
			c.Members, c.Admins = sortedUnique(c.Members), sortedUnique(c.Admins)
			return c, true, nil
		}
	}
	return store.Conversation{}, false, nil
}

// writeGroups writes a plan: each description by a lightweight
// transaction conditioned on the row being a group, then the index rows
// in logged batches.
func (st *Store) writeGroups(ctx context.Context, p groupPlan) error {
	for _, c := range p.convs {
		applied, err := st.q(ctx, `UPDATE conversations SET name = ?, members = ?, admins = ? WHERE conv_id = ? IF kind = ?`,
			c.Name, c.Members, c.Admins, int64(c.ID), int(wire.ConvGroup)).
			Query.MapScanCAS(map[string]any{})
		if err != nil {
			return fmt.Errorf("scylla: commit: group %d: %w", c.ID, err)
		}
		if !applied {
			// planGroupUpdates saw a group, and conversations are never
			// deleted nor change kind: this is a group the batch meant to
			// create that another writer created first as something else.
			// Not ErrInvalid: the batch's conversations are written.
			return fmt.Errorf("scylla: commit: group %d: not a group when written", c.ID)
		}
	}
	if err := st.batched(ctx, len(p.index), func(bt *gocqlx.Batch, i int) {
		r := &p.index[i]
		if r.add {
			bt.Query(`INSERT INTO user_conversations (user_id, conv_id) VALUES (?, ?)`, r.user, int64(r.conv))
		} else {
			bt.Query(`DELETE FROM user_conversations WHERE user_id = ? AND conv_id = ?`, r.user, int64(r.conv))
		}
	}); err != nil {
		return fmt.Errorf("scylla: commit: group index: %w", err)
	}
	return nil
}

// checkFence returns store.ErrSeqConflict when a message's seq is not above
// its conversation's last seq (read at QUORUM).
//
// Unlike the Pebble store, where the check and the write are one atomic
// step, this is a read before the writes: a zombie core that reads the last
// seq just before the new owner's commit updates it still passes, and its
// messages then overwrite the new owner's. Closing that window needs a
// lightweight transaction per commit (a conditional update of conv_meta
// before the messages, with an owner epoch so a dead writer's half-written
// rows can be taken over), which this adapter does not do: with no CQL
// server here it could not be tested (docs/storage.md).
func (st *Store) checkFence(ctx context.Context, ms []store.Message) error {
	first := map[uint64]uint64{}
	for i := range ms {
		m := &ms[i]
		if f, ok := first[m.ConvID]; !ok || m.Seq < f {
			first[m.ConvID] = m.Seq
		}
	}
	for conv, f := range first {
		last, err := st.lastSeq(ctx, conv)
		if err != nil {
			return fmt.Errorf("scylla: commit: %w", err)
		}
		if f <= last {
			return fmt.Errorf("scylla: commit: %w: conversation %d: seq %d is not above the last seq %d", store.ErrSeqConflict, conv, f, last)
		}
	}
	return nil
}

// commitPointers moves pointers forward. The core owns a conversation
// through its partition, so read-then-write has no concurrent writer for
// the same pointer in normal operation; the seq timestamp keeps the
// highest value even if one appears (a rebalance).
func (st *Store) commitPointers(ctx context.Context, ups []store.PointerUpdate) error {
	type key struct {
		conv uint64
		user string
		kind wire.ReceiptKind
	}
	cur := map[key]uint64{}
	var writes []int
	for i := range ups {
		u := &ups[i]
		k := key{u.ConvID, u.User, u.Kind}
		v, ok := cur[k]
		if !ok {
			p, err := st.pointers(ctx, u.ConvID, u.User)
			if err != nil {
				return err
			}
			v = p.Delivered
			switch u.Kind {
			case wire.ReceiptRead:
				v = p.Read
			case store.PointerSeen:
				v = p.Seen
			}
		}
		if u.Seq > v {
			v = u.Seq
			writes = append(writes, i)
		}
		cur[k] = v
	}
	if err := st.batched(ctx, len(writes), func(bt *gocqlx.Batch, i int) {
		u := &ups[writes[i]]
		col := "delivered_seq"
		switch u.Kind {
		case wire.ReceiptRead:
			col = "read_seq"
		case store.PointerSeen:
			col = "seen_seq"
		}
		bt.Query(`UPDATE pointers USING TIMESTAMP ? SET `+col+` = ? WHERE conv_id = ? AND user_id = ?`,
			int64(u.Seq), int64(u.Seq), int64(u.ConvID), u.User)
	}); err != nil {
		return fmt.Errorf("scylla: commit pointers: %w", err)
	}
	for _, i := range writes {
		ups[i].Advanced = true
	}
	return nil
}

// batched executes n statements in logged batches of at most maxBatch,
// add appending statement i to its batch.
func (st *Store) batched(ctx context.Context, n int, add func(*gocqlx.Batch, int)) error {
	for from := 0; from < n; from += maxBatch {
		bt := st.s.ContextBatch(ctx, gocql.LoggedBatch)
		for i := from; i < min(from+maxBatch, n); i++ {
			add(bt, i)
		}
		if err := st.s.ExecuteBatch(bt); err != nil {
			return err
		}
	}
	return nil
}

const msgCols = `seq, message_id, server_ms, sender, sender_device, client_msg_id, kind, body`

func scanMsg(conv uint64, iter *gocqlx.Iterx) (store.Message, bool) {
	var seq, id, ms, kind int64
	m := store.Message{ConvID: conv}
	if !iter.Scan(&seq, &id, &ms, &m.Sender, &m.SenderDevice, &m.ClientMsgID, &kind, &m.Body) {
		return m, false
	}
	m.Seq, m.MessageID, m.ServerTimeMS, m.Kind = uint64(seq), uint64(id), uint64(ms), wire.MsgKind(kind)
	if m.Body == nil {
		m.Body = []byte{}
	}
	return m, true
}

// readMsgs appends the messages stmt selects (msgCols) to out.
func (st *Store) readMsgs(ctx context.Context, out []store.Message, conv uint64, stmt string, args ...any) ([]store.Message, error) {
	iter := st.q(ctx, stmt, args...).Iter()
	for {
		m, ok := scanMsg(conv, iter)
		if !ok {
			break
		}
		out = append(out, m)
	}
	return out, iter.Close()
}

// LookupClientMsg implements store.Store.
func (st *Store) LookupClientMsg(ctx context.Context, conv uint64, sender, clientMsgID string) (store.Message, bool, error) {
	if err := st.enter(); err != nil {
		return store.Message{}, false, err
	}
	defer st.exit()
	var seq int64
	err := st.q(ctx, `SELECT seq FROM client_msgs WHERE conv_id = ? AND sender = ? AND client_msg_id = ?`,
		int64(conv), sender, clientMsgID).Query.Scan(&seq)
	if errors.Is(err, gocql.ErrNotFound) {
		return store.Message{}, false, nil
	}
	if err != nil {
		return store.Message{}, false, fmt.Errorf("scylla: lookup client msg: %w", err)
	}
	last, err := st.lastSeq(ctx, conv)
	if err != nil || uint64(seq) > last {
		return store.Message{}, false, err // a commit still in progress
	}
	iter := st.q(ctx, `SELECT `+msgCols+` FROM messages WHERE conv_id = ? AND bucket = ? AND seq = ?`,
		int64(conv), bucket(uint64(seq)), seq).Iter()
	m, ok := scanMsg(conv, iter)
	if err := iter.Close(); err != nil {
		return store.Message{}, false, fmt.Errorf("scylla: lookup client msg: %w", err)
	}
	return m, ok, nil
}

// lookupParallel bounds the queries LookupClientMsgs runs at once.
const lookupParallel = 16

// LookupClientMsgs implements store.Store: each key as LookupClientMsg,
// up to lookupParallel of them at a time, so a polled batch of SENDs costs
// about one round trip per lookupParallel keys instead of one per key.
func (st *Store) LookupClientMsgs(ctx context.Context, keys []store.ClientMsgKey) ([]store.ClientMsgResult, error) {
	if len(keys) == 0 {
		// Each lookup enters the store itself: entering here too would
		// nest read locks, which a Close waiting for the lock deadlocks.
		if err := st.enter(); err != nil {
			return nil, err
		}
		st.exit()
		return nil, nil
	}
	res := make([]store.ClientMsgResult, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(lookupParallel)
	for i := range keys {
		g.Go(func() error {
			k := &keys[i]
			m, ok, err := st.LookupClientMsg(gctx, k.ConvID, k.Sender, k.ClientMsgID)
			res[i] = store.ClientMsgResult{Message: m, Found: ok}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return res, nil
}

// MessagesAfter implements store.Store.
func (st *Store) MessagesAfter(ctx context.Context, conv, after uint64, limit int) ([]store.Message, error) {
	if err := st.enter(); err != nil {
		return nil, err
	}
	defer st.exit()
	limit = store.ClampLimit(limit)
	last, err := st.lastSeq(ctx, conv)
	if err != nil {
		return nil, err
	}
	var out []store.Message
	for b := bucket(after + 1); b <= bucket(last) && len(out) < limit; b++ {
		var err error
		out, err = st.readMsgs(ctx, out, conv, `SELECT `+msgCols+` FROM messages WHERE conv_id = ? AND bucket = ? AND seq > ? AND seq <= ? ORDER BY seq ASC LIMIT ?`,
			int64(conv), b, int64(after), int64(last), limit-len(out))
		if err != nil {
			return nil, fmt.Errorf("scylla: messages after: %w", err)
		}
	}
	return out, nil
}

// MessagesBefore implements store.Store. Seqs have no gaps, so older
// messages exist exactly when the oldest returned seq is above 1.
func (st *Store) MessagesBefore(ctx context.Context, conv, before uint64, limit int) ([]store.Message, bool, error) {
	if err := st.enter(); err != nil {
		return nil, false, err
	}
	defer st.exit()
	limit = store.ClampLimit(limit)
	last, err := st.lastSeq(ctx, conv)
	if err != nil {
		return nil, false, err
	}
	if before == 0 || before > last+1 {
		before = last + 1
	}
	if before <= 1 {
		return nil, false, nil
	}
	var out []store.Message // newest first
	for b := bucket(before - 1); b >= 0 && len(out) < limit; b-- {
		var err error
		out, err = st.readMsgs(ctx, out, conv, `SELECT `+msgCols+` FROM messages WHERE conv_id = ? AND bucket = ? AND seq < ? LIMIT ?`,
			int64(conv), b, int64(before), limit-len(out))
		if err != nil {
			return nil, false, fmt.Errorf("scylla: messages before: %w", err)
		}
	}
	slices.Reverse(out)
	more := len(out) > 0 && out[0].Seq > 1
	return out, more, nil
}

// UserSettings implements store.Store.
func (st *Store) UserSettings(ctx context.Context, user string) (store.Settings, error) {
	if err := st.enter(); err != nil {
		return store.Settings{}, err
	}
	defer st.exit()
	var vis *int8
	err := st.q(ctx, `SELECT presence_visibility FROM user_settings WHERE user_id = ?`, user).Query.Scan(&vis)
	if errors.Is(err, gocql.ErrNotFound) {
		return store.Settings{}, nil
	}
	if err != nil {
		return store.Settings{}, fmt.Errorf("scylla: user settings: %w", err)
	}
	var out store.Settings
	if vis != nil {
		out.PresenceVisibility = store.Visibility(*vis)
	}
	return out, nil
}

// SetUserSettings implements store.Store.
func (st *Store) SetUserSettings(ctx context.Context, user string, s store.Settings) error {
	if !s.PresenceVisibility.Valid() {
		return fmt.Errorf("scylla: presence visibility %d: %w", s.PresenceVisibility, store.ErrInvalid)
	}
	if err := st.enter(); err != nil {
		return err
	}
	defer st.exit()
	if err := st.q(ctx, `UPDATE user_settings SET presence_visibility = ? WHERE user_id = ?`, int8(s.PresenceVisibility), user).ExecRelease(); err != nil {
		return fmt.Errorf("scylla: set user settings: %w", err)
	}
	return nil
}

// Pointers implements store.Store.
func (st *Store) Pointers(ctx context.Context, conv uint64, user string) (store.Pointers, error) {
	if err := st.enter(); err != nil {
		return store.Pointers{}, err
	}
	defer st.exit()
	return st.pointers(ctx, conv, user)
}

func (st *Store) pointers(ctx context.Context, conv uint64, user string) (store.Pointers, error) {
	var d, r, sn *int64
	err := st.q(ctx, `SELECT delivered_seq, read_seq, seen_seq FROM pointers WHERE conv_id = ? AND user_id = ?`, int64(conv), user).Query.Scan(&d, &r, &sn)
	if errors.Is(err, gocql.ErrNotFound) {
		return store.Pointers{}, nil
	}
	if err != nil {
		return store.Pointers{}, fmt.Errorf("scylla: pointers: %w", err)
	}
	var p store.Pointers
	if d != nil {
		p.Delivered = uint64(*d)
	}
	if r != nil {
		p.Read = uint64(*r)
	}
	if sn != nil {
		p.Seen = uint64(*sn)
	}
	return p, nil
}

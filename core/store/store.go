// Package store is the durable message store: conversations and their
// members, the per-conversation message log, client_msg_id dedupe entries
// and the members' delivered/read pointers.
//
// Store is implemented by Pebble (the embedded default, store_pebble.go)
// and ScyllaDB. Every implementation passes the contract suite in
// storetest.
package store

import (
	"context"
	"errors"

	"github.com/chatd-dev/chatd/wire"
)

// ErrNotFound is returned for a conversation that does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrInvalid is returned (wrapped; test with errors.Is) by Commit for a
// batch it rejects without writing anything: a message with seq 0 or a
// pointer update of an unknown kind.
var ErrInvalid = errors.New("store: invalid batch")

// ErrSeqConflict is returned (wrapped; test with errors.Is) by Commit for a
// batch it rejects without writing anything because a message's seq is not
// above its conversation's last seq: another writer committed to the
// conversation since the caller read that last seq. It is the fence against
// a zombie core (one that lost its partitions but still holds a batch and a
// stale seq cache): its write fails instead of overwriting messages the new
// owner stored. The caller reloads the last seq and redoes the batch.
var ErrSeqConflict = errors.New("store: seq conflict")

// ErrClosed is returned (wrapped or as is; test with errors.Is) by every
// method called after Close.
var ErrClosed = errors.New("store: closed")

// Page sizes of MessagesAfter and MessagesBefore: a limit <= 0 means
// DefaultLimit, a limit above MaxLimit is clamped to MaxLimit.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// ClampLimit maps a requested page size to the one a Store uses: limit <= 0
// gives DefaultLimit, limit > MaxLimit gives MaxLimit.
func ClampLimit(limit int) int {
	switch {
	case limit <= 0:
		return DefaultLimit
	case limit > MaxLimit:
		return MaxLimit
	}
	return limit
}

// Message is one persisted message. Seq is the message's position in its
// conversation: 1, 2, 3, ... with no gaps.
type Message struct {
	ConvID       uint64
	MessageID    uint64
	Seq          uint64
	ServerTimeMS uint64
	Sender       string
	SenderDevice string
	ClientMsgID  string
	Kind         wire.MsgKind
	Body         []byte
}

// Conversation is a conversation and its members (user ids, sorted,
// without duplicates).
type Conversation struct {
	ID        uint64
	Kind      wire.ConvKind
	Members   []string
	CreatedMS uint64
	// Groups only (empty for direct conversations): the group's name, and
	// its admins (sorted, without duplicates, each one a member).
	Name   string
	Admins []string
}

// GroupUpdate, in a Commit, replaces an existing group's name, members and
// admins with Conv's (Conv.ID names the group; Conv.Kind and CreatedMS are
// ignored and keep their stored values) and maintains the member ->
// conversation index: Added gain the group, Removed lose it. The caller
// (core/messages, which owns the group through its partition) computes the
// new description; the store writes it as given, with the system message
// that announces it in the same atomic Commit.
type GroupUpdate struct {
	Conv    Conversation
	Added   []string
	Removed []string
}

// Pointers are one member's pointers in one conversation.
type Pointers struct {
	Delivered uint64
	Read      uint64
	// Seen is the position the member's own writes imply (its latest
	// message, or just below the message that added it to a group): it
	// has seen everything up to there. Kept apart from Read so that a
	// receipt for earlier messages still advances Read (and reaches the
	// sender) after the member wrote.
	Seen uint64
}

// PointerSeen is the PointerUpdate.Kind of Pointers.Seen. It is not a wire
// receipt kind: clients never send it.
const PointerSeen wire.ReceiptKind = 3

// ValidPointerKind reports whether k is a kind a PointerUpdate may have.
func ValidPointerKind(k wire.ReceiptKind) bool {
	return k == wire.ReceiptDelivered || k == wire.ReceiptRead || k == PointerSeen
}

// PointerUpdate asks to move one member's pointer up to Seq. Pointers only
// move forward: an update at or below the stored value changes nothing.
// Commit sets Advanced to report whether this update moved the pointer.
type PointerUpdate struct {
	ConvID   uint64
	User     string
	Kind     wire.ReceiptKind
	Seq      uint64
	Advanced bool // out: set by Commit
}

// Batch is a unit of durable work: every message and pointer update in it is
// written atomically (all or nothing) and is durable (fsynced or quorum
// acknowledged) when Commit returns nil.
//
// Conversations are created like EnsureConversation does (if absent;
// an existing conversation is left unchanged), in the same atomic write, so
// a burst of new conversations costs one durable write, not one each.
// GroupUpdates are applied after Conversations and in order (a later update
// of the same group sees the earlier one's description); an update of a
// conversation that does not exist, even after Conversations, or that is
// not a group, makes Commit fail with ErrInvalid, writing nothing.
type Batch struct {
	Conversations []Conversation
	GroupUpdates  []GroupUpdate
	Messages      []Message
	Pointers      []PointerUpdate
}

// ClientMsgKey names one dedupe entry: the message Sender stored with
// ClientMsgID in conversation ConvID.
type ClientMsgKey struct {
	ConvID      uint64
	Sender      string
	ClientMsgID string
}

// ClientMsgResult answers one ClientMsgKey: whether a message is stored
// under it and, if so, the message.
type ClientMsgResult struct {
	Message Message
	Found   bool
}

// Visibility is who sees a user's exact presence: online state and last
// seen time. The zero value is the default.
type Visibility uint8

const (
	// VisibilityContacts: users who share a conversation with the user
	// (the default).
	VisibilityContacts Visibility = 0
	// VisibilityEveryone: any signed-in user.
	VisibilityEveryone Visibility = 1
	// VisibilityNobody: no one; those who share a conversation get a
	// coarse answer ("recently", "within a week"...).
	VisibilityNobody Visibility = 2
)

// Valid reports whether v is one of the defined visibilities.
func (v Visibility) Valid() bool { return v <= VisibilityNobody }

// Settings are a user's settings. The zero value is every default: a user
// who never saved settings reads as zero Settings.
type Settings struct {
	PresenceVisibility Visibility
}

// Reset empties the batch, keeping capacity.
func (b *Batch) Reset() {
	b.Conversations = b.Conversations[:0]
	b.GroupUpdates = b.GroupUpdates[:0]
	b.Messages = b.Messages[:0]
	b.Pointers = b.Pointers[:0]
}

// Store is the message store.
//
// Concurrency: every method is safe for concurrent use. The store does not
// assign seqs: the caller (core/messages, which owns a conversation through
// its Kafka partition) does, and the store trusts it; Commit rejects nothing
// for ordering reasons.
type Store interface {
	// EnsureConversation creates c (with its members, and the member ->
	// conversation index) if no conversation with c.ID exists, and returns
	// the stored conversation either way. Idempotent: when c.ID exists, the
	// stored conversation is returned unchanged and c's other fields are
	// ignored. The store sorts and dedupes c.Members. Durable when it
	// returns nil.
	EnsureConversation(ctx context.Context, c Conversation) (Conversation, error)
	// Conversation returns the conversation or ErrNotFound.
	Conversation(ctx context.Context, id uint64) (Conversation, error)
	// UserConversations returns the ids of the conversations user is a
	// member of, ascending.
	UserConversations(ctx context.Context, user string) ([]uint64, error)

	// LastSeq returns the highest committed seq of the conversation (0 when
	// it has no messages).
	LastSeq(ctx context.Context, conv uint64) (uint64, error)
	// Commit durably and atomically writes b: each message, its dedupe
	// entry (conv, sender, client_msg_id) -> message (none when ClientMsgID
	// is empty), and the conversation's last seq (the max of the stored
	// value and the batch's seqs); then the pointer updates, setting their
	// Advanced fields. Updates of the same pointer within one batch see each
	// other (the second of 5 then 3 does not advance). Every message's seq
	// must be above its conversation's stored last seq, so a committed
	// message is never overwritten; otherwise Commit returns ErrSeqConflict,
	// writing nothing. (The store does not require seqs to be contiguous:
	// the caller assigns them from the last seq it read, and this check
	// makes a caller whose read is stale fail.) Within one batch a later
	// message with the same seq replaces an earlier one. Commit returns
	// ErrInvalid, writing nothing, for a message with Seq 0, a pointer
	// update with an unknown Kind, or a GroupUpdate of a conversation that
	// is missing or not a group. On any other error every Advanced is
	// false and the batch may or may not have been written (never partly):
	// the caller reloads the last seq and redoes the batch through
	// LookupClientMsg, since a blind retry of a batch that did land fails
	// with ErrSeqConflict.
	Commit(ctx context.Context, b *Batch) error
	// LookupClientMsg finds the message a sender stored with clientMsgID in
	// conv, if any.
	LookupClientMsg(ctx context.Context, conv uint64, sender, clientMsgID string) (Message, bool, error)
	// LookupClientMsgs answers several LookupClientMsg at once: result i
	// answers keys[i], exactly as LookupClientMsg(keys[i]) would (an empty
	// ClientMsgID is never found). The core checks all the SENDs of a
	// polled batch with one call, which a store across a network answers
	// in one round trip (or, for ScyllaDB, concurrently) instead of one
	// round trip per SEND in sequence.
	LookupClientMsgs(ctx context.Context, keys []ClientMsgKey) ([]ClientMsgResult, error)
	// MessagesAfter returns up to limit messages with seq > after, in
	// ascending seq order. limit is mapped through ClampLimit. Returned
	// messages own their memory.
	MessagesAfter(ctx context.Context, conv, after uint64, limit int) ([]Message, error)
	// MessagesBefore returns the newest up to limit messages with
	// seq < before (before == 0: no bound), in ascending seq order, and
	// whether older messages exist. limit is mapped through ClampLimit.
	MessagesBefore(ctx context.Context, conv, before uint64, limit int) ([]Message, bool, error)
	// Pointers returns user's pointers in conv (zero when never set).
	Pointers(ctx context.Context, conv uint64, user string) (Pointers, error)

	// UserSettings returns user's settings (zero Settings when never set).
	UserSettings(ctx context.Context, user string) (Settings, error)
	// SetUserSettings durably replaces user's settings. It returns
	// ErrInvalid, writing nothing, for a setting out of its range.
	SetUserSettings(ctx context.Context, user string, s Settings) error

	// Close releases the store, waiting for calls in progress. Methods
	// called after Close return ErrClosed; Close itself is idempotent (a
	// second Close returns nil).
	Close() error
}

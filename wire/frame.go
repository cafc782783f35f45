// Package wire is chatd's client protocol, version 1: frame types, their byte
// layouts, limits, error codes and the codecs. It never touches a socket.
//
// A frame travels as exactly one WebSocket binary message:
//
//	+--------+--------+----------------------+
//	| type   | flags  | payload ...          |
//	| 1 byte | 1 byte | (rest of the message)|
//	+--------+--------+----------------------+
//
// Integers in payloads are unsigned LEB128 varints ("uvarint"); byte strings
// are a uvarint length followed by that many bytes. Fields appear in the fixed
// order documented on each struct. A receiver ignores bytes after the last
// field it knows: minor revisions of version 1 may only append fields.
// docs/protocol.md is the normative spec; this package is its reference
// implementation.
//
// Decoding is zero-allocation: Decode methods fill a caller-owned struct
// whose []byte fields alias the input buffer. Those slices are valid only
// until the input buffer is reused; copy what must outlive it.
package wire

import "time"

// Version is the protocol version this package speaks.
const Version = 1

// Limits. A frame (header included) larger than MaxFrameSize is rejected
// before it is read; the others bound individual fields.
const (
	HeaderLen        = 2
	MaxFrameSize     = 64 << 10 // bytes in one frame, header included
	MaxBodySize      = 60 << 10 // bytes in a message body (after decompression)
	MaxIDLen         = 64       // user ids, device ids, client_msg_ids
	MaxTokenLen      = 4096     // bytes of a HELLO token
	MaxTextLen       = 512      // ERROR/GOAWAY human-readable text
	MaxResumeConvs   = 1024     // cursors in one RESUME
	MaxHistoryLimit  = 200      // messages in one HISTORY answer
	MaxMembers       = 1024     // members a CONV frame may list (a decoder limit)
	MaxConvListed    = 512      // members a server lists in one CONV (fits a frame); member_total says how many there are
	MaxGroupNameLen  = 128      // bytes of a group name (UTF-8)
	MaxGroupChange   = 256      // users named in one CREATE_GROUP or GROUP_CHANGE, or one group system message
	CompressMinBytes = 512      // payloads smaller than this are never compressed
)

// Type is the first byte of every frame.
type Type uint8

// Frame types. C->S: client to server; S->C: server to client.
const (
	TypeHello       Type = 0x01 // C->S first frame: version, token, device, capabilities
	TypeWelcome     Type = 0x02 // S->C answer to HELLO
	TypeSend        Type = 0x03 // C->S a new message
	TypeAck         Type = 0x04 // S->C the server has persisted a SEND
	TypeMsg         Type = 0x05 // S->C a message (live, or a replay for RESUME/HISTORY)
	TypeReceipt     Type = 0x06 // both: delivered/read up to seq
	TypeResume      Type = 0x07 // C->S last seq per conversation
	TypeResumed     Type = 0x08 // S->C end of the replay answering RESUME
	TypeHistory     Type = 0x09 // C->S older messages of one conversation
	TypeHistoryEnd  Type = 0x0A // S->C end of the replay answering HISTORY
	TypePing        Type = 0x0B // C->S heartbeat
	TypePong        Type = 0x0C // S->C heartbeat answer
	TypeError       Type = 0x0D // S->C a request failed (coded)
	TypeGoaway      Type = 0x0E // S->C the server closes this connection (coded)
	TypeOpenDirect  Type = 0x0F // C->S open (or find) the 1:1 conversation with a peer
	TypeConv        Type = 0x10 // S->C a conversation's description
	TypeCreateGroup Type = 0x11 // C->S create a group
	TypeGroupChange Type = 0x12 // C->S add/remove members, leave, rename, promote/demote admins
	TypeTyping      Type = 0x13 // both: a user started or stopped typing in a conversation
	TypeFocus       Type = 0x14 // C->S the conversation this connection has on screen (0: none)
	TypePresence    Type = 0x15 // S->C the peer of the focused direct conversation: online, last seen

	// LastType is the highest frame type of this version: types run
	// 1..LastType without gaps.
	LastType = TypePresence
)

// Flags is the second byte of every frame. Unknown bits are a malformed frame.
type Flags uint8

const (
	// FlagCompressed: the payload is one zstd frame; decompressed it is the
	// payload described for the type. Only sent to peers that negotiated
	// CapZstd, and only for payloads of at least CompressMinBytes.
	FlagCompressed Flags = 0x01
	// FlagReplay (MSG only): the message is part of a RESUME or HISTORY
	// answer, not a live delivery.
	FlagReplay Flags = 0x02

	knownFlags = FlagCompressed | FlagReplay
)

// Capabilities negotiated in HELLO/WELCOME (bitmask).
const (
	CapZstd uint64 = 1 << 0 // peer accepts and may send FlagCompressed frames
)

// MsgKind says how to read a message body.
type MsgKind uint64

const (
	KindText   MsgKind = 1 // UTF-8 text
	KindSystem MsgKind = 2 // server-made notice (membership changes, ...)
	KindBinary MsgKind = 3 // opaque bytes (E2EE ciphertext, media references)
)

// ReceiptKind is the pointer a RECEIPT moves.
type ReceiptKind uint8

const (
	ReceiptDelivered ReceiptKind = 1
	ReceiptRead      ReceiptKind = 2
)

// ConvKind distinguishes 1:1 conversations from groups.
type ConvKind uint8

const (
	ConvDirect ConvKind = 1
	ConvGroup  ConvKind = 2
)

// Hello (C->S, TypeHello) must be the first frame on a connection.
// Layout: min_version uvarint, max_version uvarint, token bytes,
// device_id bytes (1..MaxIDLen), caps uvarint.
type Hello struct {
	MinVersion uint64
	MaxVersion uint64
	Token      []byte
	DeviceID   []byte
	Caps       uint64
}

// Welcome (S->C, TypeWelcome) accepts a HELLO.
// Layout: version uvarint, caps uvarint (the accepted subset),
// heartbeat_ms uvarint (send PING at least this often), idle_timeout_ms
// uvarint (silence after which the server closes), max_frame uvarint,
// server_time_ms uvarint, user_id bytes, device_id bytes.
type Welcome struct {
	Version       uint64
	Caps          uint64
	HeartbeatMS   uint64
	IdleTimeoutMS uint64
	MaxFrame      uint64
	ServerTimeMS  uint64
	UserID        []byte
	DeviceID      []byte
}

// Send (C->S, TypeSend) submits a message. ClientMsgID (1..MaxIDLen bytes,
// unique per sender and conversation) makes resends idempotent.
// Layout: conv_id uvarint, client_msg_id bytes, kind uvarint, body bytes.
type Send struct {
	ConvID      uint64
	ClientMsgID []byte
	Kind        MsgKind
	Body        []byte
}

// Ack (S->C, TypeAck): the SEND with ClientMsgID is persisted as MessageID
// at Seq. A resend of an already persisted SEND gets the same Ack.
// Layout: client_msg_id bytes, conv_id uvarint, message_id uvarint,
// seq uvarint, server_time_ms uvarint.
type Ack struct {
	ClientMsgID  []byte
	ConvID       uint64
	MessageID    uint64
	Seq          uint64
	ServerTimeMS uint64
}

// Msg (S->C, TypeMsg) is one stored message.
// Layout: conv_id uvarint, message_id uvarint, seq uvarint,
// server_time_ms uvarint, sender bytes, sender_device bytes,
// client_msg_id bytes, kind uvarint, body bytes.
type Msg struct {
	ConvID       uint64
	MessageID    uint64
	Seq          uint64
	ServerTimeMS uint64
	Sender       []byte
	SenderDevice []byte
	ClientMsgID  []byte
	Kind         MsgKind
	Body         []byte
}

// Receipt (TypeReceipt). C->S: the sending device's user has received
// (delivered) or displayed (read) every message up to UpToSeq; User is empty.
// S->C: User moved that pointer. Pointers never move backwards.
// Layout: conv_id uvarint, kind byte, up_to_seq uvarint, user bytes.
type Receipt struct {
	ConvID  uint64
	Kind    ReceiptKind
	UpToSeq uint64
	User    []byte
}

// TypingState is what a TYPING frame says.
type TypingState uint8

const (
	TypingStarted TypingState = 1 // typing now; shown until stopped or TypingTTL after the last one
	TypingStopped TypingState = 2
)

// TypingTTL is how long a receiver shows "typing" after the last
// TypingStarted it got for one user and conversation, unless a
// TypingStopped comes first: a typist that vanishes (app killed, network
// lost) clears on its own. Clients typing keep sending TypingStarted at
// most every TypingInterval.
const (
	TypingTTL      = 6 * time.Second
	TypingInterval = 3 * time.Second
)

// Typing (TypeTyping). C->S: the sending device's user started or stopped
// typing in ConvID; User is empty. S->C: User did, sent only to
// connections whose FOCUS is ConvID. Never stored.
// Layout: conv_id uvarint, state byte (1 started, 2 stopped), user bytes.
type Typing struct {
	ConvID uint64
	State  TypingState
	User   []byte
}

// Focus (C->S, TypeFocus) says which conversation this connection has on
// screen (0: none). Only a focused connection gets the conversation's
// TYPING frames and, for a direct conversation, PRESENCE about the peer
// (the answer to a FOCUS on one). A FOCUS on a conversation the user is not
// in gets an ERROR; at most one per 250 ms (gateway.FocusMinGap) is taken.
// Layout: conv_id uvarint.
type Focus struct {
	ConvID uint64
}

// PresenceApprox is a coarse last seen, sent instead of the exact state
// when the user's privacy setting hides it from the receiver.
type PresenceApprox uint8

const (
	ApproxExact       PresenceApprox = 0 // Online and LastSeenMS are exact
	ApproxRecently    PresenceApprox = 1 // online now or seen within 3 days
	ApproxWithinWeek  PresenceApprox = 2
	ApproxWithinMonth PresenceApprox = 3
	ApproxLongAgo     PresenceApprox = 4 // longer ago, or never
)

// Presence (S->C, TypePresence) tells a connection focused on direct
// conversation ConvID (FOCUS) the peer User's presence: once when it
// focuses, then at every change while it stays focused (only when exact).
// Layout: conv_id uvarint, user bytes, online byte (0/1), last_seen_ms
// uvarint (0: unknown), approx byte. With Approx other than ApproxExact,
// Online is false and LastSeenMS 0.
type Presence struct {
	ConvID     uint64
	User       []byte
	Online     bool
	LastSeenMS uint64
	Approx     PresenceApprox
}

// Cursor is the last seq a client holds for one conversation.
type Cursor struct {
	ConvID  uint64
	LastSeq uint64
}

// Resume (C->S, TypeResume) asks for everything after each cursor (at most
// 1,000 per conversation, oldest first) and, for conversations the client
// does not list, the newest 50 messages. Answered by MSG frames with FlagReplay in seq order per
// conversation, then RESUMED.
// Layout: req_id uvarint, count uvarint (<= MaxResumeConvs), count x
// (conv_id uvarint, last_seq uvarint).
type Resume struct {
	ReqID   uint64
	Cursors []Cursor // reused across Decode calls
}

// Resumed (S->C, TypeResumed) ends a RESUME answer. Truncated is set when a
// cap cut the replay short; the replay is oldest first, so the missing
// messages are the newer ones and the client gets them by sending RESUME
// again with its new cursors (HISTORY only pages backwards).
// Layout: req_id uvarint, conversations uvarint, messages uvarint,
// truncated byte (0/1).
type Resumed struct {
	ReqID         uint64
	Conversations uint64
	Messages      uint64
	Truncated     bool
}

// History (C->S, TypeHistory) asks for up to Limit messages with
// seq < BeforeSeq (0: the latest). Answered by MSG frames with FlagReplay
// in ascending seq order, then HISTORY_END.
// Layout: req_id uvarint, conv_id uvarint, before_seq uvarint, limit uvarint.
type History struct {
	ReqID     uint64
	ConvID    uint64
	BeforeSeq uint64
	Limit     uint64
}

// HistoryEnd (S->C, TypeHistoryEnd) ends a HISTORY answer.
// Layout: req_id uvarint, conv_id uvarint, count uvarint, has_more byte (0/1).
type HistoryEnd struct {
	ReqID   uint64
	ConvID  uint64
	Count   uint64
	HasMore bool
}

// Ping (C->S) and Pong (S->C) carry an opaque nonce the server echoes.
// Layout: nonce uvarint.
type Ping struct{ Nonce uint64 }

// Pong answers a Ping with its nonce.
type Pong struct{ Nonce uint64 }

// Error (S->C, TypeError) says a request failed. RefType is the type of the
// failed frame; ReqID or ClientMsgID and ConvID identify it where it had them.
// Layout: code uvarint, ref_type byte, req_id uvarint, conv_id uvarint,
// client_msg_id bytes, message bytes (<= MaxTextLen).
type Error struct {
	Code        Code
	RefType     Type
	ReqID       uint64
	ConvID      uint64
	ClientMsgID []byte
	Message     []byte
}

// Goaway (S->C, TypeGoaway) precedes the server closing the connection.
// Layout: code uvarint, reconnect_after_ms uvarint, message bytes.
type Goaway struct {
	Code             Code
	ReconnectAfterMS uint64
	Message          []byte
}

// OpenDirect (C->S, TypeOpenDirect) opens, or finds, the 1:1 conversation
// between the caller and Peer. Answered by CONV.
// Layout: req_id uvarint, peer bytes.
type OpenDirect struct {
	ReqID uint64
	Peer  []byte
}

// Conv (S->C, TypeConv) describes a conversation.
// Layout: req_id uvarint, conv_id uvarint, kind byte, last_seq uvarint,
// count uvarint (<= MaxMembers), count x member bytes; then, appended in
// revision 1.1: name bytes (<= MaxGroupNameLen), member_total uvarint,
// roles bytes (exactly count bytes: roles[i] is Members[i]'s role, RoleMember
// or RoleAdmin). A frame that ends after the members decodes with Name and
// Roles empty and MemberTotal = count.
//
// A server lists at most MaxConvListed members, sorted; MemberTotal is the
// group's size, and a client pages the rest over the HTTP API.
type Conv struct {
	ReqID       uint64
	ConvID      uint64
	Kind        ConvKind
	LastSeq     uint64
	Members     [][]byte // reused across Decode calls; each aliases the input
	Name        []byte
	MemberTotal uint64
	Roles       []byte
}

// Member roles in a group (Conv.Roles).
const (
	RoleMember byte = 0
	RoleAdmin  byte = 1
)

// CreateGroup (C->S, TypeCreateGroup) creates a group whose admin is the
// sender and whose members are the sender and Members. The answer is a CONV
// with the same req_id; the group's log starts with a system message
// (GroupEvent, GroupCreated).
// Layout: req_id uvarint, name bytes (1..MaxGroupNameLen), count uvarint
// (<= MaxGroupChange), count x member bytes (1..MaxIDLen each).
type CreateGroup struct {
	ReqID   uint64
	Name    []byte
	Members [][]byte // reused across Decode calls; each aliases the input
}

// GroupOp is what a GROUP_CHANGE does, and what a group system message
// says happened.
type GroupOp uint8

const (
	GroupAdd     GroupOp = 1 // admins: add Users
	GroupRemove  GroupOp = 2 // admins: remove Users
	GroupLeave   GroupOp = 3 // the sender leaves (Users empty)
	GroupRename  GroupOp = 4 // any member: Name is the new name
	GroupPromote GroupOp = 5 // admins: make Users admins
	GroupDemote  GroupOp = 6 // admins: make Users plain members
	GroupCreated GroupOp = 7 // system messages only: the group was created

	maxGroupChangeOp = GroupDemote
	maxGroupEventOp  = GroupCreated
)

// GroupChange (C->S, TypeGroupChange) changes a group. The answer is a CONV
// (req_id echoed) describing the group after the change, or an ERROR. A
// change that changes something is also a system message in the group's
// log (GroupEvent), so every member's devices see it in order.
// Layout: req_id uvarint, conv_id uvarint, op byte (1..6), name bytes
// (<= MaxGroupNameLen), count uvarint (<= MaxGroupChange), count x user
// bytes (1..MaxIDLen each).
type GroupChange struct {
	ReqID  uint64
	ConvID uint64
	Op     GroupOp
	Name   []byte
	Users  [][]byte // reused across Decode calls; each aliases the input
}

// GroupEvent is the body of a KindSystem message in a group: what changed,
// who did it, and whom it names. For GroupLeave, Users names the member who
// became admin because the last admin left (empty otherwise). Not a frame.
// Layout: op byte (1..7), actor bytes (1..MaxIDLen), name bytes
// (<= MaxGroupNameLen), count uvarint (<= MaxGroupChange), count x user
// bytes (1..MaxIDLen each).
type GroupEvent struct {
	Op    GroupOp
	Actor []byte
	Name  []byte
	Users [][]byte
}

package sdk

import (
	"time"

	"github.com/chatd-dev/chatd/wire"
)

// Event is what the Client reports on its Events channel. It is one of
// Message, Ack, Receipt, Typing, Presence, SendFailed, Connected,
// Disconnected and Resumed;
// use a type switch:
//
//	for ev := range c.Events() {
//		switch ev := ev.(type) {
//		case sdk.Message:
//			show(ev)
//		case sdk.Ack:
//			markSent(ev.ClientMsgID, ev.Seq)
//		}
//	}
//
// The set of event types may grow; ignore the ones you do not know.
type Event interface{ isEvent() }

// Message is one message of a conversation. As an event it is handed to the
// app exactly once, in seq order per conversation (see the package
// documentation). History returns Messages too.
type Message struct {
	Conv         uint64
	ID           uint64 // server-assigned message id, unique across conversations
	Seq          uint64 // position in the conversation: 1, 2, 3, ... without gaps
	Sender       string // user id
	SenderDevice string
	ClientMsgID  string // the sender's idempotency key, may be empty
	Kind         wire.MsgKind
	Body         []byte // owned by the receiver
	ServerTime   time.Time
	// Replay is true when the message reached this client as part of a
	// RESUME or HISTORY answer rather than as a live delivery: typically it
	// was sent while this device was offline.
	Replay bool
}

// Ack confirms that a message sent with Send or SendWait is persisted.
type Ack struct {
	ClientMsgID string
	Conv        uint64
	MessageID   uint64
	Seq         uint64
	ServerTime  time.Time
}

// Receipt reports that User moved their delivered or read pointer in Conv
// to UpToSeq: they received (delivered) or displayed (read) every message up
// to it. Receipts of the Client's own user come from its other devices
// (read sync).
type Receipt struct {
	Conv    uint64
	User    string
	Kind    wire.ReceiptKind
	UpToSeq uint64
}

// Typing reports that User started (Typing true) or stopped typing in
// Conv. It comes only for the conversation given to Focus. A started one
// holds until Until unless a stopped comes first: show "typing" no longer
// than that (the typist's app may have vanished without a word).
type Typing struct {
	Conv   uint64
	User   string
	Typing bool
	Until  time.Time // zero when Typing is false
}

// Presence reports the presence of User, the peer of the direct
// conversation Conv given to Focus: once after the Focus, then at every
// change while it stays focused. When the peer's privacy setting hides the
// exact state, Approx says roughly when they were last seen ("recently",
// "within_week", "within_month", "long_ago"), Online is false, LastSeen
// zero, and no changes follow.
type Presence struct {
	Conv     uint64
	User     string
	Online   bool
	LastSeen time.Time // zero when unknown or hidden
	Approx   string    // "" when Online and LastSeen are exact
}

var approxNames = map[wire.PresenceApprox]string{
	wire.ApproxRecently:    "recently",
	wire.ApproxWithinWeek:  "within_week",
	wire.ApproxWithinMonth: "within_month",
	wire.ApproxLongAgo:     "long_ago",
}

// SendFailed reports that the server refused a message for good (a
// non-retryable ERROR such as not_member or invalid_argument). The message
// will not be sent again.
type SendFailed struct {
	ClientMsgID string
	Conv        uint64
	Code        wire.Code
	Err         error // a *ServerError
}

// Connected reports a completed handshake (WELCOME). RESUME follows at once;
// Resumed reports its end.
type Connected struct {
	UserID      string
	DeviceID    string
	Heartbeat   time.Duration
	Compression bool // zstd frames negotiated
	ServerTime  time.Time
}

// Disconnected reports a connection that ended or an attempt that failed.
// The Client reconnects by itself after RetryIn.
type Disconnected struct {
	Err     error
	RetryIn time.Duration
}

// Resumed reports the end of a server replay of what this client missed
// (the answer to RESUME). Messages replayed by it precede it on the Events
// channel. Truncated means the server capped the replay; the Client then
// resumes again by itself, so more replayed Messages and another Resumed
// follow. A Resumed with Truncated false means the client is caught up.
type Resumed struct {
	Conversations uint64
	Messages      uint64
	Truncated     bool
}

func (Message) isEvent()      {}
func (Ack) isEvent()          {}
func (Receipt) isEvent()      {}
func (SendFailed) isEvent()   {}
func (Connected) isEvent()    {}
func (Disconnected) isEvent() {}
func (Resumed) isEvent()      {}
func (Typing) isEvent()       {}
func (Presence) isEvent()     {}

// Conversation describes a conversation (the answer to OpenDirect).
type Conversation struct {
	ID      uint64
	Kind    wire.ConvKind
	LastSeq uint64 // latest seq when the server answered
	// Members lists at most wire.MaxConvListed members (in id order);
	// MemberTotal is how many the conversation has.
	Members     []string
	MemberTotal int
	// Groups only: the name, and the listed members who are admins.
	Name   string
	Admins []string
}

// Stats are counters about the Client's stream handling, for monitoring
// and tests.
type Stats struct {
	// Duplicates counts MSG frames dropped because their seq was already
	// handed to the app (at or below the cursor) or already buffered.
	// Replays answering the app's own History calls are not counted.
	Duplicates uint64
	// DuplicateIDs counts MSG frames dropped because their message id was
	// already seen under another seq (a server anomaly; the seq is treated
	// as held so the stream does not stall).
	DuplicateIDs uint64
	// DuplicateAcks counts ACKs for sends that were already acknowledged.
	DuplicateAcks uint64
	// GapRequests counts HISTORY requests sent to fill gaps.
	GapRequests uint64
	// SkippedSeqs counts seqs given up on because the server answered a gap
	// request without them.
	SkippedSeqs uint64
	// Resends counts SEND frames written more than once.
	Resends uint64
	// Connects counts completed handshakes.
	Connects uint64
	// Buffered is the number of messages waiting for a gap below them.
	Buffered int
	// QueuedEvents is the number of events the app has not received yet.
	QueuedEvents int
	// PendingSends is the number of sends not acknowledged yet.
	PendingSends int
}

func millisTime(ms uint64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms))
}

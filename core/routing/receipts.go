package routing

import (
	"context"
	"fmt"

	"github.com/chatd-dev/chatd/wire"
)

// Receipt counters: "read by 640 of 800" under a message, for its sender.
//
// A receipt is "member U has delivered / read conversation C up to seq S".
// The counters keep, per conversation and kind, each member's pointer (the
// highest seq that member acknowledged) and derive a message's count from
// the pointers: the members who delivered / read message s are those whose
// pointer is >= s. Two properties of receipts make pointers, rather than one
// counter per message, the right model:
//
//   - Receipts are "up to seq": one event covers every message up to S, so
//     a counter per message would cost a write per message of the range
//     (a member coming back to a busy group acknowledges thousands at
//     once). A pointer is one write whatever the range.
//   - Receipts reach the counters at least once (Kafka redelivers after a
//     consumer restart), so a counter incremented per event would count a
//     redelivered event twice. Raising a pointer to max(pointer, S) is
//     idempotent and commutative: redelivered, duplicated or reordered
//     events give the same state, and a pointer never goes backwards.
//
// Reading implies having received: advancing a member's read pointer to S
// also advances their delivered pointer to S, so Read <= Delivered for every
// message.
//
// The counts exclude the message's sender (whose own devices acknowledge
// their own messages like anyone else's): ReceiptCounts and ReceiptReaders
// take the sender and leave them out. The total ("of 800") is the
// conversation's membership, which the caller has; the counters only know
// the members who acknowledged something. A member who left keeps counting
// for the messages they had acknowledged (they did read them).

// ReceiptKind is the pointer a receipt moves. Its values are wire's
// (wire.ReceiptDelivered, wire.ReceiptRead), so a decoded RECEIPT's kind
// converts as is.
type ReceiptKind uint8

const (
	ReceiptDelivered = ReceiptKind(wire.ReceiptDelivered)
	ReceiptRead      = ReceiptKind(wire.ReceiptRead)
)

// MaxReceiptSeq is the highest seq a receipt pointer holds: Redis keeps
// pointers as sorted-set scores, which are float64 and so exact for integers
// up to 2^53 only. AdvanceReceipts rejects larger seqs for every
// implementation, so all of them count the same way.
const MaxReceiptSeq = 1 << 53

// ReceiptAdvance says that member User's Kind pointer in Conv is at least
// Seq. Seq 0 says nothing (seqs start at 1) and is skipped.
type ReceiptAdvance struct {
	Conv uint64
	User string
	Kind ReceiptKind
	Seq  uint64
}

// ReceiptCount is how many members, the sender excluded, have delivered and
// read one message. Read <= Delivered.
type ReceiptCount struct {
	Delivered, Read int
}

// ReceiptCounter keeps receipt pointers and counts them (see above).
type ReceiptCounter interface {
	// AdvanceReceipts records many advances in one call (one round trip
	// for Redis per chunk of at most 1,000 advances). Idempotent; never
	// lowers a pointer; advances may come in any order and repeat. A Kind
	// other than ReceiptDelivered or ReceiptRead, or a Seq above
	// MaxReceiptSeq, fails the call before anything is written. Across
	// chunks a failed call may have applied a prefix of adv: retrying the
	// whole of it is safe.
	AdvanceReceipts(ctx context.Context, adv []ReceiptAdvance) error
	// ReceiptCounts appends to dst, for each seq in seqs (messages of conv
	// sent by sender), how many members other than sender have delivered /
	// read it, in the order of seqs, and returns dst. One round trip. A seq
	// of 0 (or above MaxReceiptSeq) counts 0; empty seqs append nothing.
	ReceiptCounts(ctx context.Context, conv uint64, sender string, seqs []uint64, dst []ReceiptCount) ([]ReceiptCount, error)
	// ReceiptReaders appends to dst the members (other than sender) whose
	// read pointer in conv is >= seq, at most limit of them, sorted by user
	// id (the first limit in that order) — the "who read" list — and
	// returns dst. Seq 0 or limit <= 0 appends nothing.
	ReceiptReaders(ctx context.Context, conv uint64, sender string, seq uint64, limit int, dst []string) ([]string, error)
	// ReceiptPointers appends to dst user's kind pointer in each of convs
	// (0 where it has none), in the order of convs, and returns dst. One
	// round trip. The inbox reads it for groups: the core writes group
	// pointers to the store behind (core/messages), and the counters have
	// every advance at once.
	ReceiptPointers(ctx context.Context, user string, kind ReceiptKind, convs []uint64, dst []uint64) ([]uint64, error)
}

// checkAdvances rejects a batch naming an unknown kind or an unrepresentable
// seq; implementations call it before writing anything.
func checkAdvances(adv []ReceiptAdvance) error {
	for i := range adv {
		a := &adv[i]
		if a.Kind != ReceiptDelivered && a.Kind != ReceiptRead {
			return fmt.Errorf("routing: advance receipts: conv %d user %q: unknown receipt kind %d", a.Conv, a.User, a.Kind)
		}
		if a.Seq > MaxReceiptSeq {
			return fmt.Errorf("routing: advance receipts: conv %d user %q: seq %d above MaxReceiptSeq", a.Conv, a.User, a.Seq)
		}
	}
	return nil
}

// countable reports whether seq names a message a pointer can reach.
func countable(seq uint64) bool { return seq > 0 && seq <= MaxReceiptSeq }

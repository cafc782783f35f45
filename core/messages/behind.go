package messages

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatd-dev/chatd/core/consume"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// Group receipt pointers are written behind.
//
// When everyone in a big group reads, every member's device sends "read up
// to seq" about once a second (the SDK batches), and each of those moves
// one pointer row: at one message a second, one store write per member per
// message, the naive count. The store only needs each pointer's latest
// position, so the processor holds a group's delivered/read pointer updates
// for up to Config.ReceiptWriteBehind and writes each pointer once per
// window, at the highest seq it reached in it.
//
// What does not wait: the receipt event. The processor decides whether an
// update advances the pointer (against the held seq, or the stored one it
// read or wrote last) and emits the event at once, so the sender's "read by
// N of M" counters and the reader's other devices (their badge) move live.
//
// Why nothing is lost: a held update's record is not committed. The
// processor is a consume.Deferrer: each partition's offset commit stays
// below the earliest record whose pointer update is still held, and Run
// flushes when updates fall due, before it stops and before partitions are
// given up. After a crash the records from that floor on are re-delivered;
// the next owner reads the stored pointers, sees the receipts advance them,
// emits their events again (idempotent downstream: pointers only move
// forward) and holds them anew. The cost of a crash is re-handling up to
// one window of the partition's records (SENDs among them are deduped by
// client_msg_id and re-ACKed).
//
// Direct conversations and the Seen pointer are written in the batch's
// commit as before: a direct conversation has two readers, and Seen rides
// in the same write as the sender's message.

// heldPointers is the write-behind state. Safe for concurrent use: Handle,
// Run's flushes and a revoke callback's flush take mu.
type heldPointers struct {
	mu      sync.Mutex
	window  time.Duration
	pending map[ptrKey]*heldPtr
	// known is a lower bound of stored pointers, from reads and flushes, so
	// an update needs no read to know whether it advances. Cleared with
	// the conversation cache (Invalidate) and when it grows past
	// maxKnownPointers.
	known map[ptrKey]uint64
	// order holds the held keys in the order they were first held, so
	// oldest first: the due ones are a prefix, and Flush, called after
	// every polled batch, costs nothing while none is due. order[head:]
	// is live.
	order []ptrKey
	head  int
	batch store.Batch
}

type heldPtr struct {
	seq   uint64
	since time.Time
	// tp and at are the partition and the earliest record whose update
	// is held in this pointer: the commit floor it sets.
	tp consume.TopicPartition
	at kgo.EpochOffset
}

// maxKnownPointers bounds heldPointers.known (~100 bytes an entry).
const maxKnownPointers = 1 << 20

// DefaultReceiptWriteBehind is Config.ReceiptWriteBehind's default: long
// enough that at one message a second a member's read pointer is written
// once per ten messages.
const DefaultReceiptWriteBehind = 10 * time.Second

func newHeldPointers(window time.Duration) *heldPointers {
	return &heldPointers{window: window, pending: map[ptrKey]*heldPtr{}, known: map[ptrKey]uint64{}}
}

// holds reports whether the update u with meta m is written behind: an
// announced delivered/read pointer of a group.
func (h *heldPointers) holds(u *store.PointerUpdate, m *ptrMeta) bool {
	return h != nil && m.group && m.explicit && u.Kind != store.PointerSeen
}

// load makes sure the stored value of u's pointer is known (or the pointer
// is held), reading the store when it is not. It changes nothing held, so
// a batch that fails after it can be retried as is.
func (h *heldPointers) load(ctx context.Context, st store.Store, u *store.PointerUpdate) error {
	k := ptrKey{u.ConvID, u.User, u.Kind}
	h.mu.Lock()
	_, held := h.pending[k]
	_, ok := h.known[k]
	h.mu.Unlock()
	if held || ok {
		return nil
	}
	p, err := st.Pointers(ctx, u.ConvID, u.User)
	if err != nil {
		return fmt.Errorf("pointers of %s in %d: %w", u.User, u.ConvID, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.known) >= maxKnownPointers {
		clear(h.known)
	}
	h.known[ptrKey{u.ConvID, u.User, wire.ReceiptDelivered}] = max(h.known[ptrKey{u.ConvID, u.User, wire.ReceiptDelivered}], p.Delivered)
	h.known[ptrKey{u.ConvID, u.User, wire.ReceiptRead}] = max(h.known[ptrKey{u.ConvID, u.User, wire.ReceiptRead}], p.Read)
	return nil
}

// advances reports whether u (after load) moves its pointer beyond what
// is held or stored: then its receipt event is due. It changes nothing.
func (h *heldPointers) advances(u *store.PointerUpdate) bool {
	k := ptrKey{u.ConvID, u.User, u.Kind}
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := h.pending[k]; p != nil {
		return u.Seq > p.seq
	}
	return u.Seq > h.known[k]
}

// hold holds u, an update that advances (see advances), whose earliest
// record is rec. The processor calls it only once the update's receipt
// event is acknowledged: a batch retried before that decides and emits
// again.
func (h *heldPointers) hold(u *store.PointerUpdate, rec *kgo.Record, now time.Time) {
	k := ptrKey{u.ConvID, u.User, u.Kind}
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := h.pending[k]; p != nil {
		p.seq = max(p.seq, u.Seq)
		return
	}
	if u.Seq <= h.known[k] {
		return
	}
	h.order = append(h.order, k)
	h.pending[k] = &heldPtr{
		seq: u.Seq, since: now,
		tp: consume.TopicPartition{Topic: rec.Topic, Partition: rec.Partition},
		at: kgo.EpochOffset{Epoch: rec.LeaderEpoch, Offset: rec.Offset},
	}
}

// size is how many pointers are held.
func (h *heldPointers) size() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.pending)
}

// forget drops what is known of stored pointers (not what is held).
func (h *heldPointers) forget() {
	h.mu.Lock()
	clear(h.known)
	h.mu.Unlock()
}

// Floors implements consume.Deferrer.
func (p *Processor) Floors(floors map[consume.TopicPartition]kgo.EpochOffset) {
	h := p.held
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.pending {
		if f, ok := floors[e.tp]; !ok || e.at.Offset < f.Offset {
			floors[e.tp] = e.at
		}
	}
}

// Flush implements consume.Deferrer: one store commit writes every held
// pointer that has waited a window (all: every held pointer). It reads
// only the due prefix of h.order, so the call consume.Run makes after
// every batch is cheap while nothing is due.
func (p *Processor) Flush(ctx context.Context, all bool) (bool, error) {
	h := p.held
	if h == nil {
		return false, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := p.cfg.Now()
	h.batch.Reset()
	live := h.order[h.head:]
	n := 0
	for _, k := range live {
		e := h.pending[k]
		if !all && now.Sub(e.since) < h.window {
			break
		}
		h.batch.Pointers = append(h.batch.Pointers, store.PointerUpdate{ConvID: k.conv, User: k.user, Kind: k.kind, Seq: e.seq})
		n++
	}
	if n == 0 {
		return len(h.pending) > 0, nil
	}
	start := time.Now()
	err := p.deps.Store.Commit(ctx, &h.batch)
	p.cfg.Metrics.CommitSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return true, fmt.Errorf("flush held receipt pointers: %w", err)
	}
	if len(h.known) >= maxKnownPointers {
		clear(h.known)
	}
	for i, k := range live[:n] {
		u := &h.batch.Pointers[i]
		if u.Advanced {
			p.cfg.Metrics.ReceiptWrites.Inc()
		}
		h.known[k] = max(h.known[k], u.Seq)
		delete(h.pending, k)
	}
	clear(live[:n]) // drop the user strings
	h.head += n
	if h.head == len(h.order) {
		h.order, h.head = h.order[:0], 0
	} else if h.head > len(h.order)/2 {
		h.order, h.head = append(h.order[:0], h.order[h.head:]...), 0
	}
	p.cfg.Metrics.ReceiptsHeld.Set(float64(len(h.pending)))
	return len(h.pending) > 0, nil
}

// Package messages is the core's write path: it consumes chat.inbound,
// owns the per-conversation seq, persists, acknowledges, and emits to
// chat.events. It also answers the read-only requests that reach it through
// the same topic (RESUME, HISTORY) and opens direct conversations.
//
// Ownership: chat.inbound is keyed by conversation, so at any moment one
// consumer in the group owns a conversation and assigns its seqs with no
// coordination. The owner caches (conversation, last seq) and reloads both
// from the store after any partition change or failed commit, so a seq is
// never reused or skipped, also across restarts and rebalances. A core that
// lost its partitions without knowing yet (paused, or cut off from the
// broker: a zombie) may still hold a batch and a stale cache; the store
// refuses its commit (store.ErrSeqConflict, any seq not above the stored
// last seq), so it cannot overwrite what the new owner stored, and its
// retry reloads and dedupes like any other.
//
// Per polled batch (Handle):
//
//	decode each record -> validate -> assign seq / dedupe / collect pointers
//	store.Commit (one durable write for the whole batch)
//	ACK every SEND (and re-ACK resends) -> Router -> the sender's gateway
//	produce chat.events (messages and advanced pointers), wait for acks
//	return nil -> offsets are committed by consume.Run
//
// A crash anywhere before the offset commit re-delivers the batch; dedupe
// by client_msg_id turns re-delivered SENDs into re-ACKs and re-emitted
// events, so nothing is lost and nothing is stored twice.
package messages

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/panjf2000/ants/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatd-dev/chatd/core/bus"
	"github.com/chatd-dev/chatd/core/events"
	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// IDGenerator mints message ids (Snowflake in production).
type IDGenerator interface{ Next() uint64 }

// EventProducer publishes chat.events records and waits for their acks.
type EventProducer interface {
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
}

// Config tunes the processor. Zero values mean defaults.
type Config struct {
	// ResumeCap bounds the messages replayed for one RESUME cursor
	// (default 1,000); RESUMED then says truncated and the client resumes
	// again from its new cursor.
	ResumeCap int
	// ResumeNewCap is how many of the newest messages a RESUME replays for
	// a conversation the client did not list (default 50).
	ResumeNewCap int
	// ReadWorkers bounds concurrent RESUME/HISTORY handling (default 64).
	ReadWorkers int
	// MaxGroupSize caps a group's members (default DefaultMaxGroupSize).
	MaxGroupSize int
	// PullAbove is the member count above which a group is a channel: its
	// messages are pushed only to connections focused on it (core/fanout,
	// the gateway), and a FOCUS on it is answered with its CONV. Default
	// DefaultPullAbove; the fanout must use the same value.
	PullAbove int
	// ReceiptWriteBehind is how long a group's delivered/read pointer
	// updates are held before one store write per pointer (behind.go;
	// default DefaultReceiptWriteBehind, negative: written in the batch's
	// commit like every other update). With it on, give consume.Run
	// offsets from consume.NewDeferredOffsets(processor).
	ReceiptWriteBehind time.Duration
	Logger             *slog.Logger
	Metrics            *Metrics
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time
}

// Deps are the processor's collaborators.
type Deps struct {
	Store  store.Store
	Router routing.Router
	IDs    IDGenerator
	Events EventProducer
	// Presence answers FOCUS on a direct conversation with the peer's
	// PRESENCE; nil answers nothing.
	Presence routing.Presence
}

// Processor handles chat.inbound batches. Handle must be called from one
// goroutine at a time (consume.Run does); Invalidate may be called from any.
type Processor struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	pool *ants.Pool

	mu    sync.Mutex // guards convs; held only for map access
	convs map[uint64]*convState

	// Scratch reused across Handle calls (single caller).
	batch   store.Batch
	dec     wire.Decoder
	env     wire.Envelope
	replies []reply
	pubs    []routing.Publication
	evs     []*kgo.Record
	sent    map[dedupeKey]int
	// found holds the dedupe lookups of the polled batch's SENDs, made in
	// one store call before the batch is handled (prefetchDedupe).
	found      map[dedupeKey]store.ClientMsgResult
	lookupKeys []store.ClientMsgKey
	// emitted holds the ids of messages this process put on chat.events
	// (bounded; forgetting only costs a harmless duplicate emit).
	emitted map[uint64]struct{}
	// ptrMeta[i] describes batch.Pointers[i].
	ptrMeta []ptrMeta
	// typingEvs are this batch's typing events, produced with the others.
	typingEvs []*kgo.Record
	// ptrIdx finds a pointer's update in batch.Pointers (coalescing).
	ptrIdx map[ptrKey]int
	// held is the write-behind of group receipt pointers (nil: off);
	// deferred are this batch's updates bound for it.
	held     *heldPointers
	deferred []deferredUpdate
	// rec is the record being handled.
	rec   *kgo.Record
	frame []byte
	out   []byte
}

type convState struct {
	conv    store.Conversation
	lastSeq uint64
}

type dedupeKey struct {
	conv   uint64
	sender string
	cmid   string
}

// reply is a frame to one connection, sent after the batch commits.
type reply struct {
	gateway string
	conn    uint64
	frame   []byte
}

// New returns a processor. Close releases its worker pool.
func New(cfg Config, deps Deps) (*Processor, error) {
	if cfg.ResumeCap <= 0 {
		cfg.ResumeCap = 1000
	}
	if cfg.ResumeNewCap <= 0 {
		cfg.ResumeNewCap = 50
	}
	if cfg.ReadWorkers <= 0 {
		cfg.ReadWorkers = 64
	}
	if cfg.MaxGroupSize <= 0 {
		cfg.MaxGroupSize = DefaultMaxGroupSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.PullAbove <= 0 {
		cfg.PullAbove = DefaultPullAbove
	}
	if cfg.ReceiptWriteBehind == 0 {
		cfg.ReceiptWriteBehind = DefaultReceiptWriteBehind
	}
	pool, err := ants.NewPool(cfg.ReadWorkers, ants.WithNonblocking(false))
	if err != nil {
		return nil, fmt.Errorf("messages: read pool: %w", err)
	}
	var held *heldPointers
	if cfg.ReceiptWriteBehind > 0 {
		held = newHeldPointers(cfg.ReceiptWriteBehind)
	}
	return &Processor{
		held:    held,
		cfg:     cfg,
		deps:    deps,
		log:     cfg.Logger,
		pool:    pool,
		convs:   make(map[uint64]*convState),
		sent:    make(map[dedupeKey]int),
		found:   make(map[dedupeKey]store.ClientMsgResult),
		ptrIdx:  make(map[ptrKey]int),
		emitted: make(map[uint64]struct{}),
	}, nil
}

// Close waits for in-flight reads and releases the pool.
func (p *Processor) Close() {
	_ = p.pool.ReleaseTimeout(5 * time.Second)
}

// Invalidate drops every cached conversation state. Call it when partitions
// are assigned or revoked: a new owner must reload the last seq from the
// store.
func (p *Processor) Invalidate() {
	p.mu.Lock()
	clear(p.convs)
	p.mu.Unlock()
	if p.held != nil {
		p.held.forget()
	}
}

// Handle processes one polled batch of chat.inbound records (see package
// doc). It returns an error only when the batch must be retried.
func (p *Processor) Handle(ctx context.Context, recs []*kgo.Record) error {
	p.trimCache()
	p.batch.Reset()
	p.ptrMeta = p.ptrMeta[:0]
	clear(p.ptrIdx)
	p.replies = p.replies[:0]
	clear(p.sent)
	clear(p.typingEvs)
	p.typingEvs = p.typingEvs[:0]
	var acks []pendingAck
	nowMS := p.cfg.Now().UnixMilli()
	if err := p.prefetchDedupe(ctx, recs); err != nil {
		p.Invalidate()
		return err
	}

	for _, rec := range recs {
		p.rec = rec
		if err := p.env.Decode(rec.Value); err != nil {
			p.log.Warn("dropping malformed inbound record", "partition", rec.Partition, "offset", rec.Offset, "err", err)
			p.cfg.Metrics.Dropped.Inc()
			continue
		}
		if d := nowMS - int64(p.env.ReceivedMS); p.env.ReceivedMS != 0 && d >= 0 {
			p.cfg.Metrics.InboundDelay.Observe(float64(d) / 1000)
		}
		t, _, err := p.dec.Decode(p.env.Frame)
		if err != nil {
			p.replyError(&p.env, wire.CodeOf(err), 0, 0, 0, nil, "malformed frame")
			continue
		}
		switch t {
		case wire.TypeSend:
			a, err := p.send(ctx, &p.env, &p.dec.Send)
			if err != nil {
				p.Invalidate()
				return err
			}
			if a != nil {
				acks = append(acks, *a)
			}
		case wire.TypeReceipt:
			if err := p.receipt(ctx, &p.env, &p.dec.Receipt); err != nil {
				p.Invalidate()
				return err
			}
		case wire.TypeOpenDirect:
			if err := p.openDirect(ctx, &p.env, &p.dec.OpenDirect); err != nil {
				p.Invalidate()
				return err
			}
		case wire.TypeCreateGroup, wire.TypeGroupChange:
			var a *pendingAck
			if t == wire.TypeCreateGroup {
				a, err = p.createGroup(ctx, &p.env, rec, &p.dec.CreateGroup)
			} else {
				a, err = p.groupChange(ctx, &p.env, rec, &p.dec.GroupChange)
			}
			if err != nil {
				p.Invalidate()
				return err
			}
			if a != nil {
				acks = append(acks, *a)
			}
		case wire.TypeTyping:
			if err := p.typing(ctx, &p.env, &p.dec.Typing); err != nil {
				p.Invalidate()
				return err
			}
		case wire.TypeResume, wire.TypeHistory, wire.TypeFocus:
			// Read-only and order-insensitive: answered off the write path.
			// rec.Value stays valid: kgo never reuses record memory.
			p.submitRead(ctx, rec.Value)
		default:
			p.replyError(&p.env, wire.CodeUnexpectedType, t, 0, 0, nil, "not a request type")
		}
	}

	if err := p.splitHeld(ctx); err != nil {
		p.Invalidate()
		return err
	}
	if len(p.batch.Messages) > 0 || len(p.batch.Pointers) > 0 || len(p.batch.Conversations) > 0 {
		start := time.Now()
		err := p.deps.Store.Commit(ctx, &p.batch)
		p.cfg.Metrics.CommitSeconds.Observe(time.Since(start).Seconds())
		if err != nil {
			// The cache ran ahead of the store; make the retry reload it.
			p.Invalidate()
			if errors.Is(err, store.ErrSeqConflict) {
				// Fenced: another core owns (or owned) one of these
				// conversations and committed since this one read its last
				// seq. Nothing was written; the retry reloads the last seqs
				// and dedupes against what the other core stored.
				p.cfg.Metrics.SeqConflicts.Inc()
			}
			return fmt.Errorf("commit: %w", err)
		}
	}

	// Durable: acknowledge, then announce. Typing events (never stored)
	// are produced with the batch's other events.
	p.evs = append(p.evs[:0], p.typingEvs...)
	for i := range acks {
		a := &acks[i]
		m := p.ackedMessage(a)
		if !a.noAck {
			ack := wire.Ack{ClientMsgID: []byte(m.ClientMsgID), ConvID: m.ConvID, MessageID: m.MessageID, Seq: m.Seq, ServerTimeMS: m.ServerTimeMS}
			p.replies = append(p.replies, reply{gateway: a.gateway, conn: a.conn, frame: ack.Append(nil, 0)})
		}
		if a.emit {
			p.evs = append(p.evs, &kgo.Record{
				Topic: bus.TopicEvents,
				Key:   wire.ConvKey(nil, m.ConvID),
				Value: events.AppendMsg(nil, EncodeMsg(nil, m, 0)),
			})
		}
	}
	for i := range p.batch.Pointers {
		pu := &p.batch.Pointers[i]
		if !pu.Advanced {
			continue
		}
		if !p.ptrMeta[i].explicit {
			p.cfg.Metrics.ImpliedReads.Inc()
			continue
		}
		p.cfg.Metrics.ReceiptWrites.Inc()
		p.receiptEvent(pu, &p.ptrMeta[i])
	}
	// Held updates are announced now and written later (behind.go).
	for i := range p.deferred {
		d := &p.deferred[i]
		if p.held.advances(&d.u) {
			p.receiptEvent(&d.u, &d.m)
		}
	}
	p.flushReplies(ctx)
	acked := 0
	for i := range acks {
		if !acks[i].noAck {
			acked++
		}
	}
	p.cfg.Metrics.Acked.Add(float64(acked))

	if len(p.evs) > 0 {
		if err := p.produceEvents(ctx); err != nil {
			// Committed but not announced: the retry re-ACKs and re-emits
			// through dedupe. The cache matches the store, keep it.
			return err
		}
	}
	// Announced: hold them (a retry before this point decides and
	// announces them again).
	if len(p.deferred) > 0 {
		now := p.cfg.Now()
		for i := range p.deferred {
			d := &p.deferred[i]
			p.held.hold(&d.u, d.m.rec, now)
		}
		p.cfg.Metrics.ReceiptsHeld.Set(float64(p.held.size()))
	}
	if len(p.emitted) > maxEmittedMemory {
		clear(p.emitted)
	}
	for i := range acks {
		if acks[i].emit {
			p.emitted[p.ackedMessage(&acks[i]).MessageID] = struct{}{}
		}
	}
	return nil
}

// receiptEvent queues the receipt event of the pointer update u.
func (p *Processor) receiptEvent(u *store.PointerUpdate, m *ptrMeta) {
	r := events.Receipt{Conv: u.ConvID, Kind: u.Kind, Seq: u.Seq, User: []byte(u.User), Device: []byte(m.device), Group: m.group}
	p.evs = append(p.evs, &kgo.Record{Topic: bus.TopicEvents, Key: wire.ConvKey(nil, u.ConvID), Value: r.Append(nil)})
}

// deferredUpdate is a batch's pointer update bound for the write-behind.
type deferredUpdate struct {
	u store.PointerUpdate
	m ptrMeta
}

// splitHeld moves the batch's updates that are written behind out of the
// batch's commit into p.deferred, after making sure their stored values
// are known (a store read for a pointer not seen lately).
func (p *Processor) splitHeld(ctx context.Context) error {
	p.deferred = p.deferred[:0]
	if p.held == nil {
		return nil
	}
	j := 0
	for i := range p.batch.Pointers {
		u, m := p.batch.Pointers[i], p.ptrMeta[i]
		if p.held.holds(&u, &m) {
			if err := p.held.load(ctx, p.deps.Store, &u); err != nil {
				return err
			}
			p.deferred = append(p.deferred, deferredUpdate{u, m})
			continue
		}
		p.batch.Pointers[j], p.ptrMeta[j] = u, m
		j++
	}
	p.batch.Pointers, p.ptrMeta = p.batch.Pointers[:j], p.ptrMeta[:j]
	return nil
}

// ackedMessage is the message an ACK is owed for.
func (p *Processor) ackedMessage(a *pendingAck) *store.Message {
	if a.existing != nil {
		return a.existing
	}
	return &p.batch.Messages[a.idx]
}

// maxEmittedMemory bounds Processor.emitted.
const maxEmittedMemory = 100_000

// prefetchDedupe looks up the dedupe entries of every SEND in recs that
// send will check, all in one store call, into p.found. The records are
// then handled one after another; with a store across a network (the
// remote store, ScyllaDB) one lookup per SEND in sequence was a round trip
// each, and that sequence bounded the processor's rate (in the local
// cluster about 1,600 SENDs a second per core at 615 µs a lookup). What a
// prefetched answer says holds while the batch is handled: only this
// processor writes the partition's conversations, and their new messages
// are committed after the batch; a SEND repeated within the batch is
// caught by p.sent first. A zombie's write is caught by the seq fence, and
// the retried batch prefetches again.
func (p *Processor) prefetchDedupe(ctx context.Context, recs []*kgo.Record) error {
	clear(p.found)
	p.lookupKeys = p.lookupKeys[:0]
	for _, rec := range recs {
		if p.env.Decode(rec.Value) != nil {
			continue
		}
		t, _, err := p.dec.Decode(p.env.Frame)
		if err != nil || t != wire.TypeSend {
			continue
		}
		s := &p.dec.Send
		if s.ConvID == 0 || len(s.ClientMsgID) == 0 || len(s.ClientMsgID) > wire.MaxIDLen {
			continue // refused before any lookup
		}
		k := dedupeKey{conv: s.ConvID, sender: string(p.env.User), cmid: string(s.ClientMsgID)}
		if _, ok := p.found[k]; ok {
			continue
		}
		p.found[k] = store.ClientMsgResult{}
		p.lookupKeys = append(p.lookupKeys, store.ClientMsgKey{ConvID: k.conv, Sender: k.sender, ClientMsgID: k.cmid})
	}
	if len(p.lookupKeys) == 0 {
		return nil
	}
	res, err := p.deps.Store.LookupClientMsgs(ctx, p.lookupKeys)
	if err != nil {
		clear(p.found)
		return fmt.Errorf("lookup client_msg_ids: %w", err)
	}
	for i, k := range p.lookupKeys {
		p.found[dedupeKey{conv: k.ConvID, sender: k.Sender, cmid: k.ClientMsgID}] = res[i]
	}
	return nil
}

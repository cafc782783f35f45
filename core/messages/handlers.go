package messages

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatd-dev/chatd/core/auth"
	"github.com/chatd-dev/chatd/core/bus"
	"github.com/chatd-dev/chatd/core/events"
	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// maxCachedConvs bounds the conversation cache. It is only trimmed between
// batches: mid-batch the cache holds seqs not yet committed.
const maxCachedConvs = 200_000

// pendingAck is an ACK owed once the batch commits.
type pendingAck struct {
	gateway  string
	conn     uint64
	idx      int            // index in batch.Messages, when existing == nil
	existing *store.Message // a resend of an already stored message
	emit     bool           // emit the message to chat.events
	noAck    bool           // a system message: emitted, never ACKed
}

func (p *Processor) send(ctx context.Context, env *wire.Envelope, s *wire.Send) (*pendingAck, error) {
	if s.ConvID == 0 || len(s.ClientMsgID) == 0 || len(s.ClientMsgID) > wire.MaxIDLen ||
		s.Kind < wire.KindText || s.Kind > wire.KindBinary || len(s.Body) > wire.MaxBodySize {
		p.queueError(env, wire.CodeInvalidArgument, wire.TypeSend, 0, s.ConvID, s.ClientMsgID, "bad send")
		return nil, nil
	}
	if s.Kind == wire.KindSystem {
		// Checked by the gateway too; the core does not rely on it.
		p.queueError(env, wire.CodeInvalidArgument, wire.TypeSend, 0, s.ConvID, s.ClientMsgID, "kind 2 (system) is written by the server only")
		return nil, nil
	}
	if reservedCMID(s.ClientMsgID) {
		p.queueError(env, wire.CodeInvalidArgument, wire.TypeSend, 0, s.ConvID, s.ClientMsgID, "client_msg_id may not start with ~ (reserved for the server)")
		return nil, nil
	}
	cs, err := p.conv(ctx, s.ConvID)
	if errors.Is(err, store.ErrNotFound) {
		p.queueError(env, wire.CodeConvNotFound, wire.TypeSend, 0, s.ConvID, s.ClientMsgID, "no such conversation")
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	user := string(env.User)
	if !isMember(&cs.conv, user) {
		p.queueError(env, wire.CodeNotMember, wire.TypeSend, 0, s.ConvID, s.ClientMsgID, "not a member")
		return nil, nil
	}
	gw := string(env.Gateway)
	key := dedupeKey{conv: s.ConvID, sender: user, cmid: string(s.ClientMsgID)}
	if idx, ok := p.sent[key]; ok {
		// The same SEND twice in one batch: the first one emits.
		return &pendingAck{gateway: gw, conn: env.Conn, idx: idx}, nil
	}
	var old store.Message
	var found bool
	if r, ok := p.found[key]; ok {
		old, found = r.Message, r.Found // prefetchDedupe
	} else if old, found, err = p.deps.Store.LookupClientMsg(ctx, s.ConvID, user, key.cmid); err != nil {
		return nil, fmt.Errorf("lookup client_msg_id: %w", err)
	}
	if found {
		// A resend of a stored message: its ACK was lost, or this record is
		// re-delivered after a crash. Always re-ACK. Re-emit only when this
		// process has not emitted the message itself: after a crash (or a
		// partition move) the original emit may never have happened, while
		// a plain client resend must not deliver the message twice.
		p.cfg.Metrics.Deduped.Inc()
		_, emitted := p.emitted[old.MessageID]
		return &pendingAck{gateway: gw, conn: env.Conn, existing: &old, emit: !emitted}, nil
	}
	cs.lastSeq++
	p.batch.Messages = append(p.batch.Messages, store.Message{
		ConvID:       s.ConvID,
		MessageID:    p.deps.IDs.Next(),
		Seq:          cs.lastSeq,
		ServerTimeMS: uint64(p.cfg.Now().UnixMilli()),
		Sender:       user,
		SenderDevice: string(env.Device),
		ClientMsgID:  key.cmid,
		Kind:         s.Kind,
		Body:         s.Body, // aliases the record; Commit copies it
	})
	idx := len(p.batch.Messages) - 1
	p.sent[key] = idx
	p.impliedRead(s.ConvID, user, cs.lastSeq)
	return &pendingAck{gateway: gw, conn: env.Conn, idx: idx, emit: true}, nil
}

func (p *Processor) receipt(ctx context.Context, env *wire.Envelope, r *wire.Receipt) error {
	if r.ConvID == 0 || (r.Kind != wire.ReceiptDelivered && r.Kind != wire.ReceiptRead) {
		p.queueError(env, wire.CodeInvalidArgument, wire.TypeReceipt, 0, r.ConvID, nil, "bad receipt")
		return nil
	}
	cs, err := p.conv(ctx, r.ConvID)
	if errors.Is(err, store.ErrNotFound) {
		p.queueError(env, wire.CodeConvNotFound, wire.TypeReceipt, 0, r.ConvID, nil, "no such conversation")
		return nil
	}
	if err != nil {
		return err
	}
	user := string(env.User)
	if !isMember(&cs.conv, user) {
		p.queueError(env, wire.CodeNotMember, wire.TypeReceipt, 0, r.ConvID, nil, "not a member")
		return nil
	}
	if r.UpToSeq > cs.lastSeq {
		p.queueError(env, wire.CodeSeqBeyondLatest, wire.TypeReceipt, 0, r.ConvID, nil,
			fmt.Sprintf("up_to_seq %d beyond latest %d", r.UpToSeq, cs.lastSeq))
		return nil
	}
	if r.UpToSeq == 0 {
		return nil
	}
	dev := string(env.Device)
	// Groups over DeliveredMaxGroup members keep no "delivered": in a big
	// group every member's device acknowledges every message, the largest
	// share of receipt traffic, and no one reads "delivered to 700 of 800".
	group := cs.conv.Kind == wire.ConvGroup
	bigGroup := group && len(cs.conv.Members) > DeliveredMaxGroup
	if r.Kind == wire.ReceiptDelivered && bigGroup {
		p.cfg.Metrics.ReceiptsSkipped.Inc()
		return nil
	}
	if r.Kind == wire.ReceiptRead && !bigGroup {
		// Read implies delivered: the sender's UI never shows "read" without
		// "delivered".
		p.pointer(r.ConvID, user, wire.ReceiptDelivered, r.UpToSeq, ptrMeta{device: dev, group: group, explicit: true})
	}
	p.pointer(r.ConvID, user, r.Kind, r.UpToSeq, ptrMeta{device: dev, group: group, explicit: true})
	return nil
}

// DeliveredMaxGroup is the largest group whose "delivered" receipts are
// kept (the rule: groups over 256 members skip "delivered").
const DeliveredMaxGroup = 256

type ptrKey struct {
	conv uint64
	user string
	kind wire.ReceiptKind
}

// pointer adds a pointer update to the batch, coalesced: one update per
// pointer per batch, at the highest seq asked (a device that sends
// "read up to 5" then "up to 6" within one poll costs one store write and
// one event). m.device is the device of the latest explicit update; an
// update is explicit (announced with a receipt event) when any of the
// updates coalesced into it is.
func (p *Processor) pointer(conv uint64, user string, kind wire.ReceiptKind, seq uint64, m ptrMeta) {
	k := ptrKey{conv, user, kind}
	if i, ok := p.ptrIdx[k]; ok {
		if seq > p.batch.Pointers[i].Seq {
			p.batch.Pointers[i].Seq = seq
		}
		if m.explicit {
			p.ptrMeta[i].device, p.ptrMeta[i].explicit = m.device, true
		}
		p.cfg.Metrics.ReceiptsCoalesced.Inc()
		return
	}
	p.ptrIdx[k] = len(p.batch.Pointers)
	m.rec = p.rec
	p.batch.Pointers = append(p.batch.Pointers, store.PointerUpdate{ConvID: conv, User: user, Kind: kind, Seq: seq})
	p.ptrMeta = append(p.ptrMeta, m)
}

// impliedRead moves user's Seen pointer (store.PointerSeen) up to seq:
// writing in a conversation means having seen it, so the inbox's unread
// count (last seq - max(read, seen)) never counts one's own messages. It
// rides in the batch's one durable write and is not announced. It is not
// the read pointer: a read receipt for earlier messages must still advance
// that, and reach their sender, after the member wrote.
func (p *Processor) impliedRead(conv uint64, user string, seq uint64) {
	p.pointer(conv, user, store.PointerSeen, seq, ptrMeta{})
}

func (p *Processor) openDirect(ctx context.Context, env *wire.Envelope, o *wire.OpenDirect) error {
	user, peer := string(env.User), string(o.Peer)
	if !auth.ValidUserID(peer) || peer == user {
		p.queueError(env, wire.CodeInvalidArgument, wire.TypeOpenDirect, o.ReqID, 0, nil, "bad peer")
		return nil
	}
	want := DirectConversation(user, peer, uint64(p.cfg.Now().UnixMilli()))
	// A conversation created earlier in this batch is answered from it.
	for i := range p.batch.Conversations {
		if c := &p.batch.Conversations[i]; c.ID == want.ID {
			p.queueFrame(env, EncodeConv(nil, o.ReqID, c, 0))
			return nil
		}
	}
	c, err := p.deps.Store.Conversation(ctx, want.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Created with the batch's one durable write; the CONV goes out
		// after it, like ACKs.
		p.batch.Conversations = append(p.batch.Conversations, want)
		p.queueFrame(env, EncodeConv(nil, o.ReqID, &want, 0))
		return nil
	case err != nil:
		return fmt.Errorf("open direct: %w", err)
	}
	if c.Kind != wire.ConvDirect || !slices.Equal(c.Members, want.Members) {
		p.queueError(env, wire.CodeInternal, wire.TypeOpenDirect, o.ReqID, 0, nil, "conversation id collision")
		return nil
	}
	last, err := p.deps.Store.LastSeq(ctx, c.ID)
	if err != nil {
		return fmt.Errorf("last seq: %w", err)
	}
	p.queueFrame(env, EncodeConv(nil, o.ReqID, &c, last))
	return nil
}

// conv returns the cached state of a conversation, loading it on a miss.
func (p *Processor) conv(ctx context.Context, id uint64) (*convState, error) {
	p.mu.Lock()
	cs := p.convs[id]
	p.mu.Unlock()
	if cs != nil {
		return cs, nil
	}
	c, err := p.deps.Store.Conversation(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		// Created earlier in this batch: it commits with these messages.
		for i := range p.batch.Conversations {
			if p.batch.Conversations[i].ID == id {
				c, err = p.batch.Conversations[i], nil
				break
			}
		}
	}
	if err != nil {
		return nil, err
	}
	last, err := p.deps.Store.LastSeq(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("last seq: %w", err)
	}
	cs = &convState{conv: c, lastSeq: last}
	p.mu.Lock()
	p.convs[id] = cs
	p.mu.Unlock()
	return cs, nil
}

// trimCache empties the cache when it grew past its bound. Only called
// between batches, when every cached seq is committed.
func (p *Processor) trimCache() {
	p.mu.Lock()
	if len(p.convs) > maxCachedConvs {
		clear(p.convs)
	}
	p.mu.Unlock()
}

func isMember(c *store.Conversation, user string) bool {
	_, ok := slices.BinarySearch(c.Members, user)
	return ok
}

// queueError queues an ERROR for the request's connection.
func (p *Processor) queueError(env *wire.Envelope, code wire.Code, ref wire.Type, reqID, conv uint64, cmid []byte, msg string) {
	p.cfg.Metrics.Errors.WithLabelValues(code.String()).Inc()
	e := wire.Error{Code: code, RefType: ref, ReqID: reqID, ConvID: conv, ClientMsgID: cmid, Message: []byte(msg)}
	p.queueFrame(env, e.Append(nil, 0))
}

// replyError is queueError for Handle's callers that cannot queue.
func (p *Processor) replyError(env *wire.Envelope, code wire.Code, ref wire.Type, reqID, conv uint64, cmid []byte, msg string) {
	p.queueError(env, code, ref, reqID, conv, cmid, msg)
}

func (p *Processor) queueFrame(env *wire.Envelope, frame []byte) {
	p.replies = append(p.replies, reply{gateway: string(env.Gateway), conn: env.Conn, frame: frame})
}

// flushReplies routes every queued reply, all in one PublishMany (one
// round trip with Redis). Routing is best effort: a lost ACK makes the
// client resend, which dedupe answers with the same ACK.
func (p *Processor) flushReplies(ctx context.Context) {
	var conn [1]uint64
	pubs := p.pubs[:0]
	for _, r := range p.replies {
		conn[0] = r.conn
		pubs = append(pubs, routing.Publication{Gateway: r.gateway, Batch: wire.AppendBatch(nil, conn[:], r.frame)})
	}
	if err := routing.PublishMany(ctx, p.deps.Router, pubs); err != nil {
		p.cfg.Metrics.RouteErrors.Inc()
	}
	clear(pubs)
	p.pubs = pubs[:0]
	p.replies = p.replies[:0]
}

// produceEvents publishes p.evs, retrying the failed records until they are
// acknowledged or ctx ends. Events are emitted after the durable commit; a
// crash before they are acknowledged re-delivers the inbound batch, and
// dedupe re-emits them.
func (p *Processor) produceEvents(ctx context.Context) error {
	recs := p.evs
	for {
		res := p.deps.Events.ProduceSync(ctx, recs...)
		var failed []*kgo.Record
		var firstErr error
		for _, r := range res {
			if r.Err != nil {
				if firstErr == nil {
					firstErr = r.Err
				}
				failed = append(failed, &kgo.Record{Topic: r.Record.Topic, Key: r.Record.Key, Value: r.Record.Value})
			}
		}
		if len(failed) == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("produce events: %w", firstErr)
		}
		p.log.Warn("produce events failed; retrying", "records", len(failed), "err", firstErr)
		p.cfg.Metrics.EventErrors.Inc()
		recs = failed
	}
}

// EncodeMsg appends m as a MSG frame with flags.
func EncodeMsg(dst []byte, m *store.Message, flags wire.Flags) []byte {
	w := wire.Msg{
		ConvID:       m.ConvID,
		MessageID:    m.MessageID,
		Seq:          m.Seq,
		ServerTimeMS: m.ServerTimeMS,
		Sender:       []byte(m.Sender),
		SenderDevice: []byte(m.SenderDevice),
		ClientMsgID:  []byte(m.ClientMsgID),
		Kind:         m.Kind,
		Body:         m.Body,
	}
	return w.Append(dst, flags)
}

// EncodeConv appends a CONV frame describing c.
// It lists at most wire.MaxConvListed members (the first, in id order) with
// their roles; MemberTotal says how many there are.
func EncodeConv(dst []byte, reqID uint64, c *store.Conversation, lastSeq uint64) []byte {
	listed := c.Members[:min(len(c.Members), wire.MaxConvListed)]
	w := wire.Conv{ReqID: reqID, ConvID: c.ID, Kind: c.Kind, LastSeq: lastSeq,
		Members: make([][]byte, len(listed)), Name: []byte(c.Name),
		MemberTotal: uint64(len(c.Members)), Roles: make([]byte, len(listed))}
	for i, m := range listed {
		w.Members[i] = []byte(m)
		if _, admin := slices.BinarySearch(c.Admins, m); admin {
			w.Roles[i] = wire.RoleAdmin
		}
	}
	return w.Append(dst, 0)
}

var errCollision = errors.New("messages: direct conversation id collision")

// DirectID is the id of the 1:1 conversation between a and b: a hash of the
// ordered pair, so either side can open it, on any core instance, with no
// coordination and no race. 63 bits, never 0.
func DirectID(a, b string) uint64 {
	if b < a {
		a, b = b, a
	}
	h := sha256.New()
	h.Write([]byte("chatd/direct\x00"))
	h.Write([]byte(a))
	h.Write([]byte{0})
	h.Write([]byte(b))
	var sum [sha256.Size]byte
	id := binary.BigEndian.Uint64(h.Sum(sum[:0])) >> 1
	if id == 0 {
		id = 1
	}
	return id
}

// DirectConversation is the direct conversation of a and b as it is
// created.
func DirectConversation(a, b string, nowMS uint64) store.Conversation {
	members := []string{a, b}
	slices.Sort(members)
	return store.Conversation{ID: DirectID(a, b), Kind: wire.ConvDirect, Members: members, CreatedMS: nowMS}
}

// EnsureDirect creates, or finds, the direct conversation of a and b with
// its own durable write (the HTTP API's path; the socket path batches).
func EnsureDirect(ctx context.Context, st store.Store, a, b string, nowMS uint64) (store.Conversation, error) {
	want := DirectConversation(a, b, nowMS)
	c, err := st.EnsureConversation(ctx, want)
	if err != nil {
		return store.Conversation{}, fmt.Errorf("ensure direct conversation: %w", err)
	}
	if c.Kind != wire.ConvDirect || !slices.Equal(c.Members, want.Members) {
		return store.Conversation{}, errCollision
	}
	return c, nil
}

var decoderPool = sync.Pool{New: func() any { return new(readScratch) }}

type readScratch struct {
	env wire.Envelope
	dec wire.Decoder
	out []byte
	buf []byte
}

// ptrMeta is what a pointer update's receipt event needs beyond the
// update: the device that sent it (the latest, when coalesced), whether
// the conversation is a group (its receipt event goes to the reader's own
// devices only), and whether a receipt asked for it (explicit) rather than
// only a send implying it (impliedRead: no event).
type ptrMeta struct {
	device   string
	group    bool
	explicit bool
	// rec is the earliest record of the batch that asked for the update
	// (the write-behind's commit floor).
	rec *kgo.Record
}

// typing relays a member's TYPING to the conversation's other members
// (core/fanout; gateways pass it to the connections focused on it). It is
// never stored; the gateway has already rate-limited it.
func (p *Processor) typing(ctx context.Context, env *wire.Envelope, t *wire.Typing) error {
	if t.ConvID == 0 || len(t.User) != 0 {
		p.queueError(env, wire.CodeInvalidArgument, wire.TypeTyping, 0, t.ConvID, nil, "bad typing")
		return nil
	}
	cs, err := p.conv(ctx, t.ConvID)
	if errors.Is(err, store.ErrNotFound) {
		p.queueError(env, wire.CodeConvNotFound, wire.TypeTyping, 0, t.ConvID, nil, "no such conversation")
		return nil
	}
	if err != nil {
		return err
	}
	if !isMember(&cs.conv, string(env.User)) {
		p.queueError(env, wire.CodeNotMember, wire.TypeTyping, 0, t.ConvID, nil, "not a member")
		return nil
	}
	out := wire.Typing{ConvID: t.ConvID, State: t.State, User: env.User}
	p.typingEvs = append(p.typingEvs, &kgo.Record{
		Topic: bus.TopicEvents,
		Key:   wire.ConvKey(nil, t.ConvID),
		Value: events.AppendTyping(nil, out.Append(nil, 0), env.Device),
	})
	return nil
}

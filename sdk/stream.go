package sdk

import (
	"slices"
	"time"

	"github.com/chatd-dev/chatd/wire"
)

// This file orders and deduplicates the message stream. Per conversation:
//
//   - cursor: every seq <= cursor has been queued for the app (or is one of
//     our own acknowledged messages, or was skipped); MSG frames at or below
//     it are duplicates.
//   - buf: seqs above cursor+1 that arrived early, waiting for the gap below
//     them (nil entries are our own acknowledged messages: they hold their
//     seq but are not re-emitted).
//   - latest: the highest seq known to exist. latest > cursor means
//     something is missing and, unless a RESUME answer is in flight, the
//     filler asks for it with HISTORY, bottom-up: before =
//     min(lowest buffered, cursor+1+200, latest+1), limit = before-cursor-1.
//   - committed: what the app has actually received (see pump); this is
//     what CursorStore and Cursors() see, while RESUME uses cursor.
//   - started: the stream has a starting point. A conversation new to this
//     Client does not start at seq 1 but at its recent end, as the server's
//     RESUME does for conversations a client does not list (it replays the
//     newest 50): the first replayed seq of such a conversation, or, for a
//     conversation first seen otherwise (live MSG, ACK, CONV), newConvBackfill
//     messages below the first seq seen. Older messages are for History.

// resumeListMax caps the cursors listed in one RESUME (wire.MaxResumeConvs).
const resumeListMax = wire.MaxResumeConvs

// newConvBackfill is how many messages below the first one seen a stream
// of a conversation new to this Client starts (the server replays the
// newest 50 of a conversation a RESUME does not list).
const newConvBackfill = 50

type convState struct {
	id        uint64
	cursor    uint64
	latest    uint64
	committed uint64
	buf       map[uint64]*Message

	started bool // the stream has a starting point (see above)
	listed  bool // listed in the RESUME in flight

	fillReq  uint64 // req id of the gap-filling HISTORY in flight
	fillWait bool   // a retry of a failed fill is scheduled
}

// fill is a HISTORY request of the gap filler.
type fill struct {
	conv uint64
	from uint64 // cursor when the request was sent
}

func (c *Client) convLocked(id uint64) *convState {
	cv := c.convs[id]
	if cv == nil {
		cv = &convState{id: id, buf: map[uint64]*Message{}}
		c.convs[id] = cv
	}
	return cv
}

func (cv *convState) lowestBuffered() uint64 {
	low := uint64(0)
	for seq := range cv.buf {
		if low == 0 || seq < low {
			low = seq
		}
	}
	return low
}

func (c *Client) onMsgLocked(m *wire.Msg, replay bool) {
	if m.ConvID == 0 || m.Seq == 0 {
		c.log.Warn("chatd: MSG without conversation or seq", "conv", m.ConvID, "seq", m.Seq)
		return
	}
	msg := Message{
		Conv: m.ConvID, ID: m.MessageID, Seq: m.Seq,
		Sender: string(m.Sender), SenderDevice: string(m.SenderDevice),
		ClientMsgID: string(m.ClientMsgID), Kind: m.Kind, Body: slices.Clone(m.Body),
		ServerTime: millisTime(m.ServerTimeMS), Replay: replay,
	}
	wanted := replay && c.offerHistoryLocked(&msg)
	cv := c.convLocked(m.ConvID)
	if !cv.started {
		switch {
		case replay && c.resumeID != 0 && !cv.listed:
			// The newest messages of a conversation RESUME did not list,
			// oldest first: the stream starts here.
			c.startLocked(cv, m.Seq-1)
		case wanted && c.resumeID == 0:
			// Scrollback the app asked for does not start a stream.
			return
		default:
			c.startLocked(cv, m.Seq-1-min(m.Seq-1, newConvBackfill))
		}
	}

	// One of our own pending sends, replayed (RESUME or HISTORY) before its
	// ACK arrived, e.g. because the connection dropped in between: the
	// server has it, so this is as good as the ACK.
	if msg.ClientMsgID != "" && msg.Sender == c.userID && msg.SenderDevice == c.cfg.DeviceID {
		if p := c.byCMID[msg.ClientMsgID]; p != nil && p.conv == msg.Conv {
			c.completeSendLocked(p, Ack{
				ClientMsgID: p.id, Conv: msg.Conv, MessageID: msg.ID, Seq: msg.Seq, ServerTime: msg.ServerTime,
			})
			return
		}
	}
	c.acceptLocked(cv, msg.Seq, msg.ID, &msg, !wanted)
}

// startLocked gives a new conversation's stream its starting point: the
// seqs up to base are not part of it.
func (c *Client) startLocked(cv *convState, base uint64) {
	cv.started = true
	if base > cv.cursor {
		cv.cursor = base
		cv.latest = max(cv.latest, base)
		for seq := range cv.buf {
			if seq <= base {
				delete(cv.buf, seq)
			}
		}
		c.queueLocked(queued{conv: cv.id, seq: base})
		c.drainLocked(cv)
	}
}

// acceptLocked places seq into the conversation's stream. msg nil holds the
// seq without emitting anything (our own acknowledged message).
func (c *Client) acceptLocked(cv *convState, seq, msgID uint64, msg *Message, countDup bool) {
	if seq <= cv.cursor {
		if countDup {
			c.stats.Duplicates++
		}
		return
	}
	if _, ok := cv.buf[seq]; ok {
		if countDup {
			c.stats.Duplicates++
		}
		return
	}
	if msg != nil && c.seen.has(msgID) {
		// Same message under another seq: never hand it out twice, but
		// hold the seq so the stream does not wait for it forever.
		c.stats.DuplicateIDs++
		msg = nil
	}
	c.seen.add(msgID)
	c.resumeGot++
	cv.buf[seq] = msg
	cv.latest = max(cv.latest, seq)
	c.drainLocked(cv)
	c.maybeFillLocked(cv)
}

// drainLocked moves the contiguous run above the cursor to the app.
func (c *Client) drainLocked(cv *convState) {
	for {
		msg, ok := cv.buf[cv.cursor+1]
		if !ok {
			return
		}
		delete(cv.buf, cv.cursor+1)
		cv.cursor++
		q := queued{conv: cv.id, seq: cv.cursor}
		if msg != nil {
			q.ev = *msg
		}
		c.queueLocked(q)
	}
}

// maybeFillLocked asks for the lowest missing part of the conversation.
func (c *Client) maybeFillLocked(cv *convState) {
	s := c.sess
	if s == nil || c.resumeID != 0 || cv.fillReq != 0 || cv.fillWait || cv.latest <= cv.cursor {
		return
	}
	before := cv.cursor + 1 + wire.MaxHistoryLimit
	if low := cv.lowestBuffered(); low != 0 && low < before {
		before = low
	}
	before = min(before, cv.latest+1)
	limit := before - cv.cursor - 1
	if limit == 0 {
		return
	}
	id := c.newReqLocked()
	cv.fillReq = id
	c.fills[id] = &fill{conv: cv.id, from: cv.cursor}
	c.stats.GapRequests++
	h := wire.History{ReqID: id, ConvID: cv.id, BeforeSeq: before, Limit: limit}
	s.send(h.Append(nil, 0))
}

// skipGapLocked gives up on the seqs between the cursor and the lowest
// buffered message: the server answered a request for them with nothing.
func (c *Client) skipGapLocked(cv *convState) {
	low := cv.lowestBuffered()
	if low == 0 {
		// Nothing buffered above: forget what we thought existed.
		cv.latest = cv.cursor
		return
	}
	n := low - 1 - cv.cursor
	c.log.Warn("chatd: server has no messages for a gap, skipping it",
		"conv", cv.id, "from", cv.cursor+1, "to", low-1)
	c.stats.SkippedSeqs += n
	cv.cursor = low - 1
	c.queueLocked(queued{conv: cv.id, seq: cv.cursor})
	c.drainLocked(cv)
}

func (c *Client) onHistoryEndLocked(e *wire.HistoryEnd) {
	if f := c.fills[e.ReqID]; f != nil {
		delete(c.fills, e.ReqID)
		cv := c.convLocked(f.conv)
		cv.fillReq = 0
		if cv.cursor == f.from && cv.latest > cv.cursor {
			c.skipGapLocked(cv)
		}
		c.maybeFillLocked(cv)
		return
	}
	if r := c.reqs[e.ReqID]; r != nil && r.hist != nil {
		delete(c.reqs, e.ReqID)
		r.hist.complete(e.Count, e.HasMore)
		r.finish(nil)
	}
}

func (c *Client) fillErrorLocked(id uint64, f *fill, se *ServerError) {
	delete(c.fills, id)
	cv := c.convLocked(f.conv)
	cv.fillReq = 0
	if !se.Retryable() {
		c.log.Warn("chatd: gap request refused", "conv", cv.id, "err", se)
		c.skipGapLocked(cv)
		c.maybeFillLocked(cv)
		return
	}
	cv.fillWait = true
	time.AfterFunc(c.backoff(1), func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		cv.fillWait = false
		c.maybeFillLocked(cv)
	})
}

// sendResumeLocked asks for everything after our cursors.
func (c *Client) sendResumeLocked() {
	s := c.sess
	if s == nil {
		return
	}
	r := wire.Resume{ReqID: c.newReqLocked()}
	for _, cv := range c.convs {
		cv.listed = false
		if cv.started {
			r.Cursors = append(r.Cursors, wire.Cursor{ConvID: cv.id, LastSeq: cv.cursor})
		}
	}
	if len(r.Cursors) > resumeListMax {
		// Unlisted conversations are replayed from their start; the
		// duplicates are dropped. List the most advanced ones, where that
		// would cost the most.
		slices.SortFunc(r.Cursors, func(a, b wire.Cursor) int {
			switch {
			case a.LastSeq > b.LastSeq:
				return -1
			case a.LastSeq < b.LastSeq:
				return 1
			}
			return 0
		})
		r.Cursors = r.Cursors[:resumeListMax]
	}
	for _, cur := range r.Cursors {
		c.convs[cur.ConvID].listed = true
	}
	c.resumeID = r.ReqID
	c.resumeGot = 0
	s.send(r.Append(nil, 0))
}

func (c *Client) onResumedLocked(r *wire.Resumed) {
	if r.ReqID != c.resumeID {
		return
	}
	c.emitLocked(Resumed{Conversations: r.Conversations, Messages: r.Messages, Truncated: r.Truncated})
	if r.Truncated {
		if c.resumeGot > 0 {
			// A cap cut the replay short: resume again from the new
			// cursors (the protocol's way to page a long outage).
			c.sendResumeLocked()
			return
		}
		c.log.Warn("chatd: truncated RESUME brought nothing new; filling gaps with HISTORY instead")
	}
	c.resumeID = 0
	for _, cv := range c.convs {
		cv.listed = false
	}
	for _, cv := range c.sortedConvsLocked() {
		c.maybeFillLocked(cv)
	}
}

func (c *Client) resumeErrorLocked(s *session, se *ServerError) {
	if !se.Retryable() {
		c.log.Warn("chatd: RESUME refused", "err", se)
		c.resumeID = 0
		for _, cv := range c.sortedConvsLocked() {
			c.maybeFillLocked(cv)
		}
		return
	}
	// Keep resumeID set (gap filling stays paused) and try again.
	time.AfterFunc(c.backoff(1), func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.sess == s {
			c.sendResumeLocked()
		}
	})
}

func (c *Client) onConvLocked(m *wire.Conv) {
	conv := Conversation{ID: m.ConvID, Kind: m.Kind, LastSeq: m.LastSeq, MemberTotal: int(m.MemberTotal), Name: string(m.Name)}
	for i, b := range m.Members {
		conv.Members = append(conv.Members, string(b))
		if i < len(m.Roles) && m.Roles[i] == wire.RoleAdmin {
			conv.Admins = append(conv.Admins, string(b))
		}
	}
	if m.ConvID != 0 {
		cv := c.convLocked(m.ConvID)
		if !cv.started {
			c.startLocked(cv, m.LastSeq-min(m.LastSeq, newConvBackfill))
		}
		cv.latest = max(cv.latest, m.LastSeq)
		c.maybeFillLocked(cv)
	}
	if r := c.reqs[m.ReqID]; r != nil {
		delete(c.reqs, m.ReqID)
		r.conv = conv
		r.finish(nil)
	}
}

func (c *Client) sortedConvsLocked() []*convState {
	out := make([]*convState, 0, len(c.convs))
	for _, cv := range c.convs {
		out = append(out, cv)
	}
	slices.SortFunc(out, func(a, b *convState) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	return out
}

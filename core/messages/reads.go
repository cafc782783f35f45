package messages

import (
	"context"
	"errors"

	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// Defaults for HISTORY.
const (
	defaultHistoryLimit = 50
)

// submitRead hands a RESUME, HISTORY or FOCUS record to the read pool. The pool
// blocks when full, which backpressures the inbound loop instead of
// dropping requests.
func (p *Processor) submitRead(ctx context.Context, value []byte) {
	if err := p.pool.Submit(func() { p.read(ctx, value) }); err != nil {
		p.log.Warn("read pool refused a request", "err", err)
	}
}

func (p *Processor) read(ctx context.Context, value []byte) {
	s := decoderPool.Get().(*readScratch)
	defer decoderPool.Put(s)
	if err := s.env.Decode(value); err != nil {
		return
	}
	t, _, err := s.dec.Decode(s.env.Frame)
	if err != nil {
		return
	}
	switch t {
	case wire.TypeResume:
		p.resume(ctx, s, &s.dec.Resume)
	case wire.TypeHistory:
		p.history(ctx, s, &s.dec.History)
	case wire.TypeFocus:
		p.focus(ctx, s, s.dec.Focus.ConvID)
	}
}

// focus answers a FOCUS on a direct conversation with the peer's PRESENCE,
// as the peer's privacy setting lets a member see it (ViewPresence). A
// group's FOCUS is only checked: presence is told for direct
// conversations. Errors are coded like HISTORY's; a store or presence
// failure sends nothing (the client still works, without presence).
func (p *Processor) focus(ctx context.Context, s *readScratch, conv uint64) {
	c, err := p.deps.Store.Conversation(ctx, conv)
	if errors.Is(err, store.ErrNotFound) {
		p.sendError(ctx, s, wire.CodeConvNotFound, wire.TypeFocus, 0, conv, "no such conversation")
		return
	}
	user := string(s.env.User)
	if err != nil {
		return
	}
	if !isMember(&c, user) {
		p.sendError(ctx, s, wire.CodeNotMember, wire.TypeFocus, 0, conv, "not a member")
		return
	}
	if c.Kind == wire.ConvGroup && len(c.Members) > p.cfg.PullAbove {
		// A channel: the CONV (with the latest seq, so the client can
		// fetch what it has not seen) tells the gateway that this
		// connection may get the channel's messages while it stays
		// focused on it (gateway/pull.go).
		last, err := p.deps.Store.LastSeq(ctx, conv)
		if err != nil {
			p.log.Warn("focus: last seq", "conv", conv, "err", err)
			return
		}
		s.buf = EncodeConv(s.buf[:0], 0, &c, last)
		p.sendTo(ctx, s, s.buf)
		return
	}
	if c.Kind != wire.ConvDirect || len(c.Members) != 2 || p.deps.Presence == nil {
		return
	}
	peer := c.Members[0]
	if peer == user {
		peer = c.Members[1]
	}
	set, err := p.deps.Store.UserSettings(ctx, peer)
	if err != nil {
		p.log.Warn("focus: settings", "user", peer, "err", err)
		return
	}
	st, err := p.deps.Presence.Presence(ctx, []string{peer}, nil)
	if err != nil || len(st) != 1 {
		p.log.Warn("focus: presence", "user", peer, "err", err)
		return
	}
	v := ViewPresence(st[0], set.PresenceVisibility, false, true, p.cfg.Now())
	out := wire.Presence{ConvID: conv, User: []byte(peer), Online: v.Online, LastSeenMS: uint64(max(v.LastSeenMS, 0)), Approx: approxCode[v.Approx]}
	s.buf = out.Append(s.buf[:0], 0)
	p.sendTo(ctx, s, s.buf)
}

// approxCode maps ViewPresence's coarse answers to the wire's.
var approxCode = map[string]wire.PresenceApprox{
	"":                wire.ApproxExact,
	ApproxRecently:    wire.ApproxRecently,
	ApproxWithinWeek:  wire.ApproxWithinWeek,
	ApproxWithinMonth: wire.ApproxWithinMonth,
	ApproxLongAgo:     wire.ApproxLongAgo,
}

// resume replays, for every conversation of the user, what the client is
// missing, then RESUMED:
//
//   - a conversation the client listed: the messages after its cursor,
//     oldest first, at most ResumeCap. Oldest first keeps the client's
//     stream gapless; when the cap cut a replay short RESUMED says
//     truncated and the client resumes again from its new cursors.
//   - a conversation it did not list (new to this device): the newest
//     ResumeNewCap messages, ascending. A new device starts at the recent
//     end and pages older messages with HISTORY on demand, instead of
//     downloading every conversation from seq 1.
func (p *Processor) resume(ctx context.Context, s *readScratch, r *wire.Resume) {
	user := string(s.env.User)
	convs, err := p.deps.Store.UserConversations(ctx, user)
	if err != nil {
		p.log.Error("resume: list conversations", "user", user, "err", err)
		p.sendError(ctx, s, wire.CodeUnavailable, wire.TypeResume, r.ReqID, 0, "store unavailable")
		return
	}
	done := wire.Resumed{ReqID: r.ReqID}
	for _, conv := range convs {
		var after uint64
		listed := false
		for _, c := range r.Cursors {
			if c.ConvID == conv {
				after, listed = c.LastSeq, true
				break
			}
		}
		last, err := p.deps.Store.LastSeq(ctx, conv)
		if err != nil {
			p.sendError(ctx, s, wire.CodeUnavailable, wire.TypeResume, r.ReqID, conv, "store unavailable")
			return
		}
		if last <= after {
			continue
		}
		var msgs []store.Message
		if listed {
			if last-after > uint64(p.cfg.ResumeCap) {
				done.Truncated = true
			}
			msgs, err = p.deps.Store.MessagesAfter(ctx, conv, after, p.cfg.ResumeCap)
		} else {
			msgs, _, err = p.deps.Store.MessagesBefore(ctx, conv, 0, p.cfg.ResumeNewCap)
		}
		if err != nil {
			p.sendError(ctx, s, wire.CodeUnavailable, wire.TypeResume, r.ReqID, conv, "store unavailable")
			return
		}
		for i := range msgs {
			p.sendMsg(ctx, s, &msgs[i])
		}
		done.Conversations++
		done.Messages += uint64(len(msgs))
	}
	p.cfg.Metrics.Replayed.Add(float64(done.Messages))
	s.buf = done.Append(s.buf[:0], 0)
	p.sendTo(ctx, s, s.buf)
}

func (p *Processor) history(ctx context.Context, s *readScratch, h *wire.History) {
	if h.ConvID == 0 {
		p.sendError(ctx, s, wire.CodeInvalidArgument, wire.TypeHistory, h.ReqID, 0, "conv_id is 0")
		return
	}
	c, err := p.deps.Store.Conversation(ctx, h.ConvID)
	if errors.Is(err, store.ErrNotFound) {
		p.sendError(ctx, s, wire.CodeConvNotFound, wire.TypeHistory, h.ReqID, h.ConvID, "no such conversation")
		return
	}
	if err != nil {
		p.sendError(ctx, s, wire.CodeUnavailable, wire.TypeHistory, h.ReqID, h.ConvID, "store unavailable")
		return
	}
	if !isMember(&c, string(s.env.User)) {
		p.sendError(ctx, s, wire.CodeNotMember, wire.TypeHistory, h.ReqID, h.ConvID, "not a member")
		return
	}
	limit := ClampLimit(h.Limit)
	msgs, more, err := p.deps.Store.MessagesBefore(ctx, h.ConvID, h.BeforeSeq, limit)
	if err != nil {
		p.sendError(ctx, s, wire.CodeUnavailable, wire.TypeHistory, h.ReqID, h.ConvID, "store unavailable")
		return
	}
	for i := range msgs {
		p.sendMsg(ctx, s, &msgs[i])
	}
	end := wire.HistoryEnd{ReqID: h.ReqID, ConvID: h.ConvID, Count: uint64(len(msgs)), HasMore: more}
	s.buf = end.Append(s.buf[:0], 0)
	p.sendTo(ctx, s, s.buf)
}

// ClampLimit maps a requested page size to [1, wire.MaxHistoryLimit]; 0
// means the default of 50.
func ClampLimit(l uint64) int {
	switch {
	case l == 0:
		return defaultHistoryLimit
	case l > wire.MaxHistoryLimit:
		return wire.MaxHistoryLimit
	}
	return int(l)
}

// sendMsg routes one replayed message, compressed when the connection
// negotiated it and the frame is large enough.
func (p *Processor) sendMsg(ctx context.Context, s *readScratch, m *store.Message) {
	s.buf = EncodeMsg(s.buf[:0], m, wire.FlagReplay)
	frame := s.buf
	if s.env.Caps&wire.CapZstd != 0 && len(frame) >= wire.CompressMinBytes+wire.HeaderLen {
		s.out = wire.Compress(s.out[:0], frame)
		s.buf, s.out = s.out, s.buf
		frame = s.buf
	}
	p.sendTo(ctx, s, frame)
}

func (p *Processor) sendError(ctx context.Context, s *readScratch, code wire.Code, ref wire.Type, reqID, conv uint64, msg string) {
	p.cfg.Metrics.Errors.WithLabelValues(code.String()).Inc()
	e := wire.Error{Code: code, RefType: ref, ReqID: reqID, ConvID: conv, Message: []byte(msg)}
	s.buf = e.Append(s.buf[:0], 0)
	p.sendTo(ctx, s, s.buf)
}

func (p *Processor) sendTo(ctx context.Context, s *readScratch, frame []byte) {
	conn := [1]uint64{s.env.Conn}
	s.out = wire.AppendBatch(s.out[:0], conn[:], frame)
	if err := p.deps.Router.Publish(ctx, string(s.env.Gateway), s.out); err != nil {
		p.cfg.Metrics.RouteErrors.Inc()
	}
}

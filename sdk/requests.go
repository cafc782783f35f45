package sdk

import (
	"context"
	"errors"
	"maps"
	"slices"

	"github.com/chatd-dev/chatd/wire"
)

// request is an OpenDirect or History call waiting for its answer. It
// survives reconnects: its frame is written again on the next connection
// (both requests are idempotent).
type request struct {
	id    uint64
	frame []byte
	done  chan struct{}
	err   error
	conv  Conversation // OPEN_DIRECT answer
	hist  *histCollect // HISTORY: replayed messages collected so far
}

func (r *request) finish(err error) {
	r.err = err
	close(r.done)
}

// histCollect gathers the replayed messages answering one HISTORY request.
// MSG frames carry no request id, so a replay belongs to every History call
// for its conversation whose range it falls in; since a (conversation, seq)
// always names the same message, keeping the highest Count seqs below
// before when HISTORY_END arrives yields exactly the answer, even when
// several requests and a RESUME replay interleave.
type histCollect struct {
	conv    uint64
	before  uint64 // 0: no upper bound
	msgs    map[uint64]Message
	result  []Message
	hasMore bool
}

func (h *histCollect) wants(m *Message) bool {
	return m.Conv == h.conv && (h.before == 0 || m.Seq < h.before)
}

func (h *histCollect) complete(count uint64, hasMore bool) {
	seqs := slices.Sorted(maps.Keys(h.msgs))
	if uint64(len(seqs)) > count {
		seqs = seqs[uint64(len(seqs))-count:]
	}
	h.result = make([]Message, 0, len(seqs))
	for _, s := range seqs {
		h.result = append(h.result, h.msgs[s])
	}
	h.hasMore = hasMore
}

// offerHistoryLocked gives a replayed message to the History calls waiting
// for it and reports whether any wanted it.
func (c *Client) offerHistoryLocked(m *Message) bool {
	wanted := false
	for _, r := range c.reqs {
		if h := r.hist; h != nil && h.wants(m) {
			cp := *m
			cp.Body = slices.Clone(m.Body)
			h.msgs[m.Seq] = cp
			wanted = true
		}
	}
	return wanted
}

func (c *Client) sortedReqsLocked() []*request {
	out := slices.Collect(maps.Values(c.reqs))
	slices.SortFunc(out, func(a, b *request) int {
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

// do registers r, writes it if connected, and waits for its answer.
func (c *Client) do(ctx context.Context, r *request) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.reqs[r.id] = r
	if s := c.sess; s != nil {
		s.send(r.frame)
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.reqs, r.id)
		c.mu.Unlock()
		return ctx.Err()
	}
}

// OpenDirect opens, or finds, the one-to-one conversation with peer. If
// the Client is offline the request waits for the connection; bound it with
// ctx. Errors from the server are *ServerError.
func (c *Client) OpenDirect(ctx context.Context, peer string) (Conversation, error) {
	if peer == "" || len(peer) > wire.MaxIDLen {
		return Conversation{}, errors.New("sdk: OpenDirect: peer must be 1..64 bytes")
	}
	c.mu.Lock()
	r := &request{id: c.newReqLocked(), done: make(chan struct{})}
	c.mu.Unlock()
	f := wire.OpenDirect{ReqID: r.id, Peer: []byte(peer)}
	r.frame = f.Append(nil, 0)
	if err := c.do(ctx, r); err != nil {
		return Conversation{}, err
	}
	return r.conv, nil
}

// History returns up to limit (1..200) messages of conv with seq below
// beforeSeq (0: the latest), in ascending seq order, and whether older ones
// exist. It is meant for scrollback.
//
// The messages are returned to the caller, not emitted as events. They also
// pass through the stream's ordering: any of them above the conversation's
// cursor fill gaps and are then emitted on Events as well (once), so an app
// fetching recent history while behind may see a message both here and as
// an event; deduplicate by Seq or ID.
func (c *Client) History(ctx context.Context, conv, beforeSeq uint64, limit int) ([]Message, bool, error) {
	if conv == 0 {
		return nil, false, errors.New("sdk: History: conversation id 0")
	}
	if limit < 1 || limit > wire.MaxHistoryLimit {
		return nil, false, errors.New("sdk: History: limit must be 1..200")
	}
	c.mu.Lock()
	r := &request{
		id: c.newReqLocked(), done: make(chan struct{}),
		hist: &histCollect{conv: conv, before: beforeSeq, msgs: map[uint64]Message{}},
	}
	c.mu.Unlock()
	f := wire.History{ReqID: r.id, ConvID: conv, BeforeSeq: beforeSeq, Limit: uint64(limit)}
	r.frame = f.Append(nil, 0)
	if err := c.do(ctx, r); err != nil {
		return nil, false, err
	}
	return r.hist.result, r.hist.hasMore, nil
}

package sdk

import (
	"context"
	"errors"
	"maps"
	"slices"

	"github.com/chatd-dev/chatd/wire"
)

// request is a call waiting for its answer. OpenDirect and History
// requests survive reconnects: their frame is written again on the next
// connection (both are idempotent). Group requests (once) are written on
// one connection only; losing it fails them with ErrMaybeApplied.
type request struct {
	id    uint64
	frame []byte
	done  chan struct{}
	err   error
	conv  Conversation // OPEN_DIRECT, CREATE_GROUP, GROUP_CHANGE answer
	hist  *histCollect // HISTORY: replayed messages collected so far
	once  bool         // write on one connection only
	sent  bool         // written on the current connection
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
		r.sent = true
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

// CreateGroup creates a group named name (1..128 bytes of UTF-8) whose
// admin is this user and whose members are this user and members (at most
// 256 in one call; add more with ChangeGroup). It returns the group as the
// server answered. The group's log starts with a system message (Kind
// wire.KindSystem, body a wire.GroupEvent) that every member receives.
//
// If the connection is lost before the answer, CreateGroup returns
// ErrMaybeApplied and does not write the request again.
func (c *Client) CreateGroup(ctx context.Context, name string, members []string) (Conversation, error) {
	if name == "" || len(name) > wire.MaxGroupNameLen {
		return Conversation{}, errors.New("sdk: CreateGroup: name must be 1..128 bytes")
	}
	if len(members) > wire.MaxGroupChange {
		return Conversation{}, errors.New("sdk: CreateGroup: at most 256 members per call")
	}
	f := wire.CreateGroup{Name: []byte(name), Members: idBytes(members)}
	return c.groupRequest(ctx, func(id uint64) []byte { f.ReqID = id; return f.Append(nil, 0) })
}

// ChangeGroup changes group conv: op is wire.GroupAdd, GroupRemove,
// GroupPromote or GroupDemote with users (at most 256; admins only),
// GroupLeave with none, or GroupRename with name. It returns the group
// after the change. A change that changes nothing (adding someone who is already a member) is
// answered without a system message.
//
// If the connection is lost before the answer, ChangeGroup returns
// ErrMaybeApplied and does not write the request again.
func (c *Client) ChangeGroup(ctx context.Context, conv uint64, op wire.GroupOp, name string, users []string) (Conversation, error) {
	if conv == 0 {
		return Conversation{}, errors.New("sdk: ChangeGroup: conversation id 0")
	}
	if len(users) > wire.MaxGroupChange || len(name) > wire.MaxGroupNameLen {
		return Conversation{}, errors.New("sdk: ChangeGroup: at most 256 users and a name of at most 128 bytes")
	}
	f := wire.GroupChange{ConvID: conv, Op: op, Name: []byte(name), Users: idBytes(users)}
	return c.groupRequest(ctx, func(id uint64) []byte { f.ReqID = id; return f.Append(nil, 0) })
}

func (c *Client) groupRequest(ctx context.Context, frame func(reqID uint64) []byte) (Conversation, error) {
	c.mu.Lock()
	r := &request{id: c.newReqLocked(), done: make(chan struct{}), once: true}
	c.mu.Unlock()
	r.frame = frame(r.id)
	if err := c.do(ctx, r); err != nil {
		return Conversation{}, err
	}
	return r.conv, nil
}

func idBytes(ids []string) [][]byte {
	out := make([][]byte, len(ids))
	for i, id := range ids {
		out[i] = []byte(id)
	}
	return out
}

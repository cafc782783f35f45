package sdk

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/chatd-dev/chatd/wire"
)

// pendingSend is a message queued by Send and not yet acknowledged.
type pendingSend struct {
	id    string
	conv  uint64
	frame []byte // the encoded SEND, identical on every write

	writes  int         // times written to a connection
	retries int         // consecutive retryable errors
	gen     int         // invalidates timers armed for earlier writes
	timer   *time.Timer // ack timeout or retry backoff

	done chan struct{}
	ack  Ack
	err  error
}

func (p *pendingSend) disarm() {
	p.gen++
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
}

func (p *pendingSend) finish(a Ack, err error) {
	p.disarm()
	p.ack, p.err = a, err
	close(p.done)
}

// Send queues a message for conversation conv and returns at once with its
// client_msg_id (128 random bits, hex), the key that makes resends
// idempotent. The Client writes it as soon as it is connected and keeps
// resending it with the same client_msg_id, across reconnects, after
// AckTimeout without ACK, and after retryable errors (unavailable, internal,
// rate_limited; with backoff), until the server acknowledges it (an Ack
// event) or refuses it for good (a SendFailed event). Sends are written in
// the order Send was called. Pending sends live in memory only: they are
// lost when the Client is closed or the process ends.
//
// ctx is only checked on entry. body is copied; it must be at most
// wire.MaxBodySize bytes.
func (c *Client) Send(ctx context.Context, conv uint64, kind wire.MsgKind, body []byte) (clientMsgID string, err error) {
	p, err := c.queueSend(ctx, conv, kind, body)
	if err != nil {
		return "", err
	}
	return p.id, nil
}

// SendWait is Send followed by waiting for the server's acknowledgement.
// It returns the Ack, or the *ServerError that made the send fail for good,
// or ctx.Err() if ctx ends first; in that last case the message stays
// queued and its fate is reported by an Ack or SendFailed event. The Ack
// event is emitted either way.
func (c *Client) SendWait(ctx context.Context, conv uint64, kind wire.MsgKind, body []byte) (Ack, error) {
	p, err := c.queueSend(ctx, conv, kind, body)
	if err != nil {
		return Ack{}, err
	}
	select {
	case <-p.done:
		return p.ack, p.err
	case <-ctx.Done():
		return Ack{ClientMsgID: p.id, Conv: conv}, ctx.Err()
	}
}

func (c *Client) queueSend(ctx context.Context, conv uint64, kind wire.MsgKind, body []byte) (*pendingSend, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch {
	case conv == 0:
		return nil, errors.New("sdk: Send: conversation id 0")
	case kind == 0:
		return nil, errors.New("sdk: Send: message kind 0")
	case len(body) > wire.MaxBodySize:
		return nil, errors.New("sdk: Send: body larger than wire.MaxBodySize")
	}
	p := &pendingSend{id: newClientMsgID(), conv: conv, done: make(chan struct{})}
	f := wire.Send{ConvID: conv, ClientMsgID: []byte(p.id), Kind: kind, Body: body}
	p.frame = f.Append(nil, 0) // copies body
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	c.pending = append(c.pending, p)
	c.byCMID[p.id] = p
	c.writeSendLocked(p)
	return p, nil
}

// writeSendLocked writes p on the current connection, if any, and arms its
// ack timeout.
func (c *Client) writeSendLocked(p *pendingSend) {
	s := c.sess
	if s == nil {
		return
	}
	p.disarm()
	if p.writes > 0 {
		c.stats.Resends++
	}
	p.writes++
	s.send(p.frame)
	gen := p.gen
	p.timer = time.AfterFunc(c.cfg.AckTimeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.byCMID[p.id] == p && p.gen == gen && c.sess == s {
			c.log.Debug("chatd: no ACK in time, resending", "client_msg_id", p.id)
			c.writeSendLocked(p)
		}
	})
}

// completeSendLocked resolves p with its acknowledgement.
func (c *Client) completeSendLocked(p *pendingSend, a Ack) {
	c.removePendingLocked(p)
	p.finish(a, nil)
	c.emitLocked(a)
	// Our own message is part of the conversation's stream: it holds its
	// seq (for contiguity) without being emitted as a Message.
	c.seen.add(a.MessageID)
	if a.Conv != 0 && a.Seq != 0 {
		cv := c.convLocked(a.Conv)
		if !cv.started {
			c.startLocked(cv, a.Seq-1-min(a.Seq-1, newConvBackfill))
		}
		c.acceptLocked(cv, a.Seq, a.MessageID, nil, false)
	}
}

func (c *Client) onAckLocked(a *wire.Ack) {
	p := c.byCMID[string(a.ClientMsgID)]
	if p == nil {
		c.stats.DuplicateAcks++
		return
	}
	c.completeSendLocked(p, Ack{
		ClientMsgID: p.id, Conv: a.ConvID, MessageID: a.MessageID, Seq: a.Seq,
		ServerTime: millisTime(a.ServerTimeMS),
	})
}

func (c *Client) sendErrorLocked(p *pendingSend, se *ServerError) {
	if se.Retryable() {
		p.disarm()
		p.retries++
		gen := p.gen
		s := c.sess
		p.timer = time.AfterFunc(c.backoff(p.retries), func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.byCMID[p.id] == p && p.gen == gen && c.sess == s {
				c.writeSendLocked(p)
			}
		})
		return
	}
	c.removePendingLocked(p)
	p.finish(Ack{}, se)
	c.emitLocked(SendFailed{ClientMsgID: p.id, Conv: p.conv, Code: se.Code, Err: se})
}

func (c *Client) removePendingLocked(p *pendingSend) {
	delete(c.byCMID, p.id)
	if i := slices.Index(c.pending, p); i >= 0 {
		c.pending = slices.Delete(c.pending, i, i+1)
	}
}

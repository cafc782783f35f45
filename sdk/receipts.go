package sdk

import (
	"time"

	"github.com/chatd-dev/chatd/wire"
)

// Receipts are batched per (conversation, kind). MarkRead/MarkDelivered
// only raise a wanted value; the flusher writes at most one RECEIPT per key
// per ReceiptInterval: at once if the key was quiet for an interval
// (leading edge), otherwise when the interval since the last one has passed
// (trailing edge), always with the latest value.
//
// The protocol does not acknowledge receipts, so a RECEIPT written just
// before a connection dropped may be lost. A receipt counts as confirmed
// once a PONG answers a PING written after it (the server handles a
// connection's frames in order); unconfirmed ones are written again on the
// next connection. Pointers never move backwards on the server, so writing
// one twice is harmless.

type receiptKey struct {
	conv uint64
	kind wire.ReceiptKind
}

type receiptState struct {
	want      uint64    // highest value asked for
	sent      uint64    // highest value written
	confirmed uint64    // highest value known to have reached the server
	nonce     uint64    // last PING nonce written before sent
	last      time.Time // when the last RECEIPT for this key was written
}

type receipts struct {
	m           map[receiptKey]*receiptState
	dirty       map[receiptKey]struct{} // want > sent
	unconfirmed map[receiptKey]struct{} // sent > confirmed
	timer       *time.Timer
	due         time.Time // when timer fires; zero if not armed
}

func (r *receipts) init() {
	r.m = map[receiptKey]*receiptState{}
	r.dirty = map[receiptKey]struct{}{}
	r.unconfirmed = map[receiptKey]struct{}{}
}

func (r *receipts) get(k receiptKey) *receiptState {
	st := r.m[k]
	if st == nil {
		st = &receiptState{}
		r.m[k] = st
	}
	return st
}

func (r *receipts) stop() {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	r.due = time.Time{}
}

// pong confirms receipts written before the PING with nonce n.
func (r *receipts) pong(n uint64) {
	for k := range r.unconfirmed {
		st := r.m[k]
		if st.nonce < n {
			st.confirmed = st.sent
			delete(r.unconfirmed, k)
		}
	}
}

// connectionLost marks unconfirmed receipts for writing again.
func (r *receipts) connectionLost() {
	for k := range r.unconfirmed {
		st := r.m[k]
		st.sent = st.confirmed
		r.dirty[k] = struct{}{}
		delete(r.unconfirmed, k)
	}
}

// refused handles an ERROR for a RECEIPT of conv (ERROR does not say which
// kind). Retryable: write both kinds again later. Otherwise: give up on
// what was written (the server will not take it), keep newer values.
func (r *receipts) refused(conv uint64, retryable bool) {
	for _, kind := range []wire.ReceiptKind{wire.ReceiptDelivered, wire.ReceiptRead} {
		k := receiptKey{conv, kind}
		st := r.m[k]
		if st == nil {
			continue
		}
		delete(r.unconfirmed, k)
		if retryable {
			st.sent = st.confirmed
			r.dirty[k] = struct{}{}
		} else {
			st.confirmed = st.sent
		}
	}
}

// MarkRead records that the user has seen conv's messages up to seq. Read
// implies delivered: the server moves both pointers, so no separate
// delivered receipt is sent for seqs up to this one. The value is sent to the server (and from
// there to the other members and to the user's other devices) by the
// receipt flusher, at most once per Config.ReceiptInterval per
// conversation; it survives reconnects. Lower values than one already
// marked are ignored. Only mark seqs this Client has seen.
func (c *Client) MarkRead(conv, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || conv == 0 || seq == 0 {
		return
	}
	// The read receipt carries delivered along on the server.
	d := c.rcpt.get(receiptKey{conv, wire.ReceiptDelivered})
	d.want, d.sent, d.confirmed = max(d.want, seq), max(d.sent, seq), max(d.confirmed, seq)
	c.markLocked(conv, wire.ReceiptRead, seq)
}

// MarkDelivered records that conv's messages up to seq reached this device.
// The Client does it by itself for every message the app receives, unless
// Config.DisableAutoDelivered is set. Batched like MarkRead.
func (c *Client) MarkDelivered(conv, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.markLocked(conv, wire.ReceiptDelivered, seq)
}

func (c *Client) markLocked(conv uint64, kind wire.ReceiptKind, seq uint64) {
	if c.closed || conv == 0 || seq == 0 {
		return
	}
	k := receiptKey{conv, kind}
	st := c.rcpt.get(k)
	if seq <= st.want {
		return
	}
	st.want = seq
	c.rcpt.dirty[k] = struct{}{}
	c.flushReceiptsLocked()
}

// flushReceiptsLocked writes the receipts that are due and arms the timer
// for the others.
func (c *Client) flushReceiptsLocked() {
	c.flushReceiptsAtLocked(c.now())
}

func (c *Client) flushReceiptsAtLocked(now time.Time) {
	s := c.sess
	if s == nil || c.closed {
		return
	}
	r := &c.rcpt
	var next time.Time
	for k := range r.dirty {
		st := r.m[k]
		if st.want <= st.sent {
			delete(r.dirty, k)
			continue
		}
		if due := st.last.Add(c.cfg.ReceiptInterval); !st.last.IsZero() && now.Before(due) {
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		f := wire.Receipt{ConvID: k.conv, Kind: k.kind, UpToSeq: st.want}
		s.send(f.Append(nil, 0))
		st.sent, st.last, st.nonce = st.want, now, c.pingSeq
		delete(r.dirty, k)
		r.unconfirmed[k] = struct{}{}
	}
	if next.IsZero() || (!r.due.IsZero() && !next.Before(r.due)) {
		return
	}
	r.stop()
	r.due = next
	r.timer = time.AfterFunc(next.Sub(now), func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.rcpt.due = time.Time{}
		c.rcpt.timer = nil
		c.flushReceiptsLocked()
	})
}

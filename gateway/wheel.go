package gateway

import (
	"math/bits"
	"sync"
)

// wheel is the timing wheel shared by every connection: one bucket per tick,
// no timer per connection. Every live connection is in exactly one bucket,
// so the wheel is also the list of all connections (used by Close).
//
// A connection's deadline (conn.deadline, in ticks) is an atomic that the
// input path pushes forward on every frame without touching the wheel; the
// wheel notices when the connection's bucket comes up and moves it to the
// bucket of its current deadline (so an active connection is moved once per
// idle period, not once per frame). A deadline that moves earlier (a state
// change) goes through set, which moves the connection at once.
type wheel struct {
	mu      sync.Mutex
	buckets [][]*conn
	mask    int64
	now     int64 // the last tick swept
}

func (w *wheel) init(span int64) {
	n := int64(1) << bits.Len64(uint64(max(span, 2)-1))
	n = min(n, 1<<16) // a longer deadline is re-bucketed when its bucket comes up
	w.buckets = make([][]*conn, n)
	w.mask = n - 1
}

// set gives c the deadline d (a tick) and makes sure c's bucket comes up no
// later than d. It inserts c if it is not in the wheel.
func (w *wheel) set(c *conn, d int64) {
	w.mu.Lock()
	c.deadline.Store(d)
	if c.slot < 0 {
		w.insert(c, d)
	} else if d < c.due {
		w.removeLocked(c)
		w.insert(c, d)
	}
	w.mu.Unlock()
}

// remove takes c out of the wheel (a closed connection).
func (w *wheel) remove(c *conn) {
	w.mu.Lock()
	if c.slot >= 0 {
		w.removeLocked(c)
	}
	w.mu.Unlock()
}

func (w *wheel) insert(c *conn, d int64) {
	size := w.mask + 1
	switch {
	case d <= w.now:
		d = w.now + 1
	case d-w.now >= size:
		d = w.now + size - 1
	}
	s := d & w.mask
	c.due = d
	c.slot = int32(s)
	c.idx = int32(len(w.buckets[s]))
	w.buckets[s] = append(w.buckets[s], c)
}

func (w *wheel) removeLocked(c *conn) {
	b := w.buckets[c.slot]
	last := len(b) - 1
	if int(c.idx) != last {
		b[c.idx] = b[last]
		b[c.idx].idx = c.idx
	}
	b[last] = nil
	w.buckets[c.slot] = b[:last]
	c.slot, c.idx = -1, -1
}

// advance sweeps the buckets up to tick now and appends to expired (and
// removes from the wheel) the connections whose deadline has passed.
func (w *wheel) advance(now int64, expired []*conn) []*conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now-w.now > w.mask+1 {
		w.now = now - w.mask - 1 // every bucket is swept once below
	}
	for w.now < now {
		w.now++
		s := w.now & w.mask
		b := w.buckets[s]
		w.buckets[s] = b[:0]
		// Nothing is inserted into bucket s while it is swept: a deadline
		// after w.now lands in another bucket (insert clamps to w.now+1 ..
		// w.now+size-1).
		for i, c := range b {
			b[i] = nil
			c.slot, c.idx = -1, -1
			if d := c.deadline.Load(); d > w.now {
				w.insert(c, d)
				continue
			}
			expired = append(expired, c)
		}
	}
	return expired
}

// all appends every connection in the wheel to dst.
func (w *wheel) all(dst []*conn) []*conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range w.buckets {
		dst = append(dst, b...)
	}
	return dst
}

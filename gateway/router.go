package gateway

import (
	"encoding/binary"
	"sync"

	"github.com/gobwas/ws"

	"github.com/chatd-dev/chatd/wire"
)

// batchScratch is the per-call scratch of onBatch.
type batchScratch struct {
	ids   []uint64
	conns []*conn
}

var batchPool = sync.Pool{New: func() any { return &batchScratch{ids: make([]uint64, 0, 64), conns: make([]*conn, 0, 64)} }}

// onBatch is the router's handler: one frame for some of this gateway's
// connections (wire.DecodeBatch). The frame is copied once, with its
// WebSocket header (server frames are unmasked, so the header is the same
// for everyone), into an immutable slice that every target queue shares.
// Unknown connection ids (closed since the core looked them up) are
// skipped. It never blocks: queueing is a lock and an append per target, and
// writing happens on the worker pool.
func (g *Gateway) onBatch(batch []byte) {
	s := batchPool.Get().(*batchScratch)
	ids, frame, err := wire.DecodeBatch(batch, s.ids[:0])
	s.ids = ids
	if err != nil {
		g.m.badBatches.Inc()
		g.log.Warn("gateway: bad routed batch", "err", err)
		batchPool.Put(s)
		return
	}
	// TYPING and PRESENCE go only to connections that have their
	// conversation on screen (FOCUS): in a big group most members are
	// elsewhere, and a PRESENCE answering an earlier FOCUS is stale.
	var focus uint64
	presence := len(frame) > wire.HeaderLen && wire.Type(frame[0]) == wire.TypePresence
	typing := len(frame) > wire.HeaderLen && (wire.Type(frame[0]) == wire.TypeTyping || presence)
	if typing {
		var n int
		if focus, n = binary.Uvarint(frame[wire.HeaderLen:]); n <= 0 || focus == 0 {
			typing = false
		}
	}
	unknown, unfocused := 0, 0
	g.connsMu.RLock()
	for _, id := range ids {
		switch c := g.conns[id]; {
		case c == nil:
			unknown++
		case typing && c.focus.Load() != focus:
			unfocused++
		default:
			s.conns = append(s.conns, c)
		}
	}
	g.connsMu.RUnlock()
	g.m.routedUnknown.Add(float64(unknown))
	if unfocused > 0 {
		g.m.unfocused.Add(float64(unfocused))
	}
	if presence && typing && len(s.conns) > 0 {
		g.watchFrom(frame, focus, s.conns)
	}
	// A channel's CONV proves membership; a group change may end it
	// (pull.go). MSGs are looked at only while some connection here is on
	// a channel.
	if len(s.conns) > 0 && len(frame) > wire.HeaderLen {
		if t := wire.Type(frame[0]); t == wire.TypeConv || (t == wire.TypeMsg && g.pulls.size() > 0) {
			g.pullFrom(frame, s.conns)
		}
	}
	if len(s.conns) > 0 {
		out := make([]byte, 0, serverHeaderLen(len(frame))+len(frame))
		out = appendServerHeader(out, ws.OpBinary, len(frame))
		out = append(out, frame...)
		t := wire.Type(frame[0])
		for _, c := range s.conns {
			c.send(out, t)
		}
	}
	clear(s.conns)
	s.conns = s.conns[:0]
	if cap(s.ids) <= 1<<16 && cap(s.conns) <= 1<<16 {
		batchPool.Put(s)
	}
}

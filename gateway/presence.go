package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/wire"
)

// Presence to focused connections (docs/gateway.md, "Presence").
//
// A FOCUS on a conversation goes to the core, which checks membership and
// the peer's privacy setting and answers a direct conversation with one
// PRESENCE. When that answer is exact, the gateway records that the
// connection watches the peer (watches), and sends it a new PRESENCE at
// each change of the peer's online state while the connection stays
// focused on that conversation. Changes come from every gateway over the
// router's AllGateways channel: a gateway announces its users when their
// first device registers and when their last device goes (checked with
// Deps.Presence). Nothing goes to a connection that does not have the
// conversation open, and nothing is sent to a user's contacts at large.

// FocusMinGap is the shortest time between two FOCUS on a conversation a
// connection may send (each one costs the core a membership check and a
// presence lookup). FOCUS 0 (nothing on screen) is never limited.
const FocusMinGap = 250 * time.Millisecond

// watch is one connection watching one user's presence.
type watch struct {
	user string
	conv uint64
}

// watches indexes the connections watching a user's presence, both ways.
type watches struct {
	mu     sync.Mutex
	byConn map[uint64]watch
	byUser map[string]map[uint64]struct{}
}

func (w *watches) add(connID uint64, wt watch) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.removeLocked(connID)
	if w.byConn == nil {
		w.byConn, w.byUser = map[uint64]watch{}, map[string]map[uint64]struct{}{}
	}
	w.byConn[connID] = wt
	set := w.byUser[wt.user]
	if set == nil {
		set = map[uint64]struct{}{}
		w.byUser[wt.user] = set
	}
	set[connID] = struct{}{}
}

func (w *watches) remove(connID uint64) {
	w.mu.Lock()
	w.removeLocked(connID)
	w.mu.Unlock()
}

func (w *watches) removeLocked(connID uint64) {
	wt, ok := w.byConn[connID]
	if !ok {
		return
	}
	delete(w.byConn, connID)
	if set := w.byUser[wt.user]; set != nil {
		delete(set, connID)
		if len(set) == 0 {
			delete(w.byUser, wt.user)
		}
	}
}

// of appends the watches of user to dst.
func (w *watches) of(user string, dst []watchOf) []watchOf {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id := range w.byUser[user] {
		dst = append(dst, watchOf{conn: id, conv: w.byConn[id].conv})
	}
	return dst
}

type watchOf struct {
	conn, conv uint64
}

// focusFrame handles a client's FOCUS.
func (g *Gateway) focusFrame(c *conn, r ref, conv uint64, frame []byte) {
	if conv == 0 {
		c.focus.Store(0)
		g.watches.remove(c.id)
		return
	}
	now := g.nowMS()
	// int32 differences, as for TYPING (see typing).
	if last := c.focusMS.Load(); last != 0 && int32(now-last) < int32(FocusMinGap/time.Millisecond) {
		g.m.rateLimited.Inc()
		c.sendError(wire.CodeRateLimited, r, "rate limited: one FOCUS on a conversation per 250 ms at most")
		return
	}
	c.focusMS.Store(max(now, 1))
	c.focus.Store(conv)
	// The answer to this FOCUS decides anew (the peer's setting may have
	// changed since the last one).
	g.watches.remove(c.id)
	g.produce(c, r, false, frame)
}

// watchFrom records, for each connection a routed PRESENCE reached, that it
// watches the frame's user when the answer is exact, and that it watches
// no one when it is coarse.
func (g *Gateway) watchFrom(frame []byte, conv uint64, to []*conn) {
	var p wire.Presence
	if err := p.Decode(frame[wire.HeaderLen:]); err != nil {
		return
	}
	for _, c := range to {
		if p.Approx != wire.ApproxExact {
			g.watches.remove(c.id)
			continue
		}
		g.watches.add(c.id, watch{user: string(p.User), conv: conv})
	}
}

// announce publishes users' new presence to every gateway (AllGateways):
// one batch per user, published together.
func (g *Gateway) announce(users []string, online bool, lastSeen map[string]int64) {
	if len(users) == 0 {
		return
	}
	pubs := make([]routing.Publication, 0, len(users))
	for _, u := range users {
		p := wire.Presence{User: []byte(u), Online: online, LastSeenMS: uint64(lastSeen[u])}
		pubs = append(pubs, routing.Publication{Gateway: routing.AllGateways, Batch: wire.AppendBatch(nil, nil, p.Append(nil, 0))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := routing.PublishMany(ctx, g.deps.Router, pubs); err != nil {
		g.log.Warn("gateway: announce presence", "users", len(users), "err", err)
	}
	g.m.presenceAnnounced.Add(float64(len(users)))
}

// onPresence handles a presence change from any gateway: each local
// connection watching the user and still focused on the conversation it
// watches it from gets a PRESENCE.
func (g *Gateway) onPresence(batch []byte) {
	_, frame, err := wire.DecodeBatch(batch, nil)
	if err != nil || len(frame) < wire.HeaderLen || wire.Type(frame[0]) != wire.TypePresence {
		g.m.badBatches.Inc()
		return
	}
	var p wire.Presence
	if err := p.Decode(frame[wire.HeaderLen:]); err != nil {
		g.m.badBatches.Inc()
		return
	}
	for _, w := range g.watches.of(string(p.User), nil) {
		g.connsMu.RLock()
		c := g.conns[w.conn]
		g.connsMu.RUnlock()
		if c == nil || c.focus.Load() != w.conv {
			continue
		}
		p.ConvID = w.conv
		f := p.Append(nil, 0)
		out := appendServerHeader(make([]byte, 0, serverHeaderLen(len(f))+len(f)), ws.OpBinary, len(f))
		c.send(append(out, f...), wire.TypePresence)
		g.m.presenceSent.Inc()
	}
}

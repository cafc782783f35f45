package gateway

import (
	"context"
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
// user's presence topic, which a gateway holds while one of its connections
// watches the user (topics.go; AllGateways when the Router has no topics):
// a gateway announces its users when their first device registers and when
// their last device goes (checked with Deps.Presence). Nothing goes to a connection that does not have the
// conversation open, and nothing is sent to a user's contacts at large.

// FocusMinGap is the shortest time between two FOCUS on a conversation a
// connection may send (each one costs the core a membership check and a
// presence lookup). FOCUS 0 (nothing on screen) is never limited.
const FocusMinGap = 250 * time.Millisecond

// watches indexes the connections watching a user's presence: user ->
// connections, and each connection's watchVal.
type watches = connIndex[string, watchVal]

// watchVal is a watching connection's conversation (the one it watches
// the user from) and the online state it was last sent.
type watchVal struct {
	conv   uint64
	online bool
}

// focusFrame handles a client's FOCUS.
func (g *Gateway) focusFrame(c *conn, r ref, conv uint64, frame []byte) {
	if conv == 0 {
		c.focus.Store(0)
		g.watches.remove(c.id)
		g.pulls.remove(c.id)
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
	// changed since the last one; a channel's CONV confirms membership).
	g.watches.remove(c.id)
	g.pulls.remove(c.id)
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
	user := string(p.User)
	watched := false
	for _, c := range to {
		if p.Approx != wire.ApproxExact {
			g.watches.remove(c.id)
			continue
		}
		g.watches.add(c.id, user, watchVal{conv: conv, online: p.Online})
		watched = true
	}
	if watched && g.topics != nil {
		// The answer was read before this gateway held the user's topic
		// (or before the watch was indexed): read once more after (topics.go).
		g.topics.confirmLater(user)
	}
}

// announce publishes users' new presence: one batch per user, published
// together, to the user's presence topic (only the gateways where someone
// watches the user hold it, see topics.go), or to every gateway
// (AllGateways) when the Router has no topics.
func (g *Gateway) announce(users []string, online bool, lastSeen map[string]int64) {
	if len(users) == 0 {
		return
	}
	pubs := make([]routing.Publication, 0, len(users))
	for _, u := range users {
		p := wire.Presence{User: []byte(u), Online: online, LastSeenMS: uint64(lastSeen[u])}
		to := routing.AllGateways
		if g.topics != nil {
			to = routing.TopicChannel(presenceTopic(u))
		}
		pubs = append(pubs, routing.Publication{Gateway: to, Batch: wire.AppendBatch(nil, nil, p.Append(nil, 0))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := routing.PublishMany(ctx, g.deps.Router, pubs); err != nil {
		g.log.Warn("gateway: announce presence", "users", len(users), "err", err)
	}
	g.m.presenceAnnounced.Add(float64(len(users)))
}

// onAll handles what any gateway or core publishes to every gateway
// (routing.AllGateways): channel events, and presence changes when the
// Router has no topics (announce).
func (g *Gateway) onAll(batch []byte) {
	_, frame, err := wire.DecodeBatch(batch, nil)
	if err != nil || len(frame) < wire.HeaderLen {
		g.m.badBatches.Inc()
		return
	}
	switch wire.Type(frame[0]) {
	case wire.TypePresence:
		g.onPresence(frame)
	case wire.TypeMsg, wire.TypeTyping:
		g.onChannel(frame)
	default:
		g.m.badBatches.Inc()
	}
}

// onPresence handles a presence change from any gateway: each local
// connection watching the user and still focused on the conversation it
// watches it from gets a PRESENCE.
func (g *Gateway) onPresence(frame []byte) {
	var p wire.Presence
	if err := p.Decode(frame[wire.HeaderLen:]); err != nil {
		g.m.badBatches.Inc()
		return
	}
	user := string(p.User)
	if t := g.topics; t != nil {
		t.deliverMu.Lock()
		defer t.deliverMu.Unlock()
		t.changed(user)
	}
	g.sendPresence(user, &p, false)
}

// sendPresence sends p (its ConvID set per watcher) to each connection
// watching user and still focused on the conversation it watches from, and
// records what it sent. With onlyChanged, a watcher last sent the same
// online state is skipped.
func (g *Gateway) sendPresence(user string, p *wire.Presence, onlyChanged bool) {
	for _, w := range g.watches.of(user, nil) {
		g.connsMu.RLock()
		c := g.conns[w.conn]
		g.connsMu.RUnlock()
		if c == nil || c.focus.Load() != w.val.conv || (onlyChanged && w.val.online == p.Online) {
			continue
		}
		p.ConvID = w.val.conv
		f := p.Append(nil, 0)
		out := appendServerHeader(make([]byte, 0, serverHeaderLen(len(f))+len(f)), ws.OpBinary, len(f))
		c.send(append(out, f...), wire.TypePresence)
		g.watches.setVal(w.conn, user, watchVal{conv: w.val.conv, online: p.Online})
		g.m.presenceSent.Inc()
	}
}

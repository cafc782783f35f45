package gateway

import (
	"sync"

	"github.com/gobwas/ws"

	"github.com/chatd-dev/chatd/wire"
)

// Channels: the pull model (docs/gateway.md, "Channels").
//
// A group with more members than the core's pull threshold is a channel:
// the fanout publishes each of its MSG and TYPING frames once to every
// gateway (routing.AllGateways) instead of looking up every member, and
// each gateway writes it only to its connections that are focused on the
// channel and proven members (pulls). Everyone else sees the messages
// through unread counts, RESUME and HISTORY.
//
// The proof is the core's answer to the connection's FOCUS: for a member
// the core answers a CONV of the channel (for anyone else an ERROR), and a
// CONV of conversation C reaching a connection focused on C is what adds
// it to pulls (pullFrom), since the core routes a conversation's CONV to
// its members only. A FOCUS elsewhere, FOCUS 0 or closing removes it, and
// so does a pushed group change that removes or lets go of the
// connection's user. Between the FOCUS and its CONV the connection gets
// nothing of the channel; its client sees the gap in seqs and fetches it.

// decoders are pullFrom's and onChannel's: onBatch calls pullFrom for
// every routed MSG while a connection here is on a channel, and a
// Decoder on the stack would escape to the heap.
var decoders = sync.Pool{New: func() any { return new(wire.Decoder) }}

// pulls indexes the connections proven to be focused members of a channel:
// channel -> connections.
type pulls = connIndex[uint64, struct{}]

// pullFrom handles a routed CONV or MSG reaching connections (onBatch):
// a CONV of the conversation a connection is focused on adds it to pulls;
// a group change that takes a connection's user out of the conversation
// removes it.
func (g *Gateway) pullFrom(frame []byte, to []*conn) {
	d := decoders.Get().(*wire.Decoder)
	defer decoders.Put(d)
	t, _, err := d.Decode(frame)
	if err != nil {
		return
	}
	switch t {
	case wire.TypeConv:
		for _, c := range to {
			if c.focus.Load() == d.Conv.ConvID {
				g.pulls.add(c.id, d.Conv.ConvID, struct{}{})
			}
		}
	case wire.TypeMsg:
		if d.Msg.Kind != wire.KindSystem {
			return
		}
		var ev wire.GroupEvent
		if ev.Decode(d.Msg.Body) != nil || (ev.Op != wire.GroupRemove && ev.Op != wire.GroupLeave) {
			return
		}
		for _, c := range to {
			if !g.pulls.has(c.id) {
				continue
			}
			for _, u := range ev.Users {
				if string(u) == string(c.userBytes()) {
					g.pulls.remove(c.id)
				}
			}
		}
	}
}

// onChannel writes a channel's MSG or TYPING (from the fanout, through
// AllGateways) to this gateway's connections in pulls for it that are
// still focused on it, except the device that sent the MSG (it has its
// ACK) or every device of the typist.
func (g *Gateway) onChannel(frame []byte) {
	d := decoders.Get().(*wire.Decoder)
	defer decoders.Put(d)
	t, _, err := d.Decode(frame)
	if err != nil {
		g.m.badBatches.Inc()
		return
	}
	var conv uint64
	var user, device []byte
	switch t {
	case wire.TypeMsg:
		conv, user, device = d.Msg.ConvID, d.Msg.Sender, d.Msg.SenderDevice
	case wire.TypeTyping:
		conv, user = d.Typing.ConvID, d.Typing.User
	}
	targets := g.pulls.of(conv, nil)
	if len(targets) == 0 {
		return
	}
	var out []byte
	sent := 0
	for _, p := range targets {
		g.connsMu.RLock()
		c := g.conns[p.conn]
		g.connsMu.RUnlock()
		if c == nil || c.focus.Load() != conv {
			continue
		}
		if string(c.userBytes()) == string(user) && (t == wire.TypeTyping || string(c.deviceBytes()) == string(device)) {
			continue
		}
		if out == nil {
			out = make([]byte, 0, serverHeaderLen(len(frame))+len(frame))
			out = appendServerHeader(out, ws.OpBinary, len(frame))
			out = append(out, frame...)
		}
		c.send(out, t)
		sent++
	}
	g.m.channelSent.Add(float64(sent))
}

// connIndex maps each connection to one key and a value, and each key to
// its connections. Safe for concurrent use.
type connIndex[K comparable, V any] struct {
	mu     sync.Mutex
	byConn map[uint64]keyed[K, V]
	byKey  map[K]map[uint64]struct{}
	// keyChanged, if set, is called under mu when a key gets its first
	// connection or loses its last; it must not block or call back.
	keyChanged func(K)
}

type keyed[K comparable, V any] struct {
	key K
	val V
}

// connVal is one connection of a key, with its value.
type connVal[V any] struct {
	conn uint64
	val  V
}

// add indexes connection id under k with v, replacing what it had.
func (x *connIndex[K, V]) add(id uint64, k K, v V) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(id)
	if x.byConn == nil {
		x.byConn, x.byKey = map[uint64]keyed[K, V]{}, map[K]map[uint64]struct{}{}
	}
	x.byConn[id] = keyed[K, V]{k, v}
	set := x.byKey[k]
	if set == nil {
		set = map[uint64]struct{}{}
		x.byKey[k] = set
		if x.keyChanged != nil {
			x.keyChanged(k)
		}
	}
	set[id] = struct{}{}
}

func (x *connIndex[K, V]) remove(id uint64) {
	x.mu.Lock()
	x.removeLocked(id)
	x.mu.Unlock()
}

func (x *connIndex[K, V]) removeLocked(id uint64) {
	e, ok := x.byConn[id]
	if !ok {
		return
	}
	delete(x.byConn, id)
	if set := x.byKey[e.key]; set != nil {
		delete(set, id)
		if len(set) == 0 {
			delete(x.byKey, e.key)
			if x.keyChanged != nil {
				x.keyChanged(e.key)
			}
		}
	}
}

// setVal replaces the value of connection id if it is still indexed under
// k (it may have been removed or moved meanwhile: then nothing changes).
func (x *connIndex[K, V]) setVal(id uint64, k K, v V) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if e, ok := x.byConn[id]; ok && e.key == k {
		x.byConn[id] = keyed[K, V]{k, v}
	}
}

// size is how many connections are indexed.
func (x *connIndex[K, V]) size() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.byConn)
}

// has reports whether connection id is indexed.
func (x *connIndex[K, V]) has(id uint64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.byConn[id]
	return ok
}

// hasKey reports whether some connection is indexed under k.
func (x *connIndex[K, V]) hasKey(k K) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.byKey[k]) > 0
}

// of appends the connections of k, with their values, to dst.
func (x *connIndex[K, V]) of(k K, dst []connVal[V]) []connVal[V] {
	x.mu.Lock()
	defer x.mu.Unlock()
	for id := range x.byKey[k] {
		dst = append(dst, connVal[V]{conn: id, val: x.byConn[id].val})
	}
	return dst
}

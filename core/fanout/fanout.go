// Package fanout consumes chat.events and delivers each event to the online
// devices it concerns: one registry lookup per event, the frame encoded once
// (once per variant: plain, and zstd for connections that negotiated it),
// and one Router publish per target gateway.
//
// Delivery here is best effort by design: the durable copy is in the store,
// and a device that misses a routed frame catches up through RESUME or a
// gap fill. Fanout therefore never blocks the partition on a routing
// failure; it counts it.
package fanout

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatd-dev/chatd/core/events"
	"github.com/chatd-dev/chatd/core/messages"
	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// Config tunes the fanout. Zero values mean defaults.
type Config struct {
	Logger  *slog.Logger
	Metrics prometheus.Registerer
	// PullAbove is the member count above which a group is a channel
	// (default messages.DefaultPullAbove; the core's must be the same):
	// its MSG and TYPING events are published once to every gateway
	// (routing.AllGateways), with no member or registry lookup, and each
	// gateway writes them to its connections focused on the channel
	// (gateway/pull.go). Its group-change messages are pushed to every
	// member like any group's.
	PullAbove int
}

// Deps are the fanout's collaborators.
type Deps struct {
	Store    store.Store
	Registry routing.Registry
	Router   routing.Router
	// Receipts, if set, gets every receipt event's pointer advance (one
	// AdvanceReceipts call per handled batch): the counts the sender's UI
	// shows. Best effort like delivery: a failure is counted, not retried
	// (the next receipt of that member raises the same pointer further).
	Receipts routing.ReceiptCounter
	// Members, if set, caches conversation membership for every core
	// process (routing.Redis: client-side cached, so a hit costs no round
	// trip, and invalidated when a writer changes it). Unset, the fanout
	// keeps its own in-process cache of the store's answers.
	Members routing.MemberCache
}

// Fanout handles chat.events batches. Handle is called from one goroutine.
type Fanout struct {
	deps      Deps
	log       *slog.Logger
	pullAbove int

	mu      sync.Mutex
	members map[uint64][]string // conversation -> members (sorted)
	// batchMembers holds the members of the conversations of the batch
	// being handled, read together before it (prefetchMembers);
	// groupChanged replaces an entry its change made stale.
	batchMembers map[uint64][]string

	delivered prometheus.Counter
	published prometheus.Counter
	pulled    prometheus.Counter
	failures  *prometheus.CounterVec

	// scratch, single caller
	dec   wire.Decoder
	rcpt  events.Receipt
	gev   wire.GroupEvent
	evs   []event
	users []string
	seen  map[string]bool
	// A user's routes are f.routes[j] for j = firstRoute[user]-1, then
	// nextRoute[j]-1, ... (0 ends the chain): an index, not a slice per
	// user, so a 1,024-member lookup allocates nothing once warm.
	firstRoute map[string]int32
	nextRoute  []int32
	routes     []routing.Route
	evRoutes   []routing.Route
	pubs       []routing.Publication
	pulls      []routing.Publication // this batch's channel events
	advances   []routing.ReceiptAdvance
	conns      []uint64
	zconns     []uint64
	convs      []uint64 // prefetchMembers' conversations, and its results
	outMembers [][]string
	found      []bool
}

// New returns a fanout.
func New(cfg Config, deps Deps) *Fanout {
	f := &Fanout{
		deps:         deps,
		log:          cfg.Logger,
		pullAbove:    cfg.PullAbove,
		members:      make(map[uint64][]string),
		batchMembers: make(map[uint64][]string),
		seen:         make(map[string]bool),
		firstRoute:   make(map[string]int32),
		delivered:    prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_fanout_deliveries_total", Help: "Frames handed to gateways for one device each."}),
		published:    prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_fanout_publishes_total", Help: "Router publishes (one per target gateway and frame variant)."}),
		pulled:       prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_fanout_channel_publishes_total", Help: "Channel MSG and TYPING events published once to every gateway (the pull model) instead of to each member's routes."}),
		failures:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatd_fanout_failures_total", Help: "Events not (fully) delivered live, by reason."}, []string{"reason"}),
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	if f.pullAbove <= 0 {
		f.pullAbove = messages.DefaultPullAbove
	}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(f.delivered, f.published, f.pulled, f.failures)
	}
	return f
}

// event is one decoded chat.events record.
type event struct {
	conv       uint64
	frame      []byte // the frame to deliver (aliases the record, or a receipt frame)
	skipUser   string // the device that caused the event gets nothing
	skipDevice string
	skipAll    bool // no device of skipUser gets it (typing)
	members    []string
}

// Handle delivers every event in recs: the members of all their
// conversations are looked up in ONE registry call, and every batch for
// every gateway goes out in ONE PublishMany (one round trip with Redis).
// It only fails when ctx ends.
func (f *Fanout) Handle(ctx context.Context, recs []*kgo.Record) error {
	evs := f.evs[:0]
	advances := f.advances[:0]
	pulls := f.pulls[:0]
	f.prefetchMembers(ctx, recs)
	for _, rec := range recs {
		kind, body, err := events.Split(rec.Value)
		if err != nil {
			f.failures.WithLabelValues("malformed").Inc()
			continue
		}
		var ev event
		switch kind {
		case events.KindMsg:
			t, _, err := f.dec.Decode(body)
			if err != nil || t != wire.TypeMsg {
				f.failures.WithLabelValues("malformed").Inc()
				continue
			}
			// The sending device has its ACK; every other device of every
			// member, the sender's own other devices included, gets the MSG.
			m := &f.dec.Msg
			ev = event{conv: m.ConvID, frame: body, skipUser: string(m.Sender), skipDevice: string(m.SenderDevice)}
			if m.Kind == wire.KindSystem && messages.GroupEventID(m.ClientMsgID) {
				// A group change: the cached member lists are stale from
				// this message on, and members who just left or were
				// removed must still hear of it.
				members, err := f.groupChanged(ctx, m)
				if err != nil {
					f.failures.WithLabelValues("members").Inc()
					f.log.Warn("fanout: group change", "conv", ev.conv, "err", err)
					continue
				}
				ev.members = members
				// The actor's device got a CONV, not the message: it gets
				// the message too, so its log has no gap.
				ev.skipUser, ev.skipDevice = "", ""
				evs = append(evs, ev)
				continue
			}
		case events.KindReceipt:
			if err := f.rcpt.Decode(body); err != nil {
				f.failures.WithLabelValues("malformed").Inc()
				continue
			}
			// In a direct conversation the peer sees the tick; the user's
			// other devices sync their read pointer (badge) from the same
			// frame. In a group only the user's other devices get it:
			// forwarding every member's receipt to every member costs
			// members² frames per message (a million for 1,024 members);
			// senders read "read by N of M" from the counters instead.
			r := wire.Receipt{ConvID: f.rcpt.Conv, Kind: f.rcpt.Kind, UpToSeq: f.rcpt.Seq, User: f.rcpt.User}
			ev = event{conv: f.rcpt.Conv, frame: r.Append(nil, 0), skipUser: string(f.rcpt.User), skipDevice: string(f.rcpt.Device)}
			advances = append(advances, routing.ReceiptAdvance{Conv: f.rcpt.Conv, User: ev.skipUser, Kind: routing.ReceiptKind(f.rcpt.Kind), Seq: f.rcpt.Seq})
			if f.rcpt.Group {
				ev.members = []string{ev.skipUser}
				evs = append(evs, ev)
				continue
			}
		case events.KindTyping:
			frame, dev, err := events.DecodeTyping(body)
			if err != nil {
				f.failures.WithLabelValues("malformed").Inc()
				continue
			}
			if t, _, err := f.dec.Decode(frame); err != nil || t != wire.TypeTyping {
				f.failures.WithLabelValues("malformed").Inc()
				continue
			}
			// Every member's devices but the typist's own; gateways keep
			// it only for connections focused on the conversation.
			ev = event{conv: f.dec.Typing.ConvID, frame: frame, skipUser: string(f.dec.Typing.User), skipDevice: string(dev), skipAll: true}
		default:
			f.failures.WithLabelValues("unknown_kind").Inc()
			continue
		}
		members, err := f.membersOf(ctx, ev.conv)
		if err != nil {
			f.failures.WithLabelValues("members").Inc()
			f.log.Warn("fanout: members", "conv", ev.conv, "err", err)
			continue
		}
		if len(members) > f.pullAbove && kind != events.KindReceipt {
			// A channel: once to every gateway, for its focused
			// connections; the gateway skips the sender's device (MSG) or
			// the typist's devices (TYPING) itself.
			pulls = append(pulls, routing.Publication{Gateway: routing.AllGateways, Batch: wire.AppendBatch(nil, nil, ev.frame)})
			f.pulled.Inc()
			continue
		}
		ev.members = members
		evs = append(evs, ev)
	}
	f.evs = evs
	f.pulls = pulls
	if len(pulls) > 0 {
		if err := routing.PublishMany(ctx, f.deps.Router, pulls); err != nil {
			f.failures.WithLabelValues("route").Inc()
			f.log.Warn("fanout: publish channel events", "err", err)
		}
		clear(pulls)
	}
	f.advances = advances
	if len(advances) > 0 && f.deps.Receipts != nil {
		if err := f.deps.Receipts.AdvanceReceipts(ctx, advances); err != nil {
			f.failures.WithLabelValues("receipt_counters").Inc()
			f.log.Warn("fanout: receipt counters", "advances", len(advances), "err", err)
		}
		clear(advances) // drop the user strings until the next batch
	}
	if len(evs) == 0 {
		return ctx.Err()
	}

	// One lookup for every member of every event.
	clear(f.seen)
	users := f.users[:0]
	for i := range evs {
		for _, m := range evs[i].members {
			if !f.seen[m] {
				f.seen[m] = true
				users = append(users, m)
			}
		}
	}
	f.users = users
	routes, err := f.deps.Registry.Lookup(ctx, users, f.routes[:0])
	f.routes = routes
	if err != nil {
		f.failures.WithLabelValues("registry").Add(float64(len(evs)))
		f.log.Warn("fanout: registry lookup", "events", len(evs), "err", err)
		return ctx.Err()
	}
	clear(f.firstRoute)
	f.nextRoute = slices.Grow(f.nextRoute[:0], len(routes))[:len(routes)]
	for i := len(routes) - 1; i >= 0; i-- { // backwards, so chains keep lookup order
		u := routes[i].User
		f.nextRoute[i] = f.firstRoute[u]
		f.firstRoute[u] = int32(i + 1)
	}

	pubs := f.pubs[:0]
	for i := range evs {
		pubs = f.deliver(pubs, &evs[i])
	}
	f.pubs = pubs
	if err := routing.PublishMany(ctx, f.deps.Router, pubs); err != nil {
		f.failures.WithLabelValues("route").Inc()
		f.log.Warn("fanout: publish", "err", err)
	}
	return ctx.Err()
}

// deliver appends to pubs one batch per target gateway (and per frame
// variant: plain, and zstd for connections that negotiated it) for ev.
func (f *Fanout) deliver(pubs []routing.Publication, ev *event) []routing.Publication {
	routes := f.evRoutes[:0]
	for _, m := range ev.members {
		for j := f.firstRoute[m]; j != 0; j = f.nextRoute[j-1] {
			routes = append(routes, f.routes[j-1])
		}
	}
	f.evRoutes = routes
	slices.SortFunc(routes, func(a, b routing.Route) int { return cmp.Compare(a.Gateway, b.Gateway) })
	compressible := len(ev.frame) >= wire.CompressMinBytes+wire.HeaderLen
	var zframe []byte
	for i := 0; i < len(routes); {
		gw := routes[i].Gateway
		f.conns, f.zconns = f.conns[:0], f.zconns[:0]
		for ; i < len(routes) && routes[i].Gateway == gw; i++ {
			r := &routes[i]
			if r.User == ev.skipUser && (ev.skipAll || r.Device == ev.skipDevice) {
				continue
			}
			if compressible && r.Caps&wire.CapZstd != 0 {
				f.zconns = append(f.zconns, r.Conn)
			} else {
				f.conns = append(f.conns, r.Conn)
			}
		}
		if len(f.conns) > 0 {
			pubs = append(pubs, routing.Publication{Gateway: gw, Batch: wire.AppendBatch(nil, f.conns, ev.frame)})
			f.published.Inc()
			f.delivered.Add(float64(len(f.conns)))
		}
		if len(f.zconns) > 0 {
			if zframe == nil {
				zframe = wire.Compress(nil, ev.frame) // once per event
			}
			pubs = append(pubs, routing.Publication{Gateway: gw, Batch: wire.AppendBatch(nil, f.zconns, zframe)})
			f.published.Inc()
			f.delivered.Add(float64(len(f.zconns)))
		}
	}
	return pubs
}

// groupChanged handles a group's system message: it reloads the members
// from the store (which committed the change before the message was
// emitted) and writes them through to both caches, per the MemberCache
// protocol (the fanout, the only consumer of the group's events, is the
// writer after the commit). It returns who gets the message: the members
// now, plus whoever the change took out.
func (f *Fanout) groupChanged(ctx context.Context, m *wire.Msg) ([]string, error) {
	c, err := f.deps.Store.Conversation(ctx, m.ConvID)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.members[m.ConvID] = c.Members
	f.mu.Unlock()
	if _, ok := f.batchMembers[m.ConvID]; ok {
		f.batchMembers[m.ConvID] = c.Members // for the batch's later events
	}
	if f.deps.Members != nil {
		if err := f.deps.Members.SetMembers(ctx, m.ConvID, c.Members); err != nil {
			// An entry in an unknown state: drop it so readers go to the
			// store (a stale list would misroute until its TTL).
			f.failures.WithLabelValues("member_cache").Inc()
			if err := f.deps.Members.DeleteMembers(ctx, m.ConvID); err != nil {
				f.log.Warn("fanout: member cache left stale", "conv", m.ConvID, "err", err)
			}
		}
	}
	if err := f.gev.Decode(m.Body); err != nil {
		f.failures.WithLabelValues("malformed").Inc()
		return c.Members, nil
	}
	var gone []string
	switch f.gev.Op {
	case wire.GroupRemove:
		for _, u := range f.gev.Users {
			gone = append(gone, string(u))
		}
	case wire.GroupLeave:
		gone = append(gone, string(f.gev.Actor))
	}
	if len(gone) == 0 {
		return c.Members, nil
	}
	out := append(slices.Clone(c.Members), gone...)
	slices.Sort(out)
	return slices.Compact(out), nil
}

// membersOf returns a conversation's members: from Deps.Members when set
// (a miss reads the store and fills it; a cache that cannot be read is
// counted and bypassed), else from the fanout's own cache. Both are
// refreshed by groupChanged when a group's membership changes; direct
// conversations never change members.
func (f *Fanout) membersOf(ctx context.Context, conv uint64) ([]string, error) {
	if m, ok := f.batchMembers[conv]; ok {
		return m, nil
	}
	if f.deps.Members != nil {
		m, ok, err := f.deps.Members.Members(ctx, conv)
		if err == nil && ok {
			return m, nil
		}
		if err != nil {
			f.failures.WithLabelValues("member_cache").Inc()
		}
		c, err := f.deps.Store.Conversation(ctx, conv)
		if err != nil {
			return nil, err
		}
		if err := f.deps.Members.FillMembers(ctx, conv, c.Members); err != nil {
			f.failures.WithLabelValues("member_cache").Inc()
		}
		return c.Members, nil
	}
	f.mu.Lock()
	m, ok := f.members[conv]
	f.mu.Unlock()
	if ok {
		return m, nil
	}
	c, err := f.deps.Store.Conversation(ctx, conv)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if len(f.members) > 200_000 {
		clear(f.members)
	}
	f.members[conv] = c.Members
	f.mu.Unlock()
	return c.Members, nil
}

// prefetchMembers reads, before a batch is handled, the members of every
// conversation its events need, when the cache can read many at once: one
// round trip for the lookups and one for filling what missed from the
// store, instead of two round trips per new conversation, one after the
// other (measured: the fanout fell 370,000 events behind while a million
// clients each opened a conversation). What it cannot settle is left to
// membersOf.
func (f *Fanout) prefetchMembers(ctx context.Context, recs []*kgo.Record) {
	clear(f.batchMembers)
	mc, ok := f.deps.Members.(routing.MultiMemberCache)
	if !ok {
		return
	}
	convs := f.convs[:0]
	for _, rec := range recs {
		if conv, ok := f.eventConv(rec.Value); ok {
			if _, dup := f.batchMembers[conv]; !dup {
				f.batchMembers[conv] = nil
				convs = append(convs, conv)
			}
		}
	}
	f.convs = convs
	clear(f.batchMembers)
	if len(convs) == 0 {
		return
	}
	out := slices.Grow(f.outMembers[:0], len(convs))[:len(convs)]
	found := slices.Grow(f.found[:0], len(convs))[:len(convs)]
	f.outMembers, f.found = out, found
	defer clear(out) // drop the lists until the next batch
	if err := mc.MembersMulti(ctx, convs, out, found); err != nil {
		f.failures.WithLabelValues("member_cache").Inc()
		return
	}
	var fillConvs []uint64
	var fills [][]string
	for i, conv := range convs {
		if found[i] {
			f.batchMembers[conv] = out[i]
			continue
		}
		c, err := f.deps.Store.Conversation(ctx, conv)
		if err != nil {
			continue // membersOf tries again and counts the failure
		}
		f.batchMembers[conv] = c.Members
		fillConvs, fills = append(fillConvs, conv), append(fills, c.Members)
	}
	if len(fillConvs) == 0 {
		return
	}
	if err := mc.FillMembersMulti(ctx, fillConvs, fills); err != nil {
		f.failures.WithLabelValues("member_cache").Inc()
	}
}

// eventConv returns the conversation whose members an event record needs:
// a MSG's, a TYPING's, a direct conversation's RECEIPT's (a group's goes to
// the reader's devices only).
func (f *Fanout) eventConv(value []byte) (uint64, bool) {
	kind, body, err := events.Split(value)
	if err != nil {
		return 0, false
	}
	switch kind {
	case events.KindMsg:
		if t, _, err := f.dec.Decode(body); err == nil && t == wire.TypeMsg {
			return f.dec.Msg.ConvID, true
		}
	case events.KindReceipt:
		if err := f.rcpt.Decode(body); err == nil && !f.rcpt.Group {
			return f.rcpt.Conv, true
		}
	case events.KindTyping:
		if frame, _, err := events.DecodeTyping(body); err == nil {
			if t, _, err := f.dec.Decode(frame); err == nil && t == wire.TypeTyping {
				return f.dec.Typing.ConvID, true
			}
		}
	}
	return 0, false
}

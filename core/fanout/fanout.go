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
	"errors"
	"log/slog"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatd-dev/chatd/core/events"
	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// Config tunes the fanout. Zero values mean defaults.
type Config struct {
	Logger  *slog.Logger
	Metrics prometheus.Registerer
}

// Deps are the fanout's collaborators.
type Deps struct {
	Store    store.Store
	Registry routing.Registry
	Router   routing.Router
}

// Fanout handles chat.events batches. Handle is called from one goroutine.
type Fanout struct {
	deps Deps
	log  *slog.Logger

	mu      sync.Mutex
	members map[uint64][]string // conversation -> members (sorted)

	delivered prometheus.Counter
	published prometheus.Counter
	failures  *prometheus.CounterVec

	// scratch, single caller
	dec     wire.Decoder
	rcpt    events.Receipt
	routes  []routing.Route
	conns   []uint64
	zconns  []uint64
	out     []byte
	zframe  []byte
	frameRc []byte
}

// New returns a fanout.
func New(cfg Config, deps Deps) *Fanout {
	f := &Fanout{
		deps:      deps,
		log:       cfg.Logger,
		members:   make(map[uint64][]string),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_fanout_deliveries_total", Help: "Frames handed to gateways for one device each."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_fanout_publishes_total", Help: "Router publishes (one per target gateway and frame variant)."}),
		failures:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatd_fanout_failures_total", Help: "Events not (fully) delivered live, by reason."}, []string{"reason"}),
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(f.delivered, f.published, f.failures)
	}
	return f
}

// Handle delivers every event in recs. It only fails when ctx ends.
func (f *Fanout) Handle(ctx context.Context, recs []*kgo.Record) error {
	for _, rec := range recs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		kind, body, err := events.Split(rec.Value)
		if err != nil {
			f.failures.WithLabelValues("malformed").Inc()
			continue
		}
		switch kind {
		case events.KindMsg:
			f.message(ctx, body)
		case events.KindReceipt:
			f.receipt(ctx, body)
		default:
			f.failures.WithLabelValues("unknown_kind").Inc()
		}
	}
	return nil
}

func (f *Fanout) message(ctx context.Context, frame []byte) {
	t, _, err := f.dec.Decode(frame)
	if err != nil || t != wire.TypeMsg {
		f.failures.WithLabelValues("malformed").Inc()
		return
	}
	m := &f.dec.Msg
	// The sending device has its ACK; every other device of every member,
	// the sender's own other devices included, gets the MSG.
	f.deliver(ctx, m.ConvID, frame, string(m.Sender), string(m.SenderDevice))
}

func (f *Fanout) receipt(ctx context.Context, body []byte) {
	if err := f.rcpt.Decode(body); err != nil {
		f.failures.WithLabelValues("malformed").Inc()
		return
	}
	r := wire.Receipt{ConvID: f.rcpt.Conv, Kind: f.rcpt.Kind, UpToSeq: f.rcpt.Seq, User: f.rcpt.User}
	f.frameRc = r.Append(f.frameRc[:0], 0)
	// Other members see the tick; the user's other devices sync their
	// read pointer (badge) from the same frame.
	f.deliver(ctx, f.rcpt.Conv, f.frameRc, string(f.rcpt.User), string(f.rcpt.Device))
}

// deliver routes frame to every online device of the conversation's members
// except (skipUser, skipDevice).
func (f *Fanout) deliver(ctx context.Context, conv uint64, frame []byte, skipUser, skipDevice string) {
	members, err := f.membersOf(ctx, conv)
	if err != nil {
		f.failures.WithLabelValues("members").Inc()
		f.log.Warn("fanout: members", "conv", conv, "err", err)
		return
	}
	f.routes, err = f.deps.Registry.Lookup(ctx, members, f.routes[:0])
	if err != nil {
		f.failures.WithLabelValues("registry").Inc()
		f.log.Warn("fanout: registry lookup", "conv", conv, "err", err)
		return
	}
	routes := f.routes
	slices.SortFunc(routes, func(a, b routing.Route) int { return cmp.Compare(a.Gateway, b.Gateway) })
	compressible := len(frame) >= wire.CompressMinBytes+wire.HeaderLen
	f.zframe = f.zframe[:0]
	for i := 0; i < len(routes); {
		gw := routes[i].Gateway
		f.conns, f.zconns = f.conns[:0], f.zconns[:0]
		for ; i < len(routes) && routes[i].Gateway == gw; i++ {
			r := &routes[i]
			if r.User == skipUser && r.Device == skipDevice {
				continue
			}
			if compressible && r.Caps&wire.CapZstd != 0 {
				f.zconns = append(f.zconns, r.Conn)
			} else {
				f.conns = append(f.conns, r.Conn)
			}
		}
		if len(f.conns) > 0 {
			f.publish(ctx, gw, f.conns, frame)
		}
		if len(f.zconns) > 0 {
			if len(f.zframe) == 0 {
				f.zframe = wire.Compress(f.zframe, frame) // once per event
			}
			f.publish(ctx, gw, f.zconns, f.zframe)
		}
	}
}

func (f *Fanout) publish(ctx context.Context, gw string, conns []uint64, frame []byte) {
	f.out = wire.AppendBatch(f.out[:0], conns, frame)
	if err := f.deps.Router.Publish(ctx, gw, f.out); err != nil {
		f.failures.WithLabelValues("route").Inc()
		return
	}
	f.published.Inc()
	f.delivered.Add(float64(len(conns)))
}

// membersOf returns a conversation's members, cached. Direct
// conversations never change members, so the cache needs no invalidation
// for them.
func (f *Fanout) membersOf(ctx context.Context, conv uint64) ([]string, error) {
	f.mu.Lock()
	m, ok := f.members[conv]
	f.mu.Unlock()
	if ok {
		return m, nil
	}
	c, err := f.deps.Store.Conversation(ctx, conv)
	if errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
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

// Package routing tells the core where a user's devices are connected and
// carries pre-encoded frames from the core to the gateways that hold them.
//
// Registry: device -> (gateway, connection). Router: one channel per gateway.
// Both are lookups and best-effort transport, never a queue: a lost routed
// frame is recovered by the client's RESUME, because durability lives in the
// message store. Implementations: memory (the embedded default, in this
// package) and Redis.
package routing

import (
	"context"
	"time"
)

// Route says where one device of a user is connected.
type Route struct {
	User    string
	Device  string
	Gateway string // gateway id (unique per gateway process lifetime)
	Conn    uint64 // connection id within that gateway
	Caps    uint64 // wire capabilities negotiated on that connection
}

// Registry maps devices to their live connection.
//
// A device has at most one route: registering (user, device) again replaces
// the previous route. A route is live while two things hold: its gateway
// holds a lease (Lease), and less than ttl passed since the last Register
// naming it. The lease is how a crashed gateway's routes disappear without
// anyone removing them: it is one entry per gateway, renewed with one call
// per interval whatever the gateway's number of connections, so liveness
// costs the registry nothing per connection. The route ttl only bounds how
// long a dead gateway's entries occupy memory; gateways refresh their
// routes rarely (hours) to keep long-lived connections registered.
type Registry interface {
	// Lease marks gateway alive for ttl from now; ttl <= 0 ends its lease
	// (a gateway shutting down). Gateways renew it every ttl/3.
	Lease(ctx context.Context, gateway string, ttl time.Duration) error
	// Register adds or refreshes routes. Gateways call it once per new
	// connection batch and, rarely, for all their connections (batched:
	// never one call per connection).
	Register(ctx context.Context, routes []Route, ttl time.Duration) error
	// Unregister removes the routes whose (user, device) still point at the
	// same Gateway and Conn; a newer connection of that device is kept.
	Unregister(ctx context.Context, routes []Route) error
	// Lookup appends to dst the live routes of every device of users and
	// returns it. One call per message, whatever the number of users. A
	// gateway's lease ending may take up to LeaseCacheTTL to hide its
	// routes from a process that looked them up just before.
	Lookup(ctx context.Context, users []string, dst []Route) ([]Route, error)
}

// LeaseCacheTTL is how long a Registry may trust a gateway lease it read
// before reading it again.
const LeaseCacheTTL = time.Second

// Router carries batches (wire.AppendBatch: conn ids + one frame) to
// gateways. Delivery is at-most-once and may drop under failure.
type Router interface {
	// Publish sends batch to gateway. It does not wait for the gateway to
	// write anything. The router does not retain batch after Publish returns.
	Publish(ctx context.Context, gateway string, batch []byte) error
	// Subscribe delivers every batch published to gateway to h, in publish
	// order, until stop is called. h must not block and must not retain
	// batch after returning.
	Subscribe(gateway string, h func(batch []byte)) (stop func(), err error)
}

// AllGateways is the Router channel every gateway subscribes to besides its
// own: a batch published to it reaches every gateway (presence changes,
// which a gateway filters against the connections watching that user). It
// is never a gateway id (ids are "gw-" + random hex).
const AllGateways = "*"

// Publication is one batch for one gateway.
type Publication struct {
	Gateway string
	Batch   []byte
}

// ManyPublisher is a Router ability: publishing many batches at once (one
// round trip for a networked router). Batches for one gateway arrive in
// slice order, after anything published to it before.
type ManyPublisher interface {
	PublishMany(ctx context.Context, pubs []Publication) error
}

// PublishMany publishes pubs through r, in one call when r can.
func PublishMany(ctx context.Context, r Router, pubs []Publication) error {
	if len(pubs) == 0 {
		return nil
	}
	if mp, ok := r.(ManyPublisher); ok {
		return mp.PublishMany(ctx, pubs)
	}
	var first error
	for _, p := range pubs {
		if err := r.Publish(ctx, p.Gateway, p.Batch); err != nil && first == nil {
			first = err
		}
	}
	return first
}

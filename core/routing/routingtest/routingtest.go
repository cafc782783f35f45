// Package routingtest is the contract every routing.Registry and
// routing.Router implementation passes: the semantics written on the
// interfaces in package routing, checked the same way for the in-process
// Memory and for Redis.
//
// Timing: expiry tests use short TTLs (300ms) and only ever assert that an
// entry is eventually gone (polling up to 10s) or, with a long TTL, still
// there; they assert no wall-clock durations.
package routingtest

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/core/routing"
)

// waitFor bounds every "eventually" in the suite.
const waitFor = 10 * time.Second

// Run runs the whole contract. newPair returns a fresh, empty registry and
// router (often the same value) for one subtest; it registers its own
// cleanup with t.
func Run(t *testing.T, newPair func(t *testing.T) (routing.Registry, routing.Router)) {
	t.Run("Registry", func(t *testing.T) {
		RunRegistry(t, func(t *testing.T) routing.Registry { r, _ := newPair(t); return r })
	})
	t.Run("Router", func(t *testing.T) {
		RunRouter(t, func(t *testing.T) routing.Router { _, r := newPair(t); return r })
	})
	t.Run("Concurrent", func(t *testing.T) {
		reg, rt := newPair(t)
		testConcurrent(t, reg, rt)
	})
}

// RunRegistry runs the Registry half of the contract.
func RunRegistry(t *testing.T, newRegistry func(t *testing.T) routing.Registry) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, routing.Registry)
	}{
		{"RegisterLookup", testRegisterLookup},
		{"ReplaceOnReregister", testReplace},
		{"UnregisterOnlyMatchingConn", testUnregister},
		{"Expiry", testExpiry},
		{"RefreshKeepsAlive", testRefresh},
		{"LookupManyUsers", testLookupMany},
		{"LargeBatch", testLargeBatch},
		{"LeaseGatesRoutes", testLease},
		{"LeaseExpiry", testLeaseExpiry},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newRegistry(t)) })
	}
}

// RunRouter runs the Router half of the contract.
func RunRouter(t *testing.T, newRouter func(t *testing.T) routing.Router) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, routing.Router)
	}{
		{"PublishOrder", testPublishOrder},
		{"BinaryRoundTrip", testBinary},
		{"GatewaysAreSeparate", testSeparate},
		{"AllGatewaysReachesEverySubscriber", testAllGateways},
		{"NoSubscriber", testNoSubscriber},
		{"UnsubscribeStopsDelivery", testUnsubscribe},
		{"ConcurrentPublishers", testConcurrentPublishers},
		{"Topics", testTopics},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newRouter(t)) })
	}
}

// ---- helpers ----

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", waitFor, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sortRoutes(rs []routing.Route) []routing.Route {
	slices.SortFunc(rs, func(a, b routing.Route) int {
		return cmp.Or(cmp.Compare(a.User, b.User), cmp.Compare(a.Device, b.Device),
			cmp.Compare(a.Gateway, b.Gateway), cmp.Compare(a.Conn, b.Conn), cmp.Compare(a.Caps, b.Caps))
	})
	return rs
}

func lookup(t *testing.T, reg routing.Registry, users ...string) []routing.Route {
	t.Helper()
	got, err := reg.Lookup(ctx(t), users, nil)
	if err != nil {
		t.Fatalf("Lookup(%v): %v", users, err)
	}
	return sortRoutes(got)
}

// register leases every gateway named in rs for a minute, then registers
// rs with ttl.
func register(t *testing.T, reg routing.Registry, ttl time.Duration, rs ...routing.Route) {
	t.Helper()
	var leased []string
	for _, r := range rs {
		if !slices.Contains(leased, r.Gateway) {
			lease(t, reg, r.Gateway, time.Minute)
			leased = append(leased, r.Gateway)
		}
	}
	if err := reg.Register(ctx(t), rs, ttl); err != nil {
		t.Fatalf("Register: %v", err)
	}
}

func lease(t *testing.T, reg routing.Registry, gateway string, ttl time.Duration) {
	t.Helper()
	if err := reg.Lease(ctx(t), gateway, ttl); err != nil {
		t.Fatalf("Lease(%s, %v): %v", gateway, ttl, err)
	}
}

func unregister(t *testing.T, reg routing.Registry, rs ...routing.Route) {
	t.Helper()
	if err := reg.Unregister(ctx(t), rs); err != nil {
		t.Fatalf("Unregister: %v", err)
	}
}

func wantRoutes(t *testing.T, got []routing.Route, want ...routing.Route) {
	t.Helper()
	want = sortRoutes(slices.Clone(want))
	if !slices.Equal(sortRoutes(got), want) {
		t.Fatalf("routes:\n got %v\nwant %v", got, want)
	}
}

// sink collects batches for one subscription; h may be called from any
// goroutine (Memory calls it from the publisher's).
type sink struct {
	mu  sync.Mutex
	got [][]byte
}

func (s *sink) h(b []byte) {
	c := bytes.Clone(b) // h must not retain b
	if c == nil {
		c = []byte{}
	}
	s.mu.Lock()
	s.got = append(s.got, c)
	s.mu.Unlock()
}

func (s *sink) snapshot() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func (s *sink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func subscribe(t *testing.T, rt routing.Router, gw string, h func([]byte)) func() {
	t.Helper()
	stop, err := rt.Subscribe(gw, h)
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", gw, err)
	}
	t.Cleanup(stop)
	return stop
}

func publish(t *testing.T, rt routing.Router, gw string, b []byte) {
	t.Helper()
	if err := rt.Publish(ctx(t), gw, b); err != nil {
		t.Fatalf("Publish(%s): %v", gw, err)
	}
}

// ---- Registry ----

func testRegisterLookup(t *testing.T, reg routing.Registry) {
	aPhone := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1, Caps: 3}
	aLaptop := routing.Route{User: "alice", Device: "laptop", Gateway: "g2", Conn: 1 << 40, Caps: 1<<64 - 1}
	bPhone := routing.Route{User: "bob", Device: "phone", Gateway: "g1", Conn: 2}
	register(t, reg, time.Minute, aPhone, aLaptop, bPhone)

	wantRoutes(t, lookup(t, reg, "alice", "carol"), aPhone, aLaptop)
	wantRoutes(t, lookup(t, reg, "bob"), bPhone)
	wantRoutes(t, lookup(t, reg, "carol"))
	wantRoutes(t, lookup(t, reg, "bob", "alice"), aPhone, aLaptop, bPhone)

	// Lookup appends to dst and keeps what was there.
	head := routing.Route{User: "x", Device: "y", Gateway: "z", Conn: 9}
	got, err := reg.Lookup(ctx(t), []string{"bob"}, []routing.Route{head})
	if err != nil || len(got) != 2 || got[0] != head || got[1] != bPhone {
		t.Fatalf("Lookup append: %v, %v", got, err)
	}
	got, err = reg.Lookup(ctx(t), nil, got[:1])
	if err != nil || len(got) != 1 {
		t.Fatalf("Lookup of no users: %v, %v", got, err)
	}
	// Register and Unregister of nothing are fine.
	register(t, reg, time.Minute)
	unregister(t, reg)
}

func testReplace(t *testing.T, reg routing.Registry) {
	old := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1, Caps: 1}
	other := routing.Route{User: "alice", Device: "tablet", Gateway: "g1", Conn: 2}
	register(t, reg, time.Minute, old, other)
	// The device reconnects through another gateway with new caps.
	cur := routing.Route{User: "alice", Device: "phone", Gateway: "g3", Conn: 77, Caps: 6}
	register(t, reg, time.Minute, cur)
	wantRoutes(t, lookup(t, reg, "alice"), cur, other)
}

func testUnregister(t *testing.T, reg routing.Registry) {
	old := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1}
	cur := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 9}
	laptop := routing.Route{User: "alice", Device: "laptop", Gateway: "g2", Conn: 1}
	register(t, reg, time.Minute, old, laptop)
	register(t, reg, time.Minute, cur)

	// The old connection's close arrives after the reconnect: no effect.
	unregister(t, reg, old)
	wantRoutes(t, lookup(t, reg, "alice"), cur, laptop)
	// Same conn id on another gateway is another connection.
	unregister(t, reg, routing.Route{User: "alice", Device: "phone", Gateway: "g2", Conn: 9})
	wantRoutes(t, lookup(t, reg, "alice"), cur, laptop)
	// Caps do not take part in matching.
	c := cur
	c.Caps = 42
	unregister(t, reg, c)
	wantRoutes(t, lookup(t, reg, "alice"), laptop)
	// Unknown users and devices are fine.
	unregister(t, reg, routing.Route{User: "nobody", Device: "x", Gateway: "g1", Conn: 1}, laptop)
	wantRoutes(t, lookup(t, reg, "alice"))
	// A device can come back after it was unregistered.
	register(t, reg, time.Minute, old)
	wantRoutes(t, lookup(t, reg, "alice"), old)
}

func testExpiry(t *testing.T, reg routing.Registry) {
	const short = 300 * time.Millisecond
	// alice: a short-lived device registered after a long-lived one.
	aLong := routing.Route{User: "alice", Device: "laptop", Gateway: "g1", Conn: 1}
	aShort := routing.Route{User: "alice", Device: "phone", Gateway: "g2", Conn: 2}
	// bob: the other order.
	bShort := routing.Route{User: "bob", Device: "phone", Gateway: "g2", Conn: 3}
	bLong := routing.Route{User: "bob", Device: "laptop", Gateway: "g1", Conn: 4}
	// carol: only a short-lived device.
	cShort := routing.Route{User: "carol", Device: "phone", Gateway: "g2", Conn: 5}
	register(t, reg, time.Minute, aLong)
	register(t, reg, short, aShort, bShort, cShort)
	register(t, reg, time.Minute, bLong)

	eventually(t, "short-lived routes expire", func() bool {
		return len(lookup(t, reg, "alice", "bob", "carol")) == 2
	})
	// A shorter ttl for one device never cuts another device's longer one.
	wantRoutes(t, lookup(t, reg, "alice", "bob", "carol"), aLong, bLong)
	// Expired devices can register again.
	register(t, reg, time.Minute, cShort, aShort)
	wantRoutes(t, lookup(t, reg, "alice", "carol"), aLong, aShort, cShort)
}

func testRefresh(t *testing.T, reg routing.Registry) {
	// Registering again before the ttl passes keeps a route alive: refresh
	// every 50ms with a 1s ttl for longer than the ttl.
	r := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1}
	const ttl = time.Second
	register(t, reg, ttl, r)
	for end := time.Now().Add(ttl + 300*time.Millisecond); time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
		register(t, reg, ttl, r)
	}
	wantRoutes(t, lookup(t, reg, "alice"), r)
}

func testLookupMany(t *testing.T, reg routing.Registry) {
	const n = 300
	var routes []routing.Route
	var users []string
	for i := range n {
		u := "user-" + strconv.Itoa(i)
		users = append(users, u)
		routes = append(routes,
			routing.Route{User: u, Device: "phone", Gateway: "g" + strconv.Itoa(i%7), Conn: uint64(2 * i), Caps: uint64(i)},
			routing.Route{User: u, Device: "desktop", Gateway: "g" + strconv.Itoa(i%5), Conn: uint64(2*i + 1)})
	}
	register(t, reg, time.Minute, routes...)
	for i := range 50 {
		users = append(users, "offline-"+strconv.Itoa(i))
	}
	rand.Shuffle(len(users), func(i, j int) { users[i], users[j] = users[j], users[i] })
	wantRoutes(t, lookup(t, reg, users...), routes...)
}

func testLargeBatch(t *testing.T, reg routing.Registry) {
	// Larger than any sensible pipeline chunk: a heartbeat of a big gateway.
	const n = 2300
	routes := make([]routing.Route, n)
	users := make([]string, n)
	for i := range routes {
		users[i] = fmt.Sprintf("u%d", i)
		routes[i] = routing.Route{User: users[i], Device: "d", Gateway: "big", Conn: uint64(i)}
	}
	register(t, reg, time.Minute, routes...)
	wantRoutes(t, lookup(t, reg, users...), routes...)
	unregister(t, reg, routes...)
	wantRoutes(t, lookup(t, reg, users...))
}

func testLease(t *testing.T, reg routing.Registry) {
	a := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1}
	b := routing.Route{User: "alice", Device: "laptop", Gateway: "g2", Conn: 2}
	// A route of a gateway that never took a lease is not live (and the
	// registry may drop it: gateways lease before they register).
	if err := reg.Register(ctx(t), []routing.Route{a}, time.Minute); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, lookup(t, reg, "alice"))
	register(t, reg, time.Minute, a)
	wantRoutes(t, lookup(t, reg, "alice"), a)
	register(t, reg, time.Minute, b)
	wantRoutes(t, lookup(t, reg, "alice"), a, b)
	// Ending g1's lease hides g1's routes only; renewing a lease is one
	// call, not one per route.
	lease(t, reg, "g1", 0)
	wantRoutes(t, lookup(t, reg, "alice"), b)
	lease(t, reg, "g2", time.Minute)
	wantRoutes(t, lookup(t, reg, "alice"), b)
	// A gateway whose lease ended registers again to come back (the
	// registry may have dropped its routes meanwhile).
	register(t, reg, time.Minute, a)
	wantRoutes(t, lookup(t, reg, "alice"), a, b)
}

func testLeaseExpiry(t *testing.T, reg routing.Registry) {
	a := routing.Route{User: "alice", Device: "phone", Gateway: "crashes", Conn: 1}
	b := routing.Route{User: "bob", Device: "phone", Gateway: "lives", Conn: 2}
	register(t, reg, time.Hour, a, b)
	lease(t, reg, "crashes", 300*time.Millisecond)
	// The crashed gateway renews nothing: its routes stop being live on
	// their own, long before their own ttl, and the other gateway's stay.
	eventually(t, "the routes of a gateway whose lease expired disappear", func() bool {
		return len(lookup(t, reg, "alice", "bob")) == 1
	})
	wantRoutes(t, lookup(t, reg, "alice", "bob"), b)
}

// ---- Router ----

func testPublishOrder(t *testing.T, rt routing.Router) {
	var s sink
	subscribe(t, rt, "g1", s.h)
	const n = 500
	for i := range n {
		publish(t, rt, "g1", []byte(strconv.Itoa(i)))
	}
	eventually(t, "all batches delivered", func() bool { return s.len() >= n })
	got := s.snapshot()
	if len(got) != n {
		t.Fatalf("got %d batches, want %d", len(got), n)
	}
	for i, b := range got {
		if string(b) != strconv.Itoa(i) {
			t.Fatalf("batch %d is %q: out of order", i, b)
		}
	}
}

func testBinary(t *testing.T, rt routing.Router) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := make([]byte, 256<<10)
	for i := range big {
		big[i] = byte(rand.Uint32())
	}
	batches := [][]byte{
		{0},
		all,
		[]byte("*1\r\n$4\r\nPING\r\n"), // looks like RESP
		{},
		big,
		{0xff, 0, 0xff},
	}
	var s sink
	subscribe(t, rt, "bin", s.h)
	// Publish from one reused buffer, overwritten after each Publish: the
	// router must not hold on to it.
	var buf []byte
	for _, b := range batches {
		buf = append(buf[:0], b...)
		publish(t, rt, "bin", buf)
		for i := range buf {
			buf[i] = 'X'
		}
	}
	eventually(t, "binary batches delivered", func() bool { return s.len() >= len(batches) })
	for i, got := range s.snapshot() {
		if !bytes.Equal(got, batches[i]) {
			t.Fatalf("batch %d: got %d bytes, want %d, differ", i, len(got), len(batches[i]))
		}
	}
}

func testSeparate(t *testing.T, rt routing.Router) {
	var s1, s2 sink
	subscribe(t, rt, "g1", s1.h)
	subscribe(t, rt, "g2", s2.h)
	publish(t, rt, "g1", []byte("for g1"))
	publish(t, rt, "g2", []byte("for g2"))
	publish(t, rt, "g2", []byte("for g2 again"))
	eventually(t, "both delivered", func() bool { return s1.len() >= 1 && s2.len() >= 2 })
	if g := s1.snapshot(); len(g) != 1 || string(g[0]) != "for g1" {
		t.Fatalf("g1 got %q", g)
	}
	if g := s2.snapshot(); len(g) != 2 || string(g[0]) != "for g2" || string(g[1]) != "for g2 again" {
		t.Fatalf("g2 got %q", g)
	}
}

// testAllGateways: every subscriber of AllGateways gets what is published
// to it, in order; one that stopped gets nothing more; a gateway's own
// channel does not receive it.
func testAllGateways(t *testing.T, rt routing.Router) {
	var a, b, own sink
	subscribe(t, rt, routing.AllGateways, a.h)
	stopB := subscribe(t, rt, routing.AllGateways, b.h)
	subscribe(t, rt, "g1", own.h)
	publish(t, rt, routing.AllGateways, []byte("one"))
	publish(t, rt, routing.AllGateways, []byte("two"))
	eventually(t, "both subscribers got both", func() bool { return a.len() >= 2 && b.len() >= 2 })
	for _, s := range []*sink{&a, &b} {
		if g := s.snapshot(); len(g) != 2 || string(g[0]) != "one" || string(g[1]) != "two" {
			t.Fatalf("subscriber got %q", g)
		}
	}
	stopB()
	publish(t, rt, routing.AllGateways, []byte("three"))
	eventually(t, "the remaining subscriber got it", func() bool { return a.len() >= 3 })
	publish(t, rt, "g1", []byte("marker"))
	eventually(t, "the gateway's own batch", func() bool { return own.len() >= 1 })
	if g := own.snapshot(); len(g) != 1 || string(g[0]) != "marker" {
		t.Fatalf("a gateway's own channel got %q", g)
	}
	if n := b.len(); n != 2 {
		t.Fatalf("stopped subscriber got %d batches", n)
	}
}

func testNoSubscriber(t *testing.T, rt routing.Router) {
	publish(t, rt, "nobody-listens", []byte("lost"))
	publish(t, rt, "nobody-listens", nil)
}

func testUnsubscribe(t *testing.T, rt routing.Router) {
	var s1 sink
	stop := subscribe(t, rt, "g1", s1.h)
	publish(t, rt, "g1", []byte("one"))
	eventually(t, "first batch delivered", func() bool { return s1.len() == 1 })
	stop()
	stop() // twice is fine
	publish(t, rt, "g1", []byte("after stop"))

	// A new subscription to the same gateway receives what follows, and
	// the stopped one still nothing.
	var s2 sink
	subscribe(t, rt, "g1", s2.h)
	publish(t, rt, "g1", []byte("two"))
	eventually(t, "new subscription delivered", func() bool { return s2.len() >= 1 })
	if g := s2.snapshot(); len(g) != 1 || string(g[0]) != "two" {
		t.Fatalf("new subscription got %q", g)
	}
	time.Sleep(50 * time.Millisecond)
	if g := s1.snapshot(); len(g) != 1 {
		t.Fatalf("stopped subscription got %q", g)
	}
}

func testConcurrentPublishers(t *testing.T, rt routing.Router) {
	// Each publisher's batches arrive in its own order.
	const pubs, per = 4, 200
	var s sink
	subscribe(t, rt, "g1", s.h)
	var wg sync.WaitGroup
	for p := range pubs {
		wg.Go(func() {
			for i := range per {
				if err := rt.Publish(context.Background(), "g1", []byte(fmt.Sprintf("%d:%d", p, i))); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	eventually(t, "all delivered", func() bool { return s.len() >= pubs*per })
	next := make([]int, pubs)
	for _, b := range s.snapshot() {
		var p, i int
		if _, err := fmt.Sscanf(string(b), "%d:%d", &p, &i); err != nil {
			t.Fatalf("batch %q: %v", b, err)
		}
		if i != next[p] {
			t.Fatalf("publisher %d: got %d, want %d", p, i, next[p])
		}
		next[p]++
	}
}

// ---- both ----

// testConcurrent runs Register, Lookup, Unregister and Publish from several
// goroutines at once (for the race detector), then checks the end state.
func testConcurrent(t *testing.T, reg routing.Registry, rt routing.Router) {
	var received atomic.Int64
	subscribe(t, rt, "gc", func([]byte) { received.Add(1) })
	lease(t, reg, "gc", time.Minute)
	const workers, rounds = 4, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			c := context.Background()
			var dst []routing.Route
			for i := range rounds {
				u := fmt.Sprintf("w%d-u%d", w, i%10)
				r := routing.Route{User: u, Device: "d", Gateway: "gc", Conn: uint64(w*rounds + i)}
				if err := reg.Register(c, []routing.Route{r}, time.Minute); err != nil {
					t.Errorf("Register: %v", err)
					return
				}
				var err error
				if dst, err = reg.Lookup(c, []string{u, "w0-u0", "w1-u1"}, dst[:0]); err != nil {
					t.Errorf("Lookup: %v", err)
					return
				}
				if err := rt.Publish(c, "gc", []byte(u)); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				if i%3 == 0 {
					if err := reg.Unregister(c, []routing.Route{r}); err != nil {
						t.Errorf("Unregister: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	eventually(t, "all concurrent publishes delivered", func() bool { return received.Load() == workers*rounds })
	// Each user's device ends on the last route registered for it unless
	// that one was unregistered.
	for w := range workers {
		for k := range 10 {
			last := rounds - 10 + k
			u := fmt.Sprintf("w%d-u%d", w, k)
			got := lookup(t, reg, u)
			if last%3 == 0 {
				wantRoutes(t, got)
			} else {
				wantRoutes(t, got, routing.Route{User: u, Device: "d", Gateway: "gc", Conn: uint64(w*rounds + last)})
			}
		}
	}
}

// ---- Topics ----

func joinTopics(t *testing.T, ts routing.TopicSubscription, topics ...string) {
	t.Helper()
	if err := ts.Join(ctx(t), topics); err != nil {
		t.Fatalf("Join(%q): %v", topics, err)
	}
}

// testTopics: a topic's batches reach the subscriptions holding it and no
// other, in order; Leave and Close stop delivery; a topic nobody holds and
// a gateway's channel are separate from it.
func testTopics(t *testing.T, rt routing.Router) {
	tr, ok := rt.(routing.Topics)
	if !ok {
		t.Fatalf("%T is not a routing.Topics", rt)
	}
	var a, b, own sink
	sa, err := tr.SubscribeTopics(a.h)
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	sb, err := tr.SubscribeTopics(b.h)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	subscribe(t, rt, "p:alice", own.h) // a gateway named like the topic: not the topic
	joinTopics(t, sa, "p:alice")
	joinTopics(t, sb, "p:alice", "p:bob")
	joinTopics(t, sb, "p:bob") // held already: a no-op

	publish(t, rt, routing.TopicChannel("p:alice"), []byte("a1"))
	publish(t, rt, routing.TopicChannel("p:bob"), []byte("b1"))
	publish(t, rt, routing.TopicChannel("p:carol"), []byte("nobody")) // no subscriber: no error
	publish(t, rt, routing.TopicChannel("p:alice"), []byte("a2"))
	eventually(t, "both got alice's, b got bob's", func() bool { return a.len() >= 2 && b.len() >= 3 })
	if g := a.snapshot(); len(g) != 2 || string(g[0]) != "a1" || string(g[1]) != "a2" {
		t.Fatalf("a got %q", g)
	}
	if g := b.snapshot(); len(g) != 3 || string(g[0]) != "a1" || string(g[1]) != "b1" || string(g[2]) != "a2" {
		t.Fatalf("b got %q", g)
	}

	// Leaving stops a's delivery of alice only; b still gets both.
	if err := sa.Leave(ctx(t), []string{"p:alice", "p:never-joined"}); err != nil {
		t.Fatal(err)
	}
	publish(t, rt, routing.TopicChannel("p:alice"), []byte("a3"))
	publish(t, rt, routing.TopicChannel("p:bob"), []byte("b2"))
	eventually(t, "b got the later two", func() bool { return b.len() >= 5 })
	sb.Close()
	sb.Close() // twice is fine
	publish(t, rt, routing.TopicChannel("p:bob"), []byte("after close"))
	// A marker on a topic a holds again orders the check below.
	joinTopics(t, sa, "p:marker")
	publish(t, rt, routing.TopicChannel("p:marker"), []byte("m"))
	eventually(t, "a got the marker", func() bool { return a.len() >= 3 })
	if g := a.snapshot(); len(g) != 3 || string(g[2]) != "m" {
		t.Fatalf("a got %q after leaving alice", g)
	}
	if n := b.len(); n != 5 {
		t.Fatalf("closed subscription got %d batches, want 5", n)
	}
	if n := own.len(); n != 0 {
		t.Fatalf("the gateway channel named p:alice got %d topic batches", n)
	}
	if err := sb.Join(ctx(t), []string{"p:x"}); err == nil {
		t.Fatal("Join after Close succeeded")
	}
}

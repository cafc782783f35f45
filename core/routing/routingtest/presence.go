package routingtest

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/core/routing"
)

// RegistryPresence is a Registry that also answers Presence from what the
// registry was told (routing.Memory, routing.Redis).
type RegistryPresence interface {
	routing.Registry
	routing.Presence
}

// RunPresence runs the Presence contract. newRegistry returns a fresh, empty
// registry for one subtest.
func RunPresence(t *testing.T, newRegistry func(t *testing.T) RegistryPresence) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, RegistryPresence)
	}{
		{"NeverSeen", testPresenceNeverSeen},
		{"OnlineThenOffline", testPresenceOnlineOffline},
		{"MultiDevice", testPresenceMultiDevice},
		{"StaleUnregister", testPresenceStaleUnregister},
		{"LeaseEnded", testPresenceLeaseEnded},
		{"GatewayCrash", testPresenceGatewayCrash},
		{"ManyUsers", testPresenceMany},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newRegistry(t)) })
	}
}

func presenceOf(t *testing.T, p routing.Presence, users ...string) []routing.Status {
	t.Helper()
	got, err := p.Presence(context.Background(), users, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(users) {
		t.Fatalf("Presence(%v) returned %d statuses", users, len(got))
	}
	for i := range got {
		if got[i].User != users[i] {
			t.Fatalf("Presence: status %d is of %q, want %q", i, got[i].User, users[i])
		}
	}
	return got
}

// msBetween checks lo <= ms <= hi for times taken around the call that set
// ms (Unix ms); it is about which event a time came from, not speed.
func msBetween(t *testing.T, what string, ms int64, lo, hi time.Time) {
	t.Helper()
	if ms < lo.UnixMilli() || ms > hi.UnixMilli() {
		t.Fatalf("%s: last seen %d not within [%d, %d]", what, ms, lo.UnixMilli(), hi.UnixMilli())
	}
}

func testPresenceNeverSeen(t *testing.T, r RegistryPresence) {
	st := presenceOf(t, r, "nobody")[0]
	if st.Online || st.LastSeenMS != 0 {
		t.Fatalf("never seen: %+v", st)
	}
}

func testPresenceOnlineOffline(t *testing.T, r RegistryPresence) {
	ctx := context.Background()
	rt := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1}
	lease(t, r, "g1", time.Minute)
	before := time.Now()
	if err := r.Register(ctx, []routing.Route{rt}, time.Minute); err != nil {
		t.Fatal(err)
	}
	st := presenceOf(t, r, "alice")[0]
	if !st.Online {
		t.Fatalf("registered: %+v, want online", st)
	}
	msBetween(t, "online", st.LastSeenMS, before, time.Now())

	before = time.Now()
	if err := r.Unregister(ctx, []routing.Route{rt}); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	st = presenceOf(t, r, "alice")[0]
	if st.Online {
		t.Fatalf("unregistered: %+v, want offline", st)
	}
	msBetween(t, "after unregister", st.LastSeenMS, before, after)
	// Reading it again changes nothing.
	if again := presenceOf(t, r, "alice")[0]; again != st {
		t.Fatalf("second read %+v, first %+v", again, st)
	}
}

func testPresenceMultiDevice(t *testing.T, r RegistryPresence) {
	ctx := context.Background()
	phone := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1}
	laptop := routing.Route{User: "alice", Device: "laptop", Gateway: "g2", Conn: 7}
	lease(t, r, "g1", time.Minute)
	lease(t, r, "g2", time.Minute)
	if err := r.Register(ctx, []routing.Route{phone, laptop}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.Unregister(ctx, []routing.Route{phone}); err != nil {
		t.Fatal(err)
	}
	if st := presenceOf(t, r, "alice")[0]; !st.Online {
		t.Fatalf("laptop still connected: %+v, want online", st)
	}
	if err := r.Unregister(ctx, []routing.Route{laptop}); err != nil {
		t.Fatal(err)
	}
	if st := presenceOf(t, r, "alice")[0]; st.Online || st.LastSeenMS == 0 {
		t.Fatalf("both gone: %+v, want offline with a last seen", st)
	}
}

// A disconnection reported after the same device reconnected elsewhere (two
// gateways racing) does not take the user offline.
func testPresenceStaleUnregister(t *testing.T, r RegistryPresence) {
	ctx := context.Background()
	old := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1}
	cur := routing.Route{User: "alice", Device: "phone", Gateway: "g2", Conn: 2}
	lease(t, r, "g1", time.Minute)
	lease(t, r, "g2", time.Minute)
	if err := r.Register(ctx, []routing.Route{old}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ctx, []routing.Route{cur}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.Unregister(ctx, []routing.Route{old}); err != nil {
		t.Fatal(err)
	}
	if st := presenceOf(t, r, "alice")[0]; !st.Online {
		t.Fatalf("after a stale unregister: %+v, want online", st)
	}
}

// A gateway that ends its lease (shutting down without unregistering every
// route) takes its users offline, last seen when the lease ended.
func testPresenceLeaseEnded(t *testing.T, r RegistryPresence) {
	ctx := context.Background()
	rt := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1}
	lease(t, r, "g1", time.Minute)
	if err := r.Register(ctx, []routing.Route{rt}, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Let the lease end in a later millisecond than the Register.
	time.Sleep(5 * time.Millisecond)
	before := time.Now()
	lease(t, r, "g1", 0)
	after := time.Now()
	// The lease may be cached for LeaseCacheTTL by a reader that saw it.
	var st routing.Status
	eventually(t, "offline after the lease ended", func() bool {
		st = presenceOf(t, r, "alice")[0]
		return !st.Online
	})
	msBetween(t, "lease ended", st.LastSeenMS, before, after)
}

// A gateway that crashes (its lease runs out) takes its users offline, last
// seen at its last renewal; that stays so after Lookup reaped its routes.
func testPresenceGatewayCrash(t *testing.T, r RegistryPresence) {
	ctx := context.Background()
	rt := routing.Route{User: "alice", Device: "phone", Gateway: "g1", Conn: 1}
	lease(t, r, "g1", time.Minute)
	if err := r.Register(ctx, []routing.Route{rt}, time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	before := time.Now()
	lease(t, r, "g1", 300*time.Millisecond) // its last renewal
	after := time.Now()
	var st routing.Status
	eventually(t, "offline after the lease ran out", func() bool {
		st = presenceOf(t, r, "alice")[0]
		return !st.Online
	})
	msBetween(t, "crashed gateway", st.LastSeenMS, before, after)
	// Lookups skip and reap the dead routes; the last seen survives.
	for range 5 {
		if got, err := r.Lookup(ctx, []string{"alice"}, nil); err != nil || len(got) != 0 {
			t.Fatalf("Lookup: %v, %v", got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s, ok := r.(interface{ Stats() routing.RedisStats }); ok {
		eventually(t, "the dead route reaped", func() bool {
			_, _ = r.Lookup(ctx, []string{"alice"}, nil)
			return s.Stats().Reaped >= 1
		})
	}
	st = presenceOf(t, r, "alice")[0]
	if st.Online {
		t.Fatalf("after reaping: %+v, want offline", st)
	}
	msBetween(t, "crashed gateway, after reaping", st.LastSeenMS, before, after)
}

func testPresenceMany(t *testing.T, r RegistryPresence) {
	ctx := context.Background()
	lease(t, r, "g1", time.Minute)
	var routes []routing.Route
	var users []string
	for i := range 300 {
		u := "u" + strconv.Itoa(i)
		users = append(users, u)
		if i%3 != 2 {
			routes = append(routes, routing.Route{User: u, Device: "d", Gateway: "g1", Conn: uint64(i + 1)})
		}
	}
	if err := r.Register(ctx, routes, time.Minute); err != nil {
		t.Fatal(err)
	}
	var gone []routing.Route
	for _, rt := range routes {
		if rt.Conn%3 == 2 { // i%3 == 1
			gone = append(gone, rt)
		}
	}
	if err := r.Unregister(ctx, gone); err != nil {
		t.Fatal(err)
	}
	got := presenceOf(t, r, users...)
	for i, st := range got {
		switch i % 3 {
		case 0:
			if !st.Online {
				t.Fatalf("%s: %+v, want online", users[i], st)
			}
		case 1:
			if st.Online || st.LastSeenMS == 0 {
				t.Fatalf("%s: %+v, want offline with a last seen", users[i], st)
			}
		case 2:
			if st.Online || st.LastSeenMS != 0 {
				t.Fatalf("%s: %+v, want never seen", users[i], st)
			}
		}
	}
	// dst is appended to.
	dst := []routing.Status{{User: "x"}}
	dst, err := r.Presence(ctx, users[:2], dst)
	if err != nil || len(dst) != 3 || dst[0].User != "x" || dst[2].User != users[1] {
		t.Fatalf("append to dst: %+v, %v", dst, err)
	}
}

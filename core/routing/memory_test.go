package routing

import (
	"context"
	"slices"
	"testing"
	"time"
)

func TestMemoryRegistry(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	now := time.Unix(1000, 0)
	m.now = func() time.Time { return now }
	a1 := Route{User: "a", Device: "phone", Gateway: "g1", Conn: 1}
	a2 := Route{User: "a", Device: "laptop", Gateway: "g2", Conn: 7}
	b1 := Route{User: "b", Device: "phone", Gateway: "g1", Conn: 2}
	_ = m.Lease(ctx, "g1", time.Hour)
	_ = m.Lease(ctx, "g2", time.Hour)
	if err := m.Register(ctx, []Route{a1, a2, b1}, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, _ := m.Lookup(ctx, []string{"a", "c"}, nil)
	if len(got) != 2 {
		t.Fatalf("lookup a: %v", got)
	}
	// A reconnect of the same device replaces its route; unregistering the
	// old connection then leaves the new one alone.
	a1b := a1
	a1b.Conn = 9
	_ = m.Register(ctx, []Route{a1b}, time.Minute)
	_ = m.Unregister(ctx, []Route{a1})
	got, _ = m.Lookup(ctx, []string{"a"}, got[:0])
	conns := []uint64{got[0].Conn, got[1].Conn}
	slices.Sort(conns)
	if !slices.Equal(conns, []uint64{7, 9}) {
		t.Fatalf("after reconnect: %v", got)
	}
	// Entries expire unless refreshed.
	now = now.Add(2 * time.Minute)
	if got, _ = m.Lookup(ctx, []string{"a", "b"}, got[:0]); len(got) != 0 {
		t.Fatalf("expired routes returned: %v", got)
	}
	_ = m.Register(ctx, []Route{b1}, time.Minute)
	if got, _ = m.Lookup(ctx, []string{"b"}, got[:0]); len(got) != 1 {
		t.Fatalf("refreshed route missing: %v", got)
	}
	// Expired entries are removed from memory by a later Register.
	if _, ok := m.devices["a"]; ok {
		t.Fatalf("expired user a still held: %v", m.devices["a"])
	}
}

func TestMemoryRouter(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	var got [][]byte
	stop, _ := m.Subscribe("g1", func(b []byte) { got = append(got, append([]byte(nil), b...)) })
	_ = m.Publish(ctx, "g1", []byte("one"))
	_ = m.Publish(ctx, "g2", []byte("nobody"))
	_ = m.Publish(ctx, "g1", []byte("two"))
	stop()
	_ = m.Publish(ctx, "g1", []byte("after stop"))
	if len(got) != 2 || string(got[0]) != "one" || string(got[1]) != "two" {
		t.Fatalf("got %q", got)
	}
}

package routing

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Memory is the in-process Registry and Router of the embedded default.
type Memory struct {
	mu      sync.RWMutex
	devices map[string]map[string]memEntry     // user -> device -> entry
	subs    map[string]func([]byte)            // gateway -> handler
	all     map[*byte]func([]byte)             // AllGateways subscribers, by a unique key
	topics  map[string]map[*memTopics]struct{} // topic -> subscriptions holding it (topics.go)
	leases  map[string]time.Time               // gateway -> lease expiry
	now     func() time.Time
	swept   time.Time // last sweep of expired entries

	receipts memReceipts // ReceiptCounter state, with its own lock (receipts_memory.go)
	members  memMembers  // MemberCache state, with its own lock (members.go)

	// Presence: last-seen times (Unix ms) of users and of gateways' last
	// lease renewals, kept for retention.
	seen        map[string]int64
	gatewaySeen map[string]int64
	retention   time.Duration
}

// sweepEvery bounds how long expired entries (a crashed gateway's) stay in
// memory: Register removes them at most this often.
const sweepEvery = time.Minute

type memEntry struct {
	route   Route
	expires time.Time
}

var (
	_ Registry = (*Memory)(nil)
	_ Router   = (*Memory)(nil)
)

// NewMemory returns an empty in-process registry and router.
func NewMemory() *Memory {
	return &Memory{
		devices: make(map[string]map[string]memEntry),
		subs:    make(map[string]func([]byte)),
		leases:  make(map[string]time.Time),
		now:     time.Now,
		members: memMembers{convs: make(map[uint64][]string)},

		seen:        make(map[string]int64),
		gatewaySeen: make(map[string]int64),
		retention:   DefaultPresenceRetention,
	}
}

// Lease implements Registry.
func (m *Memory) Lease(_ context.Context, gateway string, ttl time.Duration) error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gatewaySeen[gateway] = now.UnixMilli()
	if ttl <= 0 {
		delete(m.leases, gateway)
		return nil
	}
	m.leases[gateway] = now.Add(ttl)
	return nil
}

// Register implements Registry.
func (m *Memory) Register(_ context.Context, routes []Route, ttl time.Duration) error {
	now := m.now()
	exp := now.Add(ttl)
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.Sub(m.swept) > sweepEvery {
		m.swept = now
		m.sweepSeenLocked(now)
		for u, devs := range m.devices {
			for d, e := range devs {
				if !now.Before(e.expires) || !now.Before(m.leases[e.route.Gateway]) {
					if now.Before(e.expires) {
						// A crashed gateway's route: its users were
						// online until the gateway's last renewal.
						m.seenLocked(u, m.gatewaySeen[e.route.Gateway])
					}
					delete(devs, d)
				}
			}
			if len(devs) == 0 {
				delete(m.devices, u)
			}
		}
		for gw, exp := range m.leases {
			if !now.Before(exp) {
				delete(m.leases, gw)
			}
		}
	}
	for _, r := range routes {
		devs := m.devices[r.User]
		if devs == nil {
			devs = make(map[string]memEntry, 1)
			m.devices[r.User] = devs
		}
		devs[r.Device] = memEntry{route: r, expires: exp}
		m.seenLocked(r.User, now.UnixMilli())
	}
	return nil
}

// Unregister implements Registry.
func (m *Memory) Unregister(_ context.Context, routes []Route) error {
	nowMS := m.now().UnixMilli()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range routes {
		// The device was online until now, whether or not this route was
		// still its current one.
		m.seenLocked(r.User, nowMS)
		devs := m.devices[r.User]
		if e, ok := devs[r.Device]; ok && e.route.Gateway == r.Gateway && e.route.Conn == r.Conn {
			delete(devs, r.Device)
			if len(devs) == 0 {
				delete(m.devices, r.User)
			}
		}
	}
	return nil
}

// Lookup implements Registry. Expired entries and those of gateways without
// a lease are skipped (and left for the next sweep, Register or Unregister
// to remove).
func (m *Memory) Lookup(_ context.Context, users []string, dst []Route) ([]Route, error) {
	now := m.now()
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, u := range users {
		for _, e := range m.devices[u] {
			if now.Before(e.expires) && now.Before(m.leases[e.route.Gateway]) {
				dst = append(dst, e.route)
			}
		}
	}
	return dst, nil
}

// Publish implements Router: the subscriber's handler runs synchronously in
// the caller's goroutine, which keeps publish order per publisher.
func (m *Memory) Publish(_ context.Context, gateway string, batch []byte) error {
	if IsTopicChannel(gateway) {
		m.publishTopic(gateway[len(topicPrefix):], batch)
		return nil
	}
	m.mu.RLock()
	if gateway == AllGateways {
		hs := make([]func([]byte), 0, len(m.all))
		for _, h := range m.all {
			hs = append(hs, h)
		}
		m.mu.RUnlock()
		for _, h := range hs {
			h(batch)
		}
		return nil
	}
	h := m.subs[gateway]
	m.mu.RUnlock()
	if h != nil {
		h(batch)
	}
	return nil
}

// Subscribe implements Router. A second Subscribe for the same gateway
// replaces the first; AllGateways has any number of subscribers.
func (m *Memory) Subscribe(gateway string, h func([]byte)) (func(), error) {
	m.mu.Lock()
	if gateway == AllGateways {
		key := new(byte)
		if m.all == nil {
			m.all = map[*byte]func([]byte){}
		}
		m.all[key] = h
		m.mu.Unlock()
		return func() {
			m.mu.Lock()
			delete(m.all, key)
			m.mu.Unlock()
		}, nil
	}
	m.subs[gateway] = h
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		delete(m.subs, gateway)
		m.mu.Unlock()
	}, nil
}

// memTopics is a TopicSubscription of the in-process router.
type memTopics struct {
	m      *Memory
	h      func([]byte)
	mu     sync.Mutex // serializes h, so that h runs as if on one goroutine
	closed bool       // under m.mu
	held   map[string]struct{}
}

var _ Topics = (*Memory)(nil)

// SubscribeTopics implements Topics.
func (m *Memory) SubscribeTopics(h func([]byte)) (TopicSubscription, error) {
	return &memTopics{m: m, h: h, held: map[string]struct{}{}}, nil
}

func (m *Memory) publishTopic(topic string, batch []byte) {
	m.mu.RLock()
	subs := make([]*memTopics, 0, len(m.topics[topic]))
	for s := range m.topics[topic] {
		subs = append(subs, s)
	}
	m.mu.RUnlock()
	for _, s := range subs {
		s.mu.Lock()
		m.mu.RLock()
		live := !s.closed
		m.mu.RUnlock()
		if live {
			s.h(batch)
		}
		s.mu.Unlock()
	}
}

// Join implements TopicSubscription.
func (s *memTopics) Join(_ context.Context, topics []string) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.closed {
		return errors.New("routing: join: subscription closed")
	}
	if s.m.topics == nil {
		s.m.topics = map[string]map[*memTopics]struct{}{}
	}
	for _, t := range topics {
		set := s.m.topics[t]
		if set == nil {
			set = map[*memTopics]struct{}{}
			s.m.topics[t] = set
		}
		set[s] = struct{}{}
		s.held[t] = struct{}{}
	}
	return nil
}

// Leave implements TopicSubscription.
func (s *memTopics) Leave(_ context.Context, topics []string) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	for _, t := range topics {
		s.leaveLocked(t)
	}
	return nil
}

func (s *memTopics) leaveLocked(t string) {
	delete(s.held, t)
	if set := s.m.topics[t]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(s.m.topics, t)
		}
	}
}

// Close implements TopicSubscription.
func (s *memTopics) Close() {
	s.m.mu.Lock()
	s.closed = true
	for t := range s.held {
		s.leaveLocked(t)
	}
	s.m.mu.Unlock()
	s.mu.Lock() // a delivery under way finishes before Close returns
	s.mu.Unlock()
}

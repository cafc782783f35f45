package routing

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/rueidis"
)

// Redis as Topics: one dedicated connection per subscription, with
// rueidis' pub/sub hooks, so that topics are joined and left with SUBSCRIBE
// and UNSUBSCRIBE on the live connection (one goroutine, whatever the
// number of topics). A topic is the channel r.channel(TopicChannel(t)); a
// PUBLISH to a channel nobody holds costs Redis a hash lookup and nothing
// else.
//
//	SubscribeTopics ─> connect: Dedicate, hooks, SUBSCRIBE held ─> deliver ...
//	                      ^                                           │ connection lost
//	                      └──── backoff (50ms doubling to 1s) <───────┘
//
// After a lost connection every held topic is subscribed again; what was
// published meanwhile is lost (at-most-once, like the gateway channels).

var _ Topics = (*Redis)(nil)

// subscribeChunk bounds the channels of one SUBSCRIBE.
const subscribeChunk = 1000

type redisTopics struct {
	r *Redis
	h func([]byte)

	mu      sync.Mutex          // serializes Join, Leave and reconnecting; guards below
	held    map[string]struct{} // Redis channel names
	dc      rueidis.DedicatedClient
	release func()
	broken  <-chan error // closed or fed when dc's hooks stop

	ctx    context.Context
	cancel context.CancelFunc
	closed atomic.Bool
	done   chan struct{}
	once   sync.Once
}

// SubscribeTopics implements Topics.
func (r *Redis) SubscribeTopics(h func([]byte)) (TopicSubscription, error) {
	ctx, cancel := context.WithCancel(context.Background())
	t := &redisTopics{r: r, h: h, held: map[string]struct{}{}, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("routing: subscribe topics: %w", rueidis.ErrClosing)
	}
	if r.tsubs == nil {
		r.tsubs = map[*redisTopics]struct{}{}
	}
	r.tsubs[t] = struct{}{}
	r.wg.Add(1)
	r.mu.Unlock()
	t.mu.Lock()
	t.connectLocked()
	t.mu.Unlock()
	go t.watch()
	return t, nil
}

// connectLocked takes a dedicated connection, installs the hooks and
// subscribes every held channel. t.mu is held.
func (t *redisTopics) connectLocked() error {
	t.dc, t.release = t.r.c.Dedicate()
	t.broken = t.dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: t.deliver})
	held := make([]string, 0, len(t.held))
	for ch := range t.held {
		held = append(held, ch)
	}
	return t.subscribeLocked(t.ctx, held)
}

func (t *redisTopics) subscribeLocked(ctx context.Context, channels []string) error {
	for len(channels) > 0 {
		n := min(len(channels), subscribeChunk)
		t.r.count(1)
		if err := t.dc.Do(ctx, t.dc.B().Subscribe().Channel(channels[:n]...).Build()).Error(); err != nil {
			return err
		}
		channels = channels[n:]
	}
	return nil
}

// watch reconnects after a lost connection until Close.
func (t *redisTopics) watch() {
	defer t.r.wg.Done()
	defer close(t.done)
	for {
		t.mu.Lock()
		broken := t.broken
		t.mu.Unlock()
		select {
		case <-t.ctx.Done():
			return
		case <-broken:
		}
		for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
			if !sleepCtx(t.ctx, backoff) {
				return
			}
			t.mu.Lock()
			t.release() // the broken connection goes back to be discarded
			err := t.connectLocked()
			t.mu.Unlock()
			if err == nil {
				t.r.stats.resubscribes.Add(1)
				break
			}
		}
	}
}

func (t *redisTopics) deliver(m rueidis.PubSubMessage) {
	if t.closed.Load() {
		return
	}
	t.r.stats.received.Add(1)
	t.h(unsafe.Slice(unsafe.StringData(m.Message), len(m.Message)))
}

// Join implements TopicSubscription: SUBSCRIBE of the topics not held yet.
func (t *redisTopics) Join(ctx context.Context, topics []string) error {
	if t.closed.Load() {
		return fmt.Errorf("routing: join: %w", rueidis.ErrClosing)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var add []string
	for _, topic := range topics {
		ch := t.r.channel(TopicChannel(topic))
		if _, ok := t.held[ch]; !ok {
			t.held[ch] = struct{}{} // a reconnect subscribes it even if this fails
			add = append(add, ch)
		}
	}
	if err := t.subscribeLocked(ctx, add); err != nil {
		return fmt.Errorf("routing: join %d topics: %w", len(add), err)
	}
	return nil
}

// Leave implements TopicSubscription: UNSUBSCRIBE of the topics held.
func (t *redisTopics) Leave(ctx context.Context, topics []string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var drop []string
	for _, topic := range topics {
		ch := t.r.channel(TopicChannel(topic))
		if _, ok := t.held[ch]; ok {
			delete(t.held, ch) // not subscribed again after a reconnect
			drop = append(drop, ch)
		}
	}
	for len(drop) > 0 && !t.closed.Load() {
		n := min(len(drop), subscribeChunk)
		t.r.count(1)
		if err := t.dc.Do(ctx, t.dc.B().Unsubscribe().Channel(drop[:n]...).Build()).Error(); err != nil {
			// A lost connection holds nothing; the reconnect skips these.
			return fmt.Errorf("routing: leave %d topics: %w", len(drop), err)
		}
		drop = drop[n:]
	}
	return nil
}

// Close implements TopicSubscription.
func (t *redisTopics) Close() {
	t.once.Do(func() {
		t.closed.Store(true)
		t.cancel()
		<-t.done
		t.mu.Lock()
		t.dc.Close() // a connection with subscriptions is not reused
		t.release()
		t.mu.Unlock()
		t.r.mu.Lock()
		delete(t.r.tsubs, t)
		t.r.mu.Unlock()
	})
}

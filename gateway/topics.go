package gateway

import (
	"sync"
	"time"

	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/wire"
)

// Presence topics (docs/gateway.md, "Presence").
//
// A gateway holds the presence topic of a user while at least one of its
// connections watches that user (the watches index), so a presence change
// published to the topic reaches only gateways that have someone to tell.
// The index reports a user whose first watcher came or whose last went
// (connIndex.keyChanged); one goroutine (runTopics) then joins or leaves the
// user's topic, batching whatever changed meanwhile into one Join and one
// Leave, and reading the index again at that moment, so the order in which
// watchers came and went does not matter.
//
// Between a watch starting and its Join completing (one Redis round trip),
// a change of that user is not delivered: the watcher got the user's state
// with the FOCUS answer just before, and the next change after the Join
// arrives. A Join that fails is retried every topicRetry.

// presenceTopic is a user's presence topic.
func presenceTopic(user string) string { return "p:" + user }

// topicRetry is how soon runTopics tries a failed Join or Leave again.
const topicRetry = time.Second

// topicJoiner is the state runTopics works from.
type topicJoiner struct {
	ts     routing.TopicSubscription
	mu     sync.Mutex          // leaf: taken under the watches index lock
	dirty  map[string]struct{} // users whose topic may need joining or leaving
	wake   chan struct{}       // 1-buffered: dirty has entries
	joined map[string]struct{} // owned by runTopics
}

func newTopicJoiner(ts routing.TopicSubscription) *topicJoiner {
	return &topicJoiner{ts: ts, dirty: map[string]struct{}{}, wake: make(chan struct{}, 1), joined: map[string]struct{}{}}
}

// mark records that user's watchers went from none to some or back. It is
// the watches index's keyChanged hook: it runs under the index's lock and
// only queues.
func (t *topicJoiner) mark(user string) {
	t.mu.Lock()
	t.dirty[user] = struct{}{}
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// runTopics joins and leaves presence topics as the watches index asks,
// until the gateway stops.
func (g *Gateway) runTopics() {
	defer g.wg.Done()
	t := g.topics
	var retry <-chan time.Time
	for {
		select {
		case <-g.stop:
			return
		case <-t.wake:
		case <-retry:
			retry = nil
		}
		t.mu.Lock()
		users := make([]string, 0, len(t.dirty))
		for u := range t.dirty {
			users = append(users, u)
		}
		clear(t.dirty)
		t.mu.Unlock()
		var join, leave []string
		for _, u := range users {
			_, held := t.joined[u]
			switch want := g.watches.hasKey(u); {
			case want && !held:
				join = append(join, u)
			case !want && held:
				leave = append(leave, u)
			}
		}
		if failed := g.applyTopics(join, leave); len(failed) > 0 {
			for _, u := range failed {
				t.mark(u)
			}
			retry = time.After(topicRetry)
			// Drain the wake-up the retries queued: they wait for the timer.
			select {
			case <-t.wake:
			default:
			}
		}
	}
}

// applyTopics joins and leaves the presence topics of users and returns
// the users whose change failed.
func (g *Gateway) applyTopics(join, leave []string) (failed []string) {
	t := g.topics
	if g.closing.Load() {
		return nil // Close is ending the subscription
	}
	ctx, cancel := g.registryCtx()
	defer cancel()
	if len(join) > 0 {
		topics := make([]string, len(join))
		for i, u := range join {
			topics[i] = presenceTopic(u)
		}
		if err := t.ts.Join(ctx, topics); err != nil {
			g.log.Warn("gateway: join presence topics", "users", len(join), "err", err)
			failed = append(failed, join...)
		} else {
			for _, u := range join {
				t.joined[u] = struct{}{}
			}
			g.m.presenceTopics.Add(float64(len(join)))
		}
	}
	if len(leave) > 0 {
		topics := make([]string, len(leave))
		for i, u := range leave {
			topics[i] = presenceTopic(u)
			delete(t.joined, u) // a failed Leave still drops the topic from the resubscription set
		}
		if err := t.ts.Leave(ctx, topics); err != nil {
			g.log.Warn("gateway: leave presence topics", "users", len(leave), "err", err)
		}
		g.m.presenceTopics.Sub(float64(len(leave)))
	}
	return failed
}

// onTopic handles a batch published to a presence topic this gateway holds.
func (g *Gateway) onTopic(batch []byte) {
	_, frame, err := wire.DecodeBatch(batch, nil)
	if err != nil || len(frame) < wire.HeaderLen || wire.Type(frame[0]) != wire.TypePresence {
		g.m.badBatches.Inc()
		return
	}
	g.onPresence(frame)
}

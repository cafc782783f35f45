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
// A watch starts from the FOCUS answer, read by the core before this
// gateway held the user's topic (or, when it held it already, before the
// watch was indexed): a change in between reaches no one. So each new
// watch is confirmed: once the topic is held, runTopics reads the user's
// presence again (one Presence call per round for every user to confirm)
// and sends watchers whose online state differs. A change that arrives
// over the topic while that read is in flight is newer than the read, so
// the read's answer for that user is dropped (changed and gen); deliverMu
// orders the two, so a watcher never gets an older state after a newer
// one. Only the online state is compared: an online user's last seen is
// "now" on every read. A Join or a read that fails is retried every
// topicRetry.

// presenceTopic is a user's presence topic.
func presenceTopic(user string) string { return "p:" + user }

// topicRetry is how soon runTopics tries a failed Join or Leave again.
const topicRetry = time.Second

// topicJoiner is the state runTopics works from.
type topicJoiner struct {
	ts      routing.TopicSubscription
	mu      sync.Mutex          // leaf: taken under the watches index lock
	dirty   map[string]struct{} // users whose topic may need joining or leaving
	confirm map[string]struct{} // users with a new watch to confirm
	wake    chan struct{}       // 1-buffered: dirty or confirm has entries
	joined  map[string]struct{} // owned by runTopics

	// deliverMu is held while presence is sent to watchers, from the topic
	// (onPresence) or from a confirmation; gen counts the changes received
	// per held topic, under deliverMu.
	deliverMu sync.Mutex
	gen       map[string]uint64
}

func newTopicJoiner(ts routing.TopicSubscription) *topicJoiner {
	return &topicJoiner{ts: ts, dirty: map[string]struct{}{}, confirm: map[string]struct{}{},
		wake: make(chan struct{}, 1), joined: map[string]struct{}{}, gen: map[string]uint64{}}
}

// confirmLater queues user's new watch for a confirming presence read.
func (t *topicJoiner) confirmLater(user string) { t.queue(t.confirm, user) }

// changed records a change of user received over its topic. The caller
// holds deliverMu.
func (t *topicJoiner) changed(user string) { t.gen[user]++ }

// mark records that user's watchers went from none to some or back. It is
// the watches index's keyChanged hook: it runs under the index's lock and
// only queues.
func (t *topicJoiner) mark(user string) { t.queue(t.dirty, user) }

// queue adds user to set (dirty or confirm) and wakes runTopics.
func (t *topicJoiner) queue(set map[string]struct{}, user string) {
	t.mu.Lock()
	set[user] = struct{}{}
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
		var join, leave, unwatched []string
		for _, u := range users {
			_, held := t.joined[u]
			want := g.watches.hasKey(u)
			switch {
			case want && !held:
				join = append(join, u)
			case !want && held:
				leave = append(leave, u)
			}
			if !want {
				unwatched = append(unwatched, u)
			}
		}
		// A user nobody watches needs no confirmation, unless a watch came
		// back since hasKey: that watch marked the user dirty again (under
		// the index lock, before queueing its confirmation).
		t.mu.Lock()
		for _, u := range unwatched {
			if _, again := t.dirty[u]; !again {
				delete(t.confirm, u)
			}
		}
		t.mu.Unlock()
		failed := g.applyTopics(join, leave)
		for _, u := range failed {
			t.mark(u)
		}
		if !g.confirmWatches() || len(failed) > 0 {
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
		t.deliverMu.Lock()
		for i, u := range leave {
			topics[i] = presenceTopic(u)
			delete(t.joined, u) // a failed Leave still drops the topic from the resubscription set
			delete(t.gen, u)
		}
		t.deliverMu.Unlock()
		if err := t.ts.Leave(ctx, topics); err != nil {
			g.log.Warn("gateway: leave presence topics", "users", len(leave), "err", err)
		}
		g.m.presenceTopics.Sub(float64(len(leave)))
	}
	return failed
}

// confirmWatches reads the presence of the users whose new watches wait for
// confirmation and whose topic is held now, and sends each watcher whose
// online state differs the current one (see the comment at the top). It
// reports false when the read failed; those users stay queued.
func (g *Gateway) confirmWatches() bool {
	t := g.topics
	t.mu.Lock()
	var users []string
	for u := range t.confirm {
		if _, held := t.joined[u]; held {
			users = append(users, u)
			delete(t.confirm, u)
		}
	}
	t.mu.Unlock()
	// A user whose Join failed stays queued until it is held; runTopics
	// drops one nobody watches any more.
	if len(users) == 0 || g.deps.Presence == nil || g.closing.Load() {
		return true
	}
	t.deliverMu.Lock()
	gens := make(map[string]uint64, len(users))
	for _, u := range users {
		gens[u] = t.gen[u]
	}
	t.deliverMu.Unlock()
	ctx, cancel := g.registryCtx()
	st, err := g.deps.Presence.Presence(ctx, users, nil)
	cancel()
	if err != nil {
		g.log.Warn("gateway: confirm presence watches", "users", len(users), "err", err)
		t.mu.Lock()
		for _, u := range users {
			t.confirm[u] = struct{}{}
		}
		t.mu.Unlock()
		return false
	}
	t.deliverMu.Lock()
	defer t.deliverMu.Unlock()
	for _, s := range st {
		if t.gen[s.User] != gens[s.User] {
			g.m.presenceConfirmed.WithLabelValues("overtaken").Inc()
			continue // the topic brought a newer change meanwhile
		}
		g.m.presenceConfirmed.WithLabelValues("read").Inc()
		p := wire.Presence{User: []byte(s.User), Online: s.Online, LastSeenMS: uint64(max(s.LastSeenMS, 0))}
		g.sendPresence(s.User, &p, true)
	}
	return true
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

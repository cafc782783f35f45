package routing

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// Status is one user's presence.
type Status struct {
	User   string
	Online bool
	// LastSeenMS is when the user was last seen online, in Unix
	// milliseconds: the time of the answer when Online, 0 when the user was
	// never seen or not within the retention.
	LastSeenMS int64
}

// Presence tells whether users are online and when they were last seen.
//
// It is fed by the Registry's own writes, so it costs gateways no call and
// Redis no write of its own per heartbeat:
//   - online: the user has a live route (the rule Lookup applies: route ttl
//     not passed and its gateway holds a lease), so it follows connections
//     at once and a crashed gateway's users go offline when its lease ends;
//   - last seen: the latest of a Register naming one of the user's devices
//     (a connection, or the rare route refresh), an Unregister of one (a
//     disconnection), and, for a route whose gateway lost its lease, the
//     gateway's last lease renewal (when it was last known alive).
//
// Last-seen times are kept for a retention (DefaultPresenceRetention)
// after they were written; a user unseen for longer reads as never seen.
// Who may see whose presence is the caller's decision, not this package's.
type Presence interface {
	// Presence appends the status of each of users to dst, in order, and
	// returns it. One call per request, whatever the number of users.
	Presence(ctx context.Context, users []string, dst []Status) ([]Status, error)
}

// DefaultPresenceRetention is how long a last-seen time is kept.
const DefaultPresenceRetention = 30 * 24 * time.Hour

var (
	_ Presence = (*Memory)(nil)
	_ Presence = (*Redis)(nil)
)

// Presence implements Presence.
func (m *Memory) Presence(_ context.Context, users []string, dst []Status) ([]Status, error) {
	now := m.now()
	cutoff := now.Add(-m.retention).UnixMilli()
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, u := range users {
		st := Status{User: u, LastSeenMS: m.seen[u]}
		for _, e := range m.devices[u] {
			if !now.Before(e.expires) {
				continue
			}
			if now.Before(m.leases[e.route.Gateway]) {
				st.Online = true
				break
			}
			st.LastSeenMS = max(st.LastSeenMS, m.gatewaySeen[e.route.Gateway])
		}
		if st.Online {
			st.LastSeenMS = now.UnixMilli()
		} else if st.LastSeenMS <= cutoff {
			st.LastSeenMS = 0
		}
		dst = append(dst, st)
	}
	return dst, nil
}

// seenLocked records that user was seen at ms, keeping the latest time.
// m.mu is held for writing.
func (m *Memory) seenLocked(user string, ms int64) {
	if ms > m.seen[user] {
		m.seen[user] = ms
	}
}

// sweepSeenLocked forgets last-seen times older than the retention. m.mu is
// held for writing.
func (m *Memory) sweepSeenLocked(now time.Time) {
	cutoff := now.Add(-m.retention).UnixMilli()
	for u, ms := range m.seen {
		if ms <= cutoff {
			delete(m.seen, u)
		}
	}
	for gw, ms := range m.gatewaySeen {
		if ms <= cutoff {
			delete(m.gatewaySeen, gw)
		}
	}
}

// Redis keys of presence:
//
//	{prefix}s:{user}     sorted set with one member "t" whose score is the
//	                     user's last-seen time (ms), written with ZADD GT so
//	                     it only moves forward whatever order writes of
//	                     several gateways arrive in (Redis 7.0 has no
//	                     "SET if greater"); PEXPIRE PresenceRetention.
//	{prefix}gs:{gateway} the gateway's last lease renewal (ms), written by
//	                     Lease; PX PresenceRetention.
//
// Each is one key per user or gateway, so they spread over Redis Cluster
// slots like the registry's own keys.
func (r *Redis) seenKey(arena []byte, user string) ([]byte, string) {
	n := len(arena)
	arena = append(arena, r.prefix...)
	arena = append(arena, "s:"...)
	arena = append(arena, user...)
	return arena, arenaString(arena, n)
}

func (r *Redis) gatewaySeenKey(gateway string) string { return r.prefix + "gs:" + gateway }

// seenMember is the only member of a user's last-seen sorted set.
const seenMember = "t"

// seenArgs are the arguments shared by the last-seen writes of one call,
// formatted once.
type seenArgs struct{ ms, retention string }

func (r *Redis) newSeenArgs(ms int64) seenArgs {
	return seenArgs{ms: strconv.FormatInt(ms, 10), retention: strconv.FormatInt(r.cfg.PresenceRetention.Milliseconds(), 10)}
}

// appendSeen appends the two commands that record user as seen at a.ms:
// ZADD GT (never moves the time back) and PEXPIRE of the retention. The key
// is built in arena (seenKeyLen(user) bytes), which it returns.
func (r *Redis) appendSeen(cmds rueidis.Commands, arena []byte, user string, a *seenArgs) (rueidis.Commands, []byte) {
	arena, key := r.seenKey(arena, user)
	return append(cmds,
		r.c.B().Arbitrary("ZADD").Keys(key).Args("GT", a.ms, seenMember).Build(),
		r.c.B().Arbitrary("PEXPIRE").Keys(key).Args(a.retention).Build(),
	), arena
}

// seenKeyLen is the length of user's last-seen key.
func (r *Redis) seenKeyLen(user string) int { return len(r.prefix) + 2 + len(user) }

// seenFromDeadGateways records, for each d with a deadGateway, that
// gateway's last-alive time as d.user's last-seen time: one round trip of
// GETs for the distinct gateways, one of writes. It runs before the reaper
// deletes those routes, which are what Presence reads that time from until
// then.
func (r *Redis) seenFromDeadGateways(ctx context.Context, dels []delIfMatch) error {
	var gws []string
	for i := range dels {
		if gw := dels[i].deadGateway; gw != "" && !slices.Contains(gws, gw) {
			gws = append(gws, gw)
		}
	}
	if len(gws) == 0 {
		return nil
	}
	seen, err := r.gatewaysSeen(ctx, gws)
	if err != nil {
		return err
	}
	var cmds rueidis.Commands
	for i := range dels {
		d := &dels[i]
		if d.deadGateway == "" {
			continue
		}
		if ms := seen[slices.Index(gws, d.deadGateway)]; ms > 0 {
			a := r.newSeenArgs(ms)
			cmds, _ = r.appendSeen(cmds, nil, d.user, &a)
		}
	}
	if len(cmds) == 0 {
		return nil
	}
	r.count(len(cmds))
	for _, res := range r.c.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			return err
		}
	}
	return nil
}

// gatewaysSeen returns the last-alive time of each gateway (0: unknown), in
// one round trip of GETs (not MGET: the keys may live in different Redis
// Cluster slots).
func (r *Redis) gatewaysSeen(ctx context.Context, gws []string) ([]int64, error) {
	cmds := make(rueidis.Commands, len(gws))
	for i, gw := range gws {
		cmds[i] = r.c.B().Get().Key(r.gatewaySeenKey(gw)).Build()
	}
	r.count(len(cmds))
	out := make([]int64, len(gws))
	for i, res := range r.c.DoMulti(ctx, cmds...) {
		s, err := res.ToString()
		if rueidis.IsRedisNil(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[i], _ = strconv.ParseInt(s, 10, 64) // another writer's value: unknown
	}
	return out, nil
}

// Presence implements Presence: one pipelined round trip of HVALS of each
// user's routes and ZSCORE of their last-seen time, then the gateways'
// leases (cached for LeaseCacheTTL, as Lookup does) and, only when a route
// names a gateway without a lease, one round trip of GETs of those
// gateways' last-alive times.
func (r *Redis) Presence(ctx context.Context, users []string, dst []Status) ([]Status, error) {
	if len(users) == 0 {
		return dst, nil
	}
	size := 0
	for _, u := range users {
		size += 2 * (len(r.prefix) + 2 + len(u))
	}
	arena := make([]byte, 0, size)
	cmds := make(rueidis.Commands, 0, 2*len(users))
	var key string
	for _, u := range users {
		arena, key = r.userKey(arena, u)
		cmds = append(cmds, r.c.B().Hvals().Key(key).Build())
		arena, key = r.seenKey(arena, u)
		cmds = append(cmds, r.c.B().Zscore().Key(key).Member(seenMember).Build())
	}
	r.count(len(cmds))
	res := r.c.DoMulti(ctx, cmds...)
	now := time.Now().UnixMilli()
	start := len(dst)
	// gateway of each unexpired route, and the user (index into users) it
	// belongs to
	var gws []string
	var routeGw, routeUser []int
	for i, u := range users {
		st := Status{User: u}
		score, err := res[2*i+1].AsFloat64()
		if err != nil && !rueidis.IsRedisNil(err) {
			return dst[:start], fmt.Errorf("routing: presence %q: %w", u, err)
		}
		st.LastSeenMS = int64(score)
		arr, err := res[2*i].ToArray()
		if err != nil {
			return dst[:start], fmt.Errorf("routing: presence %q: %w", u, err)
		}
		for j := range arr {
			v, err := arr[j].ToString()
			if err != nil {
				return dst[:start], fmt.Errorf("routing: presence %q: %w", u, err)
			}
			var rt Route
			exp, err := parseRouteValue(v, &rt)
			if err != nil || exp <= now {
				continue // not routable: says nothing about presence
			}
			g := slices.Index(gws, rt.Gateway)
			if g < 0 {
				g = len(gws)
				gws = append(gws, rt.Gateway)
			}
			routeGw = append(routeGw, g)
			routeUser = append(routeUser, i)
		}
		dst = append(dst, st)
	}
	out := dst[start:]
	if len(gws) > 0 {
		alive := make([]bool, len(gws))
		if err := r.liveGateways(ctx, gws, alive); err != nil {
			return dst[:start], fmt.Errorf("routing: presence: leases: %w", err)
		}
		var dead []string
		for k, g := range routeGw {
			if alive[g] {
				out[routeUser[k]].Online = true
			} else if !slices.Contains(dead, gws[g]) {
				dead = append(dead, gws[g])
			}
		}
		if len(dead) > 0 {
			seen, err := r.gatewaysSeen(ctx, dead)
			if err != nil {
				return dst[:start], fmt.Errorf("routing: presence: gateways: %w", err)
			}
			for k, g := range routeGw {
				if d := slices.Index(dead, gws[g]); d >= 0 {
					st := &out[routeUser[k]]
					st.LastSeenMS = max(st.LastSeenMS, seen[d])
				}
			}
		}
	}
	for i := range out {
		if out[i].Online {
			out[i].LastSeenMS = now
		}
	}
	return dst, nil
}

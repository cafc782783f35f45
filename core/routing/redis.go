package routing

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/redis/rueidis"
)

// Redis is the Registry and Router shared by every gateway and core process
// of a deployment. See docs/routing.md for the data model and the commands
// each operation sends.
//
// Registry: one hash per user, "{prefix}u:{user}", field = device, value =
// the route and its own expiry (see appendRouteValue). The key's TTL is the
// latest expiry of any of its fields, so a user whose gateways all crashed
// disappears on its own; an expired field inside a live key (one device of a
// crashed gateway while another device stays online) is skipped by Lookup and
// deleted in the background. Redis 7.0 has no per-field TTL (HPEXPIRE came in
// 7.4), which is why the expiry is in the value.
//
// Router: PUBLISH "{prefix}gw:{gateway}" batch. Each Subscribe holds its own
// connection (rueidis Dedicate + Receive) so a slow handler never stalls the
// pipelined connections the registry uses, and it resubscribes by itself
// after the connection or Redis is lost.
//
// Round trips: Lookup of any number of users is one pipelined round trip;
// Register and Unregister are one per RegisterChunk routes; Publish is one.
// Stats counts them.
type Redis struct {
	c      rueidis.Client
	prefix string
	cfg    RedisConfig

	members *redisMembers // MemberCache, with its own caching client (members_redis.go)

	channels  sync.Map // gateway id -> channel name, so Publish does not build it
	nchannels atomic.Int64

	leaseMu sync.Mutex
	leases  map[string]leaseEntry // gateway -> what Lookup last read of its lease

	reaping atomic.Bool // a background delete of expired fields is running

	mu     sync.Mutex
	subs   map[*redisSub]struct{}
	tsubs  map[*redisTopics]struct{} // topics_redis.go
	closed bool
	wg     sync.WaitGroup // subscription loops and reapers

	stats redisCounters
}

var (
	_ ManyPublisher = (*Redis)(nil)
	_ Registry      = (*Redis)(nil)
	_ Router        = (*Redis)(nil)
)

// RedisConfig configures NewRedis. The zero value of every field but Addrs
// means its default.
type RedisConfig struct {
	// Addrs are "host:port" addresses. One address is a single server (or
	// a seed of a Redis Cluster, which is detected). Required.
	Addrs []string
	// Username and Password for AUTH; empty means none.
	Username string
	Password string
	// DB is the database SELECTed on every connection (standalone only).
	// Default 0.
	DB int
	// TLS, when set, wraps every connection.
	TLS *tls.Config
	// KeyPrefix starts every key and channel name. Default "chatd:".
	KeyPrefix string
	// DialTimeout bounds connecting (and reconnecting) to Redis. Default 1s.
	DialTimeout time.Duration
	// Timeout bounds how long a connection may go without answering before
	// it is closed and every command waiting on it fails; an idle
	// connection is PINGed once a second to find out. While Redis hangs,
	// Register, Unregister and Publish fail after about Timeout, Lookup
	// (retried once on a fresh connection) after Timeout + DialTimeout; a
	// Redis that is down (connection refused) fails them at once.
	// Default 1s.
	Timeout time.Duration
	// RegisterChunk is the number of routes written per pipelined round
	// trip by Register (5 commands each) and Unregister (3 each). Batches
	// larger than that take several round trips, one chunk at a time, so a
	// refresh of a very large gateway never holds the shared connection
	// for long. Default 350 (1,750 commands, under rueidis'
	// BlockingPipeline threshold of 2,000 that would move a pipeline off
	// the shared connections).
	RegisterChunk int
	// PresenceRetention is how long a user's last-seen time is kept after
	// it was last written (see Presence). Default 30 days.
	PresenceRetention time.Duration
	// SubscribeTimeout bounds how long Subscribe waits for Redis to
	// confirm the first SUBSCRIBE. Default 5s.
	SubscribeTimeout time.Duration
	// OnResubscribe, if set, is called (on a goroutine of its own) each
	// time a subscription to gateway is re-established after its
	// connection was lost. A Redis that restarted has lost every route, so
	// a gateway should refresh all its routes then rather than wait for
	// its next periodic refresh. Default: nothing.
	OnResubscribe func(gateway string)
	// ReceiptTTL is how long a conversation's receipt pointers (see
	// AdvanceReceipts) are kept after their last advance: every advance
	// resets it, so only conversations idle that long are forgotten.
	// Default 90 days.
	ReceiptTTL time.Duration
	// MembersTTL is how long a conversation's cached member list (see
	// MemberCache) is kept after it was last filled or set. Default 24h.
	MembersTTL time.Duration
}

const (
	defaultKeyPrefix        = "chatd:"
	defaultDialTimeout      = time.Second
	defaultTimeout          = time.Second
	defaultRegisterChunk    = 350
	defaultSubscribeTimeout = 5 * time.Second
	pipelineMultiplex       = 2
	pipelinedConns          = 1 << pipelineMultiplex
	// maxChannelCache bounds the gateway -> channel name cache; gateway
	// ids are per process lifetime, so it is reset when it grows past this.
	maxChannelCache = 4096
)

// NewRedis connects to Redis and returns a Registry and Router on it. It
// fails if Redis cannot be reached within DialTimeout.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("routing: RedisConfig.Addrs is empty")
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = defaultKeyPrefix
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.RegisterChunk <= 0 {
		cfg.RegisterChunk = defaultRegisterChunk
	}
	if cfg.SubscribeTimeout <= 0 {
		cfg.SubscribeTimeout = defaultSubscribeTimeout
	}
	if cfg.ReceiptTTL <= 0 {
		cfg.ReceiptTTL = defaultReceiptTTL
	}
	if cfg.PresenceRetention <= 0 {
		cfg.PresenceRetention = DefaultPresenceRetention
	}
	if cfg.MembersTTL <= 0 {
		cfg.MembersTTL = defaultMembersTTL
	}
	opt := redisClientOption(cfg, "chatd-routing")
	// 2^2 pipelined connections (rueidis' default, set here because
	// retryBroken counts on it).
	opt.PipelineMultiplex = pipelineMultiplex
	// No client-side caching: every heartbeat rewrites every user's
	// hash, so cached lookups would be invalidated about as often as
	// they are read, and invalidations arrive on another connection
	// than the write, which would let a Lookup right after a Register
	// miss it. See docs/routing.md. (The member cache, read per message
	// and rarely written, has a caching client of its own.)
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("routing: connect redis %v: %w", cfg.Addrs, err)
	}
	members, err := newRedisMembers(redisClientOption(cfg, "chatd-members"))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("routing: connect redis %v (member cache): %w", cfg.Addrs, err)
	}
	return &Redis{c: c, prefix: cfg.KeyPrefix, cfg: cfg, members: members, subs: make(map[*redisSub]struct{}), leases: make(map[string]leaseEntry)}, nil
}

// redisClientOption is what every rueidis client of a Redis shares: where
// Redis is, how to log in, and how fast to give up.
func redisClientOption(cfg RedisConfig, name string) rueidis.ClientOption {
	return rueidis.ClientOption{
		InitAddress: cfg.Addrs,
		Username:    cfg.Username,
		Password:    cfg.Password,
		SelectDB:    cfg.DB,
		TLSConfig:   cfg.TLS,
		ClientName:  name,
		Dialer:      net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: time.Second},
		// Bounds a silent Redis: a connection with commands waiting and no
		// reply for this long is closed and its commands fail.
		ConnWriteTimeout: cfg.Timeout,
		// One quick retry of a read (Lookup) that hit a connection broken
		// by a Redis restart, then fail: routing is best effort and must
		// fail fast rather than queue up behind a dead Redis.
		RetryDelay: func(attempts int, _ rueidis.Completed, _ error) time.Duration {
			if attempts > 1 {
				return -1
			}
			return 10 * time.Millisecond
		},
	}
}

// Close stops every subscription, waits for their handlers to return and
// closes the connections. Calls after Close fail.
func (r *Redis) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	subs := make([]*redisSub, 0, len(r.subs))
	for s := range r.subs {
		subs = append(subs, s)
	}
	tsubs := make([]*redisTopics, 0, len(r.tsubs))
	for t := range r.tsubs {
		tsubs = append(tsubs, t)
	}
	r.mu.Unlock()
	for _, s := range subs {
		s.stop()
	}
	for _, t := range tsubs {
		t.Close()
	}
	r.wg.Wait()
	r.c.Close()
	r.members.c.Close()
}

// RedisStats are cumulative counters of one Redis since NewRedis.
type RedisStats struct {
	// RoundTrips counts pipelined writes this package handed to Redis and
	// waited on: each Do or DoMulti is one (a rueidis-internal retry after
	// a broken connection is not counted).
	RoundTrips uint64
	// Commands counts the Redis commands in those round trips.
	Commands uint64
	// Published counts Publish calls that Redis accepted.
	Published uint64
	// Received counts batches handed to Subscribe handlers.
	Received uint64
	// Resubscribes counts subscriptions re-established after their
	// connection was lost (a Redis restart, a network cut).
	Resubscribes uint64
	// Reaped counts expired fields deleted after Lookup found them.
	Reaped uint64
}

type redisCounters struct {
	roundTrips, commands, published, received, resubscribes, reaped atomic.Uint64
}

// Stats returns the counters. Reading them is cheap; benchmarks divide
// RoundTrips and Commands by the operations they ran.
func (r *Redis) Stats() RedisStats {
	return RedisStats{
		RoundTrips:   r.stats.roundTrips.Load(),
		Commands:     r.stats.commands.Load(),
		Published:    r.stats.published.Load(),
		Received:     r.stats.received.Load(),
		Resubscribes: r.stats.resubscribes.Load(),
		Reaped:       r.stats.reaped.Load(),
	}
}

func (r *Redis) count(commands int) {
	r.stats.roundTrips.Add(1)
	r.stats.commands.Add(uint64(commands))
}

// ---- Registry ----

// leaseEntry caches one gateway's lease: alive says whether the lease key
// existed when read at readMs.
type leaseEntry struct {
	alive  bool
	readMs int64
}

func (r *Redis) leaseKey(gateway string) string { return r.prefix + "lease:" + gateway }

// Lease implements Registry: SET "{prefix}lease:{gateway}" PX ttl, or DEL
// when ttl <= 0, and SET "{prefix}gs:{gateway}" to now (kept for
// PresenceRetention): the time the gateway was last known alive, which is
// the last-seen time of its users should it crash (Presence). Two commands
// in one round trip, whatever the gateway's number of routes.
func (r *Redis) Lease(ctx context.Context, gateway string, ttl time.Duration) error {
	err := retryBroken(func() error {
		// rueidis recycles a command once done: build them on each try.
		cmds := make(rueidis.Commands, 0, 2)
		if ttl <= 0 {
			cmds = append(cmds, r.c.B().Del().Key(r.leaseKey(gateway)).Build())
		} else {
			cmds = append(cmds, r.c.B().Set().Key(r.leaseKey(gateway)).Value("1").PxMilliseconds(max(ttl.Milliseconds(), 1)).Build())
		}
		now := strconv.FormatInt(time.Now().UnixMilli(), 10)
		cmds = append(cmds, r.c.B().Set().Key(r.gatewaySeenKey(gateway)).Value(now).PxMilliseconds(r.cfg.PresenceRetention.Milliseconds()).Build())
		r.count(len(cmds))
		for _, res := range r.c.DoMulti(ctx, cmds...) {
			if err := res.Error(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("routing: lease %s: %w", gateway, err)
	}
	r.leaseMu.Lock()
	r.leases[gateway] = leaseEntry{alive: ttl > 0, readMs: time.Now().UnixMilli()}
	r.leaseMu.Unlock()
	return nil
}

// liveGateways reports, in alive (parallel to gateways), which gateways hold
// a lease: from the cache when it was read within LeaseCacheTTL, else with
// one pipelined round trip of GETs for all the others.
func (r *Redis) liveGateways(ctx context.Context, gateways []string, alive []bool) error {
	now := time.Now().UnixMilli()
	var miss []int
	r.leaseMu.Lock()
	for i, gw := range gateways {
		e, ok := r.leases[gw]
		if ok && now-e.readMs < LeaseCacheTTL.Milliseconds() {
			alive[i] = e.alive
			continue
		}
		miss = append(miss, i)
	}
	r.leaseMu.Unlock()
	if len(miss) == 0 {
		return nil
	}
	// GETs pipelined in one round trip rather than one MGET: the lease keys
	// of different gateways may live in different Redis Cluster slots.
	cmds := make(rueidis.Commands, len(miss))
	for j, i := range miss {
		cmds[j] = r.c.B().Get().Key(r.leaseKey(gateways[i])).Build()
	}
	r.count(len(cmds))
	res := r.c.DoMulti(ctx, cmds...)
	for j, i := range miss {
		err := res[j].Error()
		if err != nil && !rueidis.IsRedisNil(err) {
			return err
		}
		alive[i] = err == nil
	}
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	if len(r.leases) > maxChannelCache {
		clear(r.leases) // gateway ids are per process start; forget old ones
	}
	for _, i := range miss {
		r.leases[gateways[i]] = leaseEntry{alive: alive[i], readMs: now}
	}
	return nil
}

// The route value stored in a user's hash, under the device's field:
//
//	byte 0     format version (1)
//	bytes 1-8  expiry, unix milliseconds, big-endian
//	uvarint    conn
//	byte       len(gateway)
//	           gateway
//	uvarint    caps
//	           device (the rest; the same as the field name)
//
// The device is repeated in the value so that Lookup can read a user with
// HVALS, whose reply is a flat array, instead of HGETALL, whose RESP3 map
// rueidis only hands out as a Go map: that halves Lookup's allocations and
// bytes for about 20 more bytes per route in Redis.
//
// Everything from byte 9 on is prefix-free (uvarints, then a length-prefixed
// string), so comparing a stored value from offset 10 (1-based, as Lua
// counts) with the encoding of (conn, gateway) tells whether it names that
// connection, whatever caps and device follow: that is how Unregister's
// script matches.
const (
	routeVersion  = 1
	maxGatewayLen = 255
	routeValLen   = 1 + 8 + binary.MaxVarintLen64 + 1 + binary.MaxVarintLen64 // + gateway + device
)

func appendRouteValue(b []byte, rt *Route, expiresMs int64) []byte {
	b = append(b, routeVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(expiresMs))
	b = appendRouteIdent(b, rt)
	b = binary.AppendUvarint(b, rt.Caps)
	return append(b, rt.Device...)
}

func appendRouteIdent(b []byte, rt *Route) []byte {
	b = binary.AppendUvarint(b, rt.Conn)
	b = append(b, byte(len(rt.Gateway)))
	return append(b, rt.Gateway...)
}

var errBadRouteValue = errors.New("routing: malformed route value in redis")

// parseRouteValue decodes v into rt's Device, Gateway, Conn and Caps
// (Device and Gateway alias v). It returns the entry's expiry in unix
// milliseconds.
func parseRouteValue(v string, rt *Route) (expiresMs int64, err error) {
	if len(v) < 1+8+1+1+1 || v[0] != routeVersion {
		return 0, errBadRouteValue
	}
	expiresMs = int64(binary.BigEndian.Uint64(unsafe.Slice(unsafe.StringData(v[1:9]), 8)))
	i := 9
	conn, n := uvarintString(v[i:])
	if n <= 0 {
		return 0, errBadRouteValue
	}
	i += n
	if i >= len(v) {
		return 0, errBadRouteValue
	}
	gl := int(v[i])
	i++
	if i+gl > len(v) {
		return 0, errBadRouteValue
	}
	gw := v[i : i+gl]
	i += gl
	caps, n := uvarintString(v[i:])
	if n <= 0 {
		return 0, errBadRouteValue
	}
	rt.Conn, rt.Gateway, rt.Caps, rt.Device = conn, gw, caps, v[i+n:]
	return expiresMs, nil
}

func uvarintString(s string) (uint64, int) {
	var x uint64
	var shift uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, -1
			}
			return x | uint64(c)<<shift, i + 1
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, 0
}

// delIfMatchScript deletes field ARGV[1] of hash KEYS[1] if its value
// matches ARGV[2]: from 1-based byte ARGV[3] on when ARGV[3] is a number,
// else whole. Unregister passes the (conn, gateway) encoding at offset 10;
// the reaper passes the whole expired value, so a route refreshed since it
// was read is kept. HDEL of the last field deletes the key.
const delIfMatchScript = `local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local off = tonumber(ARGV[3])
if off then v = string.sub(v, off, off + #ARGV[2] - 1) end
if v == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0`

var delIfMatchSHA = func() string {
	sum := sha1.Sum([]byte(delIfMatchScript))
	return hex.EncodeToString(sum[:])
}()

func (r *Redis) userKey(arena []byte, user string) ([]byte, string) {
	n := len(arena)
	arena = append(arena, r.prefix...)
	arena = append(arena, "u:"...)
	arena = append(arena, user...)
	return arena, arenaString(arena, n)
}

// arenaString returns arena[from:] as a string without copying. Callers
// never write to an arena again after taking strings from it and never reuse
// it for another call: rueidis may still hold the strings after a command
// returns early on a cancelled context, and a fresh arena per call keeps
// them valid for as long as anything refers to them.
func arenaString(arena []byte, from int) string {
	return unsafe.String(unsafe.SliceData(arena[from:]), len(arena)-from)
}

// Register implements Registry: per route HSET of the device's field, then
// PEXPIRE NX (a new key gets the ttl) and PEXPIRE GT (an existing key's TTL
// only ever grows, so a device registered with a shorter ttl never cuts a
// longer-lived device's entry short), then the user's last-seen time
// (seenCmds). One round trip per RegisterChunk routes.
func (r *Redis) Register(ctx context.Context, routes []Route, ttl time.Duration) error {
	ttlMs := ttl.Milliseconds()
	if ttlMs < 1 {
		ttlMs = 1
	}
	for i := range routes {
		if len(routes[i].Gateway) > maxGatewayLen {
			// Checked before anything is written: no half-registered batch.
			return fmt.Errorf("routing: register: gateway id %.16q... longer than %d bytes", routes[i].Gateway, maxGatewayLen)
		}
	}
	exp := time.Now().UnixMilli() + ttlMs
	for start := 0; start < len(routes); start += r.cfg.RegisterChunk {
		chunk := routes[start:min(start+r.cfg.RegisterChunk, len(routes))]
		if err := retryBroken(func() error { return r.registerChunk(ctx, chunk, ttlMs, exp) }); err != nil {
			return err
		}
	}
	return nil
}

func (r *Redis) registerChunk(ctx context.Context, routes []Route, ttlMs, exp int64) error {
	size := 0
	for i := range routes {
		size += len(r.prefix) + 2 + len(routes[i].User) + routeValLen + len(routes[i].Gateway) + len(routes[i].Device) + r.seenKeyLen(routes[i].User)
	}
	arena := make([]byte, 0, size)
	cmds := make(rueidis.Commands, 0, 5*len(routes))
	// The typed PEXPIRE builder formats the ttl on every call; format it
	// once (two allocations per route saved on the heartbeat path).
	ttlArg := strconv.FormatInt(ttlMs, 10)
	seen := r.newSeenArgs(exp - ttlMs)
	var key string
	for i := range routes {
		rt := &routes[i]
		arena, key = r.userKey(arena, rt.User)
		n := len(arena)
		arena = appendRouteValue(arena, rt, exp)
		val := arenaString(arena, n)
		cmds = append(cmds,
			r.c.B().Hset().Key(key).FieldValue().FieldValue(rt.Device, val).Build(),
			r.c.B().Arbitrary("PEXPIRE").Keys(key).Args(ttlArg, "NX").Build(),
			r.c.B().Arbitrary("PEXPIRE").Keys(key).Args(ttlArg, "GT").Build(),
		)
		cmds, arena = r.appendSeen(cmds, arena, rt.User, &seen)
	}
	r.count(len(cmds))
	for _, res := range r.c.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			return fmt.Errorf("routing: register: %w", err)
		}
	}
	return nil
}

// Unregister implements Registry: per route one EVALSHA of delIfMatchScript
// and the user's last-seen time (seenCmds: the device was online until now,
// whether or not its route was still the one named), pipelined, one round trip per RegisterChunk routes (plus one, with the
// script's source, the first time after Redis lost its script cache).
func (r *Redis) Unregister(ctx context.Context, routes []Route) error {
	for start := 0; start < len(routes); start += r.cfg.RegisterChunk {
		chunk := routes[start:min(start+r.cfg.RegisterChunk, len(routes))]
		size := 0
		for i := range chunk {
			if len(chunk[i].Gateway) > maxGatewayLen {
				continue // never registered
			}
			size += len(r.prefix) + 2 + len(chunk[i].User) + routeValLen + len(chunk[i].Gateway)
		}
		arena := make([]byte, 0, size)
		dels := make([]delIfMatch, 0, len(chunk))
		var key string
		for i := range chunk {
			rt := &chunk[i]
			if len(rt.Gateway) > maxGatewayLen {
				continue
			}
			arena, key = r.userKey(arena, rt.User)
			n := len(arena)
			arena = appendRouteIdent(arena, rt)
			dels = append(dels, delIfMatch{key: key, field: rt.Device, match: arenaString(arena, n), off: routeIdentOffArg, user: rt.User})
		}
		seenMs := time.Now().UnixMilli()
		if err := retryBroken(func() error { _, err := r.delIfMatch(ctx, dels, seenMs); return err }); err != nil {
			return fmt.Errorf("routing: unregister: %w", err)
		}
	}
	return nil
}

// retryBroken runs op, and runs it again while it fails because the
// connection it went out on was already broken (brokenConn), at most once
// per pipelined connection. rueidis keeps a connection that broke while idle
// (Redis died or restarted) until a command fails on it, and retries only
// read-only commands itself; it picks one of its pipelinedConns at random, so
// after a Redis restart each of them can fail one write with EOF before it is
// redialed. The ops passed here are idempotent (SET, HSET of the same value,
// PEXPIRE NX/GT, delete-if-match), so sending them again is safe. A broken
// connection fails at once, so the retries cost no waiting; a timeout or a
// refused dial is not retried, so a hung or dead Redis still fails the op
// within Timeout.
func retryBroken(op func() error) error {
	err := op()
	for i := 0; i < pipelinedConns && brokenConn(err); i++ {
		err = op()
	}
	return err
}

func brokenConn(err error) bool {
	return err != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed))
}

const (
	routeIdentOff    = 10   // 1-based offset of (conn, gateway) in a value
	routeIdentOffArg = "10" // routeIdentOff as the script's argument
	wholeValueOffArg = ""   // compare the whole value
)

// delIfMatch is one conditional delete of a route. With seenMs > 0 (see
// Redis.delIfMatch), user is the user whose last-seen time is written.
// deadGateway, set by Lookup for a route whose gateway holds no lease, makes
// the reaper first record that gateway's last-alive time as the user's
// last-seen time (a crashed gateway's users were online until then).
type delIfMatch struct{ key, field, match, off, user, deadGateway string }

// delIfMatch runs delIfMatchScript for each d in one pipelined round trip of
// EVALSHA, and when seenMs > 0 also writes seenMs as the last-seen time of
// each d.user; entries that failed with NOSCRIPT (Redis restarted or its
// script cache was flushed) are sent again with EVAL, which also reloads the
// script. It returns the number of fields deleted.
func (r *Redis) delIfMatch(ctx context.Context, dels []delIfMatch, seenMs int64) (int, error) {
	if len(dels) == 0 {
		return 0, nil
	}
	cmds := make(rueidis.Commands, len(dels), 3*len(dels))
	for i, d := range dels {
		cmds[i] = r.c.B().Evalsha().Sha1(delIfMatchSHA).Numkeys(1).Key(d.key).Arg(d.field, d.match, d.off).Build()
	}
	if seenMs > 0 {
		seen := r.newSeenArgs(seenMs)
		size := 0
		for _, d := range dels {
			size += r.seenKeyLen(d.user)
		}
		arena := make([]byte, 0, size)
		for _, d := range dels {
			cmds, arena = r.appendSeen(cmds, arena, d.user, &seen)
		}
	}
	r.count(len(cmds))
	res := r.c.DoMulti(ctx, cmds...)
	for _, re := range res[len(dels):] {
		if err := re.Error(); err != nil {
			return 0, err
		}
	}
	res = res[:len(dels)]
	deleted := 0
	var retry []int
	for i, re := range res {
		if err := re.Error(); err != nil {
			if rerr, ok := rueidis.IsRedisErr(err); ok && rerr.IsNoScript() {
				retry = append(retry, i)
				continue
			}
			return deleted, err
		}
		if n, _ := re.AsInt64(); n > 0 {
			deleted++
		}
	}
	if len(retry) == 0 {
		return deleted, nil
	}
	cmds = cmds[:0]
	for _, i := range retry {
		d := dels[i]
		cmds = append(cmds, r.c.B().Eval().Script(delIfMatchScript).Numkeys(1).Key(d.key).Arg(d.field, d.match, d.off).Build())
	}
	r.count(len(cmds))
	for _, re := range r.c.DoMulti(ctx, cmds...) {
		if err := re.Error(); err != nil {
			return deleted, err
		}
		if n, _ := re.AsInt64(); n > 0 {
			deleted++
		}
	}
	return deleted, nil
}

// Lookup implements Registry: one HVALS per user, all in one pipelined
// round trip, then one round trip of GETs of the leases of the gateways
// named in the answer that were not read within LeaseCacheTTL (usually
// none).
// Fields whose expiry has passed, or whose gateway holds no lease, are
// skipped and handed to a background delete (delIfMatchScript with the
// whole value, so a route refreshed meanwhile survives); fields that do not
// decode are skipped. Route.User aliases users[i]; Device and Gateway alias
// the strings rueidis allocated for the reply.
func (r *Redis) Lookup(ctx context.Context, users []string, dst []Route) ([]Route, error) {
	if len(users) == 0 {
		return dst, nil
	}
	size := 0
	for _, u := range users {
		size += len(r.prefix) + 2 + len(u)
	}
	arena := make([]byte, 0, size)
	cmds := make(rueidis.Commands, len(users))
	var key string
	for i, u := range users {
		arena, key = r.userKey(arena, u)
		cmds[i] = r.c.B().Hvals().Key(key).Build()
	}
	r.count(len(cmds))
	res := r.c.DoMulti(ctx, cmds...)
	now := time.Now().UnixMilli()
	var expired []delIfMatch
	start := len(dst)
	var vals []string // the raw value of each route appended, for the reaper
	for i := range res {
		arr, err := res[i].ToArray()
		if err != nil {
			return dst[:start], fmt.Errorf("routing: lookup %q: %w", users[i], err)
		}
		for j := range arr {
			v, err := arr[j].ToString()
			if err != nil {
				return dst[:start], fmt.Errorf("routing: lookup %q: %w", users[i], err)
			}
			rt := Route{User: users[i]}
			exp, err := parseRouteValue(v, &rt)
			if err != nil {
				continue // another writer's or a future format: not routable
			}
			if exp <= now {
				_, key := r.userKey(nil, users[i])
				expired = append(expired, delIfMatch{key: key, field: rt.Device, match: v, off: wholeValueOffArg})
				continue
			}
			dst = append(dst, rt)
			vals = append(vals, v)
		}
	}
	if len(dst) > start {
		var err error
		if dst, expired, err = r.keepLeased(ctx, dst, start, vals, expired); err != nil {
			return dst[:start], fmt.Errorf("routing: lookup: leases: %w", err)
		}
	}
	if len(expired) > 0 {
		r.reap(expired)
	}
	return dst, nil
}

// keepLeased removes from dst[start:] the routes whose gateway holds no
// lease, adding them to expired.
func (r *Redis) keepLeased(ctx context.Context, dst []Route, start int, vals []string, expired []delIfMatch) ([]Route, []delIfMatch, error) {
	var gws []string
	for i := start; i < len(dst); i++ {
		if !slices.Contains(gws, dst[i].Gateway) {
			gws = append(gws, dst[i].Gateway)
		}
	}
	alive := make([]bool, len(gws))
	if err := r.liveGateways(ctx, gws, alive); err != nil {
		return dst, expired, err
	}
	if !slices.Contains(alive, false) {
		return dst, expired, nil
	}
	kept := dst[:start]
	for i := start; i < len(dst); i++ {
		rt := dst[i]
		if alive[slices.Index(gws, rt.Gateway)] {
			kept = append(kept, rt)
			continue
		}
		_, key := r.userKey(nil, rt.User)
		expired = append(expired, delIfMatch{key: key, field: rt.Device, match: vals[i-start], off: wholeValueOffArg, user: rt.User, deadGateway: rt.Gateway})
	}
	clear(dst[len(kept):])
	return kept, expired, nil
}

// reap deletes expired fields in the background, one at a time per Redis:
// if a reap is already running the fields are left for a later Lookup.
func (r *Redis) reap(dels []delIfMatch) {
	if !r.reaping.CompareAndSwap(false, true) {
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.reaping.Store(false)
		return
	}
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		defer r.reaping.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout+r.cfg.DialTimeout)
		defer cancel()
		// Best effort: a failure leaves them for the next Lookup.
		if err := r.seenFromDeadGateways(ctx, dels); err != nil {
			return // keep the routes: they still carry the last-seen time
		}
		n, _ := r.delIfMatch(ctx, dels, 0)
		r.stats.reaped.Add(uint64(n))
	}()
}

// ---- Router ----

func (r *Redis) channel(gateway string) string {
	if ch, ok := r.channels.Load(gateway); ok {
		return ch.(string)
	}
	ch := r.prefix + "gw:" + gateway
	if r.nchannels.Add(1) > maxChannelCache {
		r.channels.Clear()
		r.nchannels.Store(1)
	}
	r.channels.Store(gateway, ch)
	return ch
}

// Publish implements Router: one PUBLISH of batch on the gateway's channel.
//
// batch goes to rueidis without a copy, so once the command is queued
// Publish waits for Redis' reply even if ctx is cancelled (it is bounded by
// Timeout instead): returning earlier would let the caller reuse batch while
// rueidis still has to write it.
func (r *Redis) Publish(ctx context.Context, gateway string, batch []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cmd := r.c.B().Publish().Channel(r.channel(gateway)).Message(rueidis.BinaryString(batch)).Build()
	r.count(1)
	if err := r.c.Do(context.Background(), cmd).Error(); err != nil {
		return fmt.Errorf("routing: publish %s: %w", gateway, err)
	}
	r.stats.published.Add(1)
	return nil
}

// PublishMany implements ManyPublisher: every PUBLISH in one pipelined
// round trip. Redis runs a connection's commands in order, so batches for
// one gateway keep their order.
func (r *Redis) PublishMany(ctx context.Context, pubs []Publication) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cmds := make(rueidis.Commands, len(pubs))
	for i, p := range pubs {
		cmds[i] = r.c.B().Publish().Channel(r.channel(p.Gateway)).Message(rueidis.BinaryString(p.Batch)).Build()
	}
	r.count(len(cmds))
	var first error
	for i, res := range r.c.DoMulti(context.Background(), cmds...) {
		if err := res.Error(); err != nil {
			if first == nil {
				first = fmt.Errorf("routing: publish %s: %w", pubs[i].Gateway, err)
			}
			continue
		}
		r.stats.published.Add(1)
	}
	return first
}

// redisSub is one Subscribe: a goroutine that holds a dedicated connection
// in Receive and calls h for every message, reconnecting when the
// connection is lost.
//
//	Subscribe ──> run: Dedicate ─> SUBSCRIBE ─> confirmed ─> deliver ... ─┐
//	                    ^                                                   │ connection lost
//	                    └──────────── backoff (50ms doubling to 1s) <──────┘
//	stop: stopped=true, cancel ctx ─> Receive returns ─> run exits (done)
type redisSub struct {
	r       *Redis
	gateway string
	channel string
	h       func([]byte)
	ctx     context.Context
	cancel  context.CancelFunc
	stopped atomic.Bool
	done    chan struct{}
	once    sync.Once
}

// Subscribe implements Router. It returns once Redis confirmed the
// subscription (or fails after SubscribeTimeout). h runs on one goroutine,
// in publish order; batch aliases the received message and is valid only
// until h returns. After the connection is lost the subscription is
// re-established with backoff; batches published meanwhile are lost (the
// Router is at-most-once; clients recover them by RESUME).
//
// stop waits until h has returned for the last time; it must not be called
// from h.
func (r *Redis) Subscribe(gateway string, h func(batch []byte)) (func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &redisSub{r: r, gateway: gateway, channel: r.channel(gateway), h: h, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("routing: subscribe %s: %w", gateway, rueidis.ErrClosing)
	}
	r.subs[s] = struct{}{}
	r.wg.Add(1)
	r.mu.Unlock()

	ready := make(chan struct{})
	go s.run(ready)
	t := time.NewTimer(r.cfg.SubscribeTimeout)
	defer t.Stop()
	select {
	case <-ready:
		return s.stop, nil
	case <-t.C:
		s.stop()
		return nil, fmt.Errorf("routing: subscribe %s: not confirmed by redis within %v", gateway, r.cfg.SubscribeTimeout)
	}
}

func (s *redisSub) stop() {
	s.once.Do(func() {
		s.stopped.Store(true)
		s.cancel()
		<-s.done
		s.r.mu.Lock()
		delete(s.r.subs, s)
		s.r.mu.Unlock()
	})
}

func (s *redisSub) run(ready chan struct{}) {
	defer s.r.wg.Done()
	defer close(s.done)
	// The hook runs on the connection's reader goroutine, a new one after
	// each reconnect.
	var confirmed atomic.Bool
	hookCtx := rueidis.WithOnSubscriptionHook(s.ctx, func(ps rueidis.PubSubSubscription) {
		if ps.Kind != "subscribe" {
			return
		}
		if confirmed.CompareAndSwap(false, true) {
			close(ready)
			return
		}
		s.r.stats.resubscribes.Add(1)
		if f := s.r.cfg.OnResubscribe; f != nil {
			go f(s.gateway)
		}
	})
	backoff := 50 * time.Millisecond
	for {
		dc, release := s.r.c.Dedicate()
		s.r.count(1)
		start := time.Now()
		_ = dc.Receive(hookCtx, dc.B().Subscribe().Channel(s.channel).Build(), s.deliver)
		release()
		if s.ctx.Err() != nil {
			return
		}
		// The connection was lost (or SUBSCRIBE failed): try again.
		if time.Since(start) > 5*time.Second {
			backoff = 50 * time.Millisecond // it had been working
		}
		if !sleepCtx(s.ctx, backoff) {
			return
		}
		backoff = min(2*backoff, time.Second)
	}
}

// sleepCtx waits d, or less if ctx ends first; it reports whether ctx is
// still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (s *redisSub) deliver(m rueidis.PubSubMessage) {
	if s.stopped.Load() {
		return
	}
	s.r.stats.received.Add(1)
	s.h(unsafe.Slice(unsafe.StringData(m.Message), len(m.Message)))
}

// Package node assembles one chatd process: gateway, core (messages and
// fanout), the HTTP API and the admin listener, on the embedded defaults
// (kfake, Pebble, in-process registry and router) or on external brokers.
// cmd/chatd is a thin flag layer over Start; tests start nodes in process.
//
// Data directory layout:
//
//	DIR/keys/token.key   Ed25519 signing key (PKCS#8 PEM, 0600)
//	DIR/store/           Pebble message store
//	DIR/kafka/           embedded kfake log (when no brokers are given)
package node

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/chatd-dev/chatd/core/api"
	"github.com/chatd-dev/chatd/core/auth"
	"github.com/chatd-dev/chatd/core/bus"
	"github.com/chatd-dev/chatd/core/consume"
	"github.com/chatd-dev/chatd/core/fanout"
	"github.com/chatd-dev/chatd/core/messages"
	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/snowflake"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/core/store/remote"
	"github.com/chatd-dev/chatd/core/store/scylla"
	"github.com/chatd-dev/chatd/gateway"
	"github.com/chatd-dev/chatd/wire"
)

// Roles a process can run. A node runs any non-empty subset.
const (
	RoleGateway = "gateway" // WebSocket connections
	RoleCore    = "core"    // messages, fanout, HTTP API (and the store, unless Config.Store names a remote one)
	RoleStore   = "store"   // the embedded store (Pebble) served to other processes' cores (core/store/remote)
	RoleBroker  = "broker"  // the embedded Kafka broker (kfake) for other processes
)

// Config configures a node. Zero values mean defaults.
type Config struct {
	// Roles to run (default both). A gateway-only process needs Brokers
	// and Redis, and reads the token key from DataDir (a core created it).
	Roles       []string
	DataDir     string // required
	GatewayAddr string // WebSocket listener, default 127.0.0.1:8080
	APIAddr     string // HTTP API, default 127.0.0.1:8081
	AdminAddr   string // metrics, pprof, health; default 127.0.0.1:9090; "off" disables
	// Dev enables POST /dev/token on the API listener.
	Dev bool
	// Brokers are external Kafka brokers; empty starts kfake in process.
	Brokers []string
	// Redis, when set, holds the registry and carries routed frames
	// (required when gateways and cores run in separate processes); empty
	// uses the in-process registry and router.
	Redis []string
	// RedisUser and RedisPassword authenticate to Redis (AUTH; empty: none);
	// RedisTLS, when set, wraps every Redis connection.
	RedisUser     string
	RedisPassword string
	RedisTLS      *tls.Config
	// KafkaTLS and KafkaSASL secure the connections to external Brokers
	// (bus.Security builds them from files and names); nil: plaintext.
	KafkaTLS  *tls.Config
	KafkaSASL sasl.Mechanism
	// Replication is the replication factor of the chat topics when chatd
	// creates them on external Brokers (<= 0: the brokers' default). The
	// embedded broker is one broker: 1.
	Replication int
	// KafkaPort is the embedded broker's loopback port (0: any free one).
	KafkaPort int
	// Store is a store process's address (host:port, see RoleStore) for
	// the core role; empty opens the embedded store in DataDir/store.
	// Several core processes must share one store: a conversation's seqs
	// and dedupe entries move with its Kafka partition.
	Store string
	// Scylla, when Hosts is set, keeps the core's store in ScyllaDB or
	// Cassandra (core/store/scylla) instead of the embedded one.
	Scylla scylla.Options
	// StoreAddr is the RoleStore listener (default 127.0.0.1:7070). It has
	// no authentication: keep it on loopback or a private network.
	StoreAddr string
	// Partitions of chat.inbound and chat.events when created here (default 8).
	Partitions int
	// NodeID is the Snowflake node id, unique among running cores (default 1).
	NodeID uint16
	// Gateway tunes the gateway; its Addr is GatewayAddr.
	Gateway gateway.Config
	// ProduceBuffer bounds the records a gateway holds for Kafka while the
	// brokers are slow or unreachable; beyond it a SEND is answered with
	// ERROR unavailable (retryable) at once. <= 0: 10,000.
	ProduceBuffer int
	// Messages tunes the processor.
	Messages messages.Config
	Logger   *slog.Logger
}

// Node is a running chatd process.
type Node struct {
	cfg    Config
	log    *slog.Logger
	signer *auth.Signer

	store    store.Store
	stSrv    *http.Server
	stLn     net.Listener
	emb      *bus.Embedded
	brokers  []string
	redis    *routing.Redis
	presence routing.Presence       // the registry's view of who is online (the API serves it)
	receipts routing.ReceiptCounter // receipt counts (fanout writes, the API reads)
	members  routing.MemberCache    // shared membership cache (Redis only; else the fanout's own)
	clients  []*kgo.Client
	proc     *messages.Processor
	gw       *gateway.Gateway
	apiSrv   *http.Server
	apiLn    net.Listener
	admSrv   *http.Server
	admLn    net.Listener

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Start starts a node. On error everything started so far is stopped.
func Start(ctx context.Context, cfg Config) (n *Node, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("node: DataDir is required")
	}
	if len(cfg.Roles) == 0 {
		cfg.Roles = []string{RoleGateway, RoleCore}
	}
	var gwRole, coreRole, storeRole, brokerRole bool
	for _, r := range cfg.Roles {
		switch r {
		case RoleGateway:
			gwRole = true
		case RoleCore:
			coreRole = true
		case RoleStore:
			storeRole = true
		case RoleBroker:
			brokerRole = true
		default:
			return nil, fmt.Errorf("node: unknown role %q (want gateway, core, store or broker)", r)
		}
	}
	switch {
	case gwRole && !coreRole && (len(cfg.Brokers) == 0 || len(cfg.Redis) == 0):
		return nil, errors.New("node: a gateway-only process needs Brokers and Redis (the core's)")
	case coreRole && !gwRole && len(cfg.Redis) == 0:
		return nil, errors.New("node: a core-only process needs Redis to reach the gateways")
	case brokerRole && len(cfg.Brokers) > 0:
		return nil, errors.New("node: the broker role runs the embedded broker; it takes no Brokers")
	case storeRole && cfg.Store != "":
		return nil, errors.New("node: the store role serves the embedded store; it takes no remote Store")
	case cfg.Store != "" && len(cfg.Scylla.Hosts) > 0:
		return nil, errors.New("node: a remote Store and Scylla are two stores; give one")
	case cfg.Store != "" && !coreRole:
		return nil, errors.New("node: Store (a remote store) is for the core role")
	}
	if cfg.GatewayAddr == "" {
		cfg.GatewayAddr = "127.0.0.1:8080"
	}
	if cfg.APIAddr == "" {
		cfg.APIAddr = "127.0.0.1:8081"
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = "127.0.0.1:9090"
	}
	if cfg.StoreAddr == "" {
		cfg.StoreAddr = "127.0.0.1:7070"
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 8
	}
	if cfg.NodeID == 0 {
		cfg.NodeID = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n = &Node{cfg: cfg, log: cfg.Logger}
	defer func() {
		if err != nil {
			n.Close(context.Background())
			n = nil
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return n, fmt.Errorf("node: data dir: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Identity. Only a core creates the key; a gateway-only process must
	// find the one its core signs with.
	if !gwRole && !coreRole {
		// A store or broker process: no tokens, no routing.
		return n, n.startBackends(ctx, storeRole, brokerRole, reg)
	}
	keyPath := filepath.Join(cfg.DataDir, "keys", "token.key")
	var key ed25519.PrivateKey
	if coreRole {
		key, err = auth.LoadOrCreateKey(keyPath)
	} else {
		key, err = auth.LoadKey(keyPath)
	}
	if err != nil {
		return n, fmt.Errorf("node: token key: %w", err)
	}
	if n.signer, err = auth.NewSigner(key); err != nil {
		return n, err
	}
	verifier, err := auth.NewVerifier(n.signer.Public())
	if err != nil {
		return n, err
	}
	authn := Authenticator{V: verifier}

	// Routing.
	var registry routing.Registry
	var router routing.Router
	if len(cfg.Redis) > 0 {
		// A Redis that comes back may have lost every route: the gateway
		// re-registers its connections at once rather than at its next
		// periodic refresh. (n.gw is set before the gateway subscribes, and
		// the hook only runs after a subscription came back.)
		onResub := func(string) {
			if n.gw != nil {
				n.gw.RefreshRoutes()
			}
		}
		if n.redis, err = routing.NewRedis(routing.RedisConfig{Addrs: cfg.Redis, OnResubscribe: onResub,
			Username: cfg.RedisUser, Password: cfg.RedisPassword, TLS: cfg.RedisTLS}); err != nil {
			return n, fmt.Errorf("node: redis: %w", err)
		}
		registry, router, n.presence, n.receipts, n.members = n.redis, n.redis, n.redis, n.redis, n.redis
		registerRedisStats(reg, n.redis)
	} else {
		mem := routing.NewMemory()
		registry, router, n.presence, n.receipts = mem, mem, mem, mem
	}

	// Bus.
	if len(cfg.Brokers) == 0 {
		if err := n.startBroker(ctx); err != nil {
			return n, err
		}
	} else {
		n.brokers = cfg.Brokers
	}
	bc := bus.Config{Brokers: n.brokers, ClientID: "chatd"}
	if n.emb != nil {
		bc.Dialer = n.emb.Dial // this process's clients reach its broker in memory
	}
	if len(cfg.Brokers) > 0 {
		bc.TLS, bc.SASL = cfg.KafkaTLS, cfg.KafkaSASL
		admin, err := n.newClient(bc.ClientOpts())
		if err != nil {
			return n, err
		}
		if err := bus.EnsureTopics(ctx, admin, int32(cfg.Partitions), int16(cfg.Replication), bus.TopicInbound, bus.TopicEvents); err != nil {
			return n, fmt.Errorf("node: topics: %w", err)
		}
	}

	if storeRole {
		if err := n.startStore(reg); err != nil {
			return n, err
		}
	}
	if coreRole {
		if err := n.startCore(bc, reg, registry, router, authn); err != nil {
			return n, err
		}
	}
	if gwRole {
		if err := n.startGateway(bc, reg, registry, router, authn); err != nil {
			return n, err
		}
	}
	if err := n.startAdmin(reg); err != nil {
		return n, err
	}
	n.log.Info("chatd started", "roles", cfg.Roles, "gateway", n.GatewayURL(), "api", n.APIURL(), "admin", n.AdminAddr(),
		"data_dir", cfg.DataDir, "brokers", n.brokers, "redis", cfg.Redis, "dev", cfg.Dev)
	return n, nil
}

// startBackends runs a process with only the store and/or broker roles.
func (n *Node) startBackends(ctx context.Context, storeRole, brokerRole bool, reg *prometheus.Registry) error {
	if brokerRole {
		if err := n.startBroker(ctx); err != nil {
			return err
		}
	}
	if storeRole {
		if err := n.startStore(reg); err != nil {
			return err
		}
	}
	if err := n.startAdmin(reg); err != nil {
		return err
	}
	n.log.Info("chatd started", "roles", n.cfg.Roles, "store", n.StoreAddr(), "brokers", n.brokers, "admin", n.AdminAddr(), "data_dir", n.cfg.DataDir)
	return nil
}

// startBroker starts the embedded broker in DataDir/kafka and creates the
// chat topics on it.
func (n *Node) startBroker(ctx context.Context) error {
	var err error
	n.emb, err = bus.StartEmbedded(bus.EmbeddedOptions{
		DataDir:    filepath.Join(n.cfg.DataDir, "kafka"),
		Port:       n.cfg.KafkaPort,
		Partitions: int32(n.cfg.Partitions),
	})
	if err != nil {
		return fmt.Errorf("node: embedded kafka: %w", err)
	}
	n.brokers = n.emb.Addrs()
	admin, err := n.newClient(bus.Config{Brokers: n.brokers, ClientID: "chatd", Dialer: n.emb.Dial}.ClientOpts())
	if err != nil {
		return err
	}
	if err := bus.EnsureTopics(ctx, admin, int32(n.cfg.Partitions), 1, bus.TopicInbound, bus.TopicEvents); err != nil {
		return fmt.Errorf("node: topics: %w", err)
	}
	return nil
}

// openStore opens the embedded store in DataDir/store (once per process:
// the store and core roles of one process share it).
func (n *Node) openStore(reg *prometheus.Registry) error {
	if n.store != nil {
		return nil
	}
	pst, err := store.OpenPebble(filepath.Join(n.cfg.DataDir, "store"), store.PebbleOptions{Logger: pebbleLogger{n.cfg.Logger.With("component", "pebble")}})
	if err != nil {
		return fmt.Errorf("node: store: %w", err)
	}
	n.store = instrument(pst, reg)
	return nil
}

// startStore serves the embedded store to other processes' cores.
func (n *Node) startStore(reg *prometheus.Registry) error {
	if err := n.openStore(reg); err != nil {
		return err
	}
	var err error
	if n.stLn, err = net.Listen("tcp", n.cfg.StoreAddr); err != nil {
		return fmt.Errorf("node: store listener: %w", err)
	}
	// No WriteTimeout: a Commit answers only after its fsync.
	n.stSrv = &http.Server{
		Handler:           remote.Handler(n.store),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       5 * time.Minute,
	}
	go func() { _ = n.stSrv.Serve(n.stLn) }()
	return nil
}

// startCore starts the messages and fanout consumers and the HTTP API, on
// the embedded store or on the remote one Config.Store names.
func (n *Node) startCore(bc bus.Config, reg *prometheus.Registry, registry routing.Registry, router routing.Router, authn Authenticator) error {
	cfg := n.cfg
	if len(cfg.Scylla.Hosts) > 0 {
		sc, err := scylla.Open(context.Background(), cfg.Scylla)
		if err != nil {
			return fmt.Errorf("node: store: %w", err)
		}
		n.store = instrument(sc, reg)
	} else if cfg.Store != "" {
		cl, err := remote.Dial(cfg.Store, remote.ClientOptions{})
		if err != nil {
			return fmt.Errorf("node: store: %w", err)
		}
		n.store = instrument(cl, reg)
	} else if err := n.openStore(reg); err != nil {
		return err
	}
	evProd, err := n.newClient(bc.ProducerOpts())
	if err != nil {
		return err
	}
	ids, err := snowflake.New(cfg.NodeID)
	if err != nil {
		return err
	}
	mcfg := cfg.Messages
	mcfg.Logger = cfg.Logger.With("component", "messages")
	mcfg.Metrics = messages.NewMetrics(reg)
	n.proc, err = messages.New(mcfg, messages.Deps{Store: n.store, Router: router, IDs: ids, Events: evProd, Presence: n.presence})
	if err != nil {
		return err
	}
	fan := fanout.New(fanout.Config{Logger: cfg.Logger.With("component", "fanout"), Metrics: reg, PullAbove: cfg.Messages.PullAbove},
		fanout.Deps{Store: n.store, Registry: registry, Router: router, Receipts: n.receipts, Members: n.members})
	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chatd_kafka_lag", Help: "Records between a consumer's position and the partition's high watermark, at its last poll."}, []string{"group", "topic", "partition"})
	reg.MustRegister(lag)

	// On a partition move: hand over exactly where handling stopped, and
	// make the next owner (maybe this process again) reload seqs.
	assigned := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chatd_kafka_assigned_partitions", Help: "Partitions this process's consumer owns, by group."}, []string{"group"})
	reg.MustRegister(assigned)
	count := func(group string, sign float64) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			for _, ps := range m {
				assigned.WithLabelValues(group).Add(sign * float64(len(ps)))
			}
		}
	}
	msgAssigned, msgGone := count("chatd-messages", 1), count("chatd-messages", -1)
	fanAssigned, fanGone := count("chatd-fanout", 1), count("chatd-fanout", -1)
	// The processor writes group receipt pointers behind: its offsets hold
	// each partition's commit below the records it has not written yet.
	msgOffs, fanOffs := consume.NewDeferredOffsets(n.proc), consume.NewOffsets()
	msgCons, err := n.newClient(append(bc.ConsumerOpts("chatd-messages", bus.TopicInbound),
		kgo.OnPartitionsAssigned(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
			msgAssigned(ctx, cl, m)
			n.proc.Invalidate()
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
			consume.CommitOnRevoke(ctx, cl, msgOffs, m)
			msgGone(ctx, cl, m)
			n.proc.Invalidate()
		}),
		kgo.OnPartitionsLost(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
			// Nothing can be committed for lost partitions; writing what is
			// held is still right (pointers only move forward) and spares
			// the next owner nothing but work it redoes anyway.
			_, _ = n.proc.Flush(ctx, true)
			msgOffs.Forget(m)
			msgGone(ctx, cl, m)
			n.proc.Invalidate()
		})))
	if err != nil {
		return err
	}
	fanCons, err := n.newClient(append(bc.ConsumerOpts("chatd-fanout", bus.TopicEvents),
		kgo.OnPartitionsAssigned(fanAssigned),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
			consume.CommitOnRevoke(ctx, cl, fanOffs, m)
			fanGone(ctx, cl, m)
		}),
		kgo.OnPartitionsLost(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
			fanOffs.Forget(m)
			fanGone(ctx, cl, m)
		})))
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.run(runCtx, msgCons, "chatd-messages", msgOffs, lag, n.proc.Handle)
	n.run(runCtx, fanCons, "chatd-fanout", fanOffs, lag, fan.Handle)

	var minter api.Minter
	if cfg.Dev {
		minter = n.signer
	}
	if n.apiLn, err = net.Listen("tcp", cfg.APIAddr); err != nil {
		return fmt.Errorf("node: api listener: %w", err)
	}
	n.apiSrv = &http.Server{
		Handler:           api.Handler(api.Config{Dev: cfg.Dev, Logger: cfg.Logger.With("component", "api")}, api.Deps{Store: n.store, Verifier: authn, Minter: minter, Presence: n.presence, Receipts: n.receipts}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	go func() { _ = n.apiSrv.Serve(n.apiLn) }()
	return nil
}

// startGateway starts the WebSocket gateway.
func (n *Node) startGateway(bc bus.Config, reg *prometheus.Registry, registry routing.Registry, router routing.Router, authn Authenticator) error {
	gwProd, err := n.newClient(append(bc.ProducerOpts(), bus.GatewayBufferOpts(n.cfg.ProduceBuffer, 0)...))
	if err != nil {
		return err
	}
	gcfg := n.cfg.Gateway
	gcfg.Addr = n.cfg.GatewayAddr
	if gcfg.Logger == nil {
		gcfg.Logger = n.cfg.Logger.With("component", "gateway")
	}
	n.gw, err = gateway.New(gcfg, gateway.Deps{
		Auth:     authn,
		Producer: bus.NewProducer(gwProd, bus.TopicInbound),
		Registry: registry,
		Router:   router,
		Presence: n.presence,
		Metrics:  reg,
	})
	if err != nil {
		return fmt.Errorf("node: gateway: %w", err)
	}
	if err := n.gw.Start(); err != nil {
		return fmt.Errorf("node: gateway: %w", err)
	}
	return nil
}

// startAdmin serves metrics, pprof and health.
func (n *Node) startAdmin(reg *prometheus.Registry) error {
	if n.cfg.AdminAddr == "off" {
		return nil
	}
	var err error
	if n.admLn, err = net.Listen("tcp", n.cfg.AdminAddr); err != nil {
		return fmt.Errorf("node: admin listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	n.admSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = n.admSrv.Serve(n.admLn) }()
	return nil
}

func (n *Node) newClient(opts []kgo.Opt) (*kgo.Client, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("node: kafka client: %w", err)
	}
	n.clients = append(n.clients, cl)
	return cl, nil
}

func (n *Node) run(ctx context.Context, cl *kgo.Client, group string, offs *consume.Offsets, lag *prometheus.GaugeVec, h consume.Handler) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		err := consume.Run(ctx, cl, consume.Config{
			Offsets: offs,
			Logger:  n.log.With("component", group),
			OnBatch: func(_ int, fs kgo.Fetches) {
				fs.EachPartition(func(p kgo.FetchTopicPartition) {
					if len(p.Records) == 0 {
						return
					}
					last := p.Records[len(p.Records)-1].Offset
					lag.WithLabelValues(group, p.Topic, strconv.Itoa(int(p.Partition))).Set(float64(p.HighWatermark - last - 1))
				})
			},
		}, h)
		if err != nil && !errors.Is(err, context.Canceled) {
			n.log.Error("consumer stopped", "group", group, "err", err)
		}
	}()
}

// GatewayURL is the WebSocket URL clients dial.
func (n *Node) GatewayURL() string {
	if n.gw == nil {
		return ""
	}
	return "ws://" + n.gw.Addr().String() + "/chat/v1/ws"
}

// APIURL is the HTTP API's base URL.
func (n *Node) APIURL() string {
	if n.apiLn == nil {
		return ""
	}
	return "http://" + n.apiLn.Addr().String()
}

// AdminAddr is the admin listener's address ("" when off).
func (n *Node) AdminAddr() string {
	if n.admLn == nil {
		return ""
	}
	return n.admLn.Addr().String()
}

// StoreAddr is the store role's listener address ("" without that role).
func (n *Node) StoreAddr() string {
	if n.stLn == nil {
		return ""
	}
	return n.stLn.Addr().String()
}

// Brokers are the Kafka brokers the node uses (the embedded one's address
// when it started one).
func (n *Node) Brokers() []string { return n.brokers }

// Signer mints tokens with the node's key.
func (n *Node) Signer() *auth.Signer { return n.signer }

// Store is the node's message store (tests inspect it).
func (n *Node) Store() store.Store { return n.store }

// Gateway is the node's gateway.
func (n *Node) Gateway() *gateway.Gateway { return n.gw }

// Close stops the node: connections get GOAWAY shutting_down, consumers
// finish their batch, then clients, broker and store close. Idempotent.
func (n *Node) Close(ctx context.Context) {
	n.once.Do(func() {
		if n.gw != nil {
			_ = n.gw.Close(ctx)
		}
		if n.apiSrv != nil {
			_ = n.apiSrv.Shutdown(ctx)
		}
		if n.admSrv != nil {
			_ = n.admSrv.Shutdown(ctx)
		}
		if n.stSrv != nil {
			// Waits for calls in progress (a Commit until its fsync).
			_ = n.stSrv.Shutdown(ctx)
		}
		if n.cancel != nil {
			n.cancel()
		}
		n.wg.Wait()
		for _, cl := range n.clients {
			cl.CloseAllowingRebalance()
		}
		if n.proc != nil {
			n.proc.Close()
		}
		if n.emb != nil {
			_ = n.emb.Close()
		}
		if n.store != nil {
			_ = n.store.Close()
		}
		if n.redis != nil {
			n.redis.Close()
		}
	})
}

// Authenticator adapts auth.Verifier to the gateway's and API's interface.
type Authenticator struct{ V *auth.Verifier }

// Authenticate verifies token at now.
func (a Authenticator) Authenticate(token []byte, now time.Time) (string, wire.Code) {
	c, err := a.V.Verify(token, now)
	switch {
	case err == nil:
		return c.User, 0
	case errors.Is(err, auth.ErrExpired):
		return "", wire.CodeTokenExpired
	default:
		return "", wire.CodeTokenInvalid
	}
}

// registerRedisStats exports the Redis client's counters (routing.RedisStats),
// so an operator can read Redis round trips per message or per heartbeat
// interval from any gateway or core process, and chatbench reports them.
func registerRedisStats(reg *prometheus.Registry, r *routing.Redis) {
	for _, c := range []struct {
		name, help string
		v          func(routing.RedisStats) uint64
	}{
		{"chatd_redis_round_trips_total", "Pipelined writes to Redis this process waited on (each Do or DoMulti; a client-internal retry after a broken connection is not counted).", func(s routing.RedisStats) uint64 { return s.RoundTrips }},
		{"chatd_redis_commands_total", "Redis commands in those round trips.", func(s routing.RedisStats) uint64 { return s.Commands }},
		{"chatd_redis_published_total", "Batches published to gateways or topics that Redis accepted.", func(s routing.RedisStats) uint64 { return s.Published }},
		{"chatd_redis_received_total", "Batches received from this process's subscriptions.", func(s routing.RedisStats) uint64 { return s.Received }},
		{"chatd_redis_resubscribes_total", "Subscriptions re-established after their connection was lost.", func(s routing.RedisStats) uint64 { return s.Resubscribes }},
		{"chatd_redis_reaped_total", "Expired routes deleted after a lookup found them.", func(s routing.RedisStats) uint64 { return s.Reaped }},
	} {
		v := c.v
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help}, func() float64 { return float64(v(r.Stats())) }))
	}
}

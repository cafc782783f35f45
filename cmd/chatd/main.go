// Command chatd runs the chat backend. With no flags it runs every role in
// one process on its embedded defaults (in-process Kafka via kfake, a Pebble
// store and an in-process registry) with its state in --data-dir.
//
//	chatd [flags]                      run the server
//	chatd token --user U [flags]       mint a token with the data dir's key
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/chatd-dev/chatd/cmd/internal/sysmon"
	"github.com/chatd-dev/chatd/core/auth"
	"github.com/chatd-dev/chatd/core/bus"
	"github.com/chatd-dev/chatd/core/messages"
	"github.com/chatd-dev/chatd/core/node"
	"github.com/chatd-dev/chatd/core/store/scylla"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "token" {
		if err := tokenCmd(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "chatd token:", err)
			os.Exit(2)
		}
		return
	}
	if err := serve(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "chatd:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("chatd", flag.ContinueOnError)
	var (
		dataDir   = fs.String("data-dir", "chatd-data", "directory for the store, the embedded Kafka log and the token key")
		gwAddr    = fs.String("gateway-addr", "127.0.0.1:8080", "WebSocket listener (path /chat/v1/ws)")
		apiAddr   = fs.String("api-addr", "127.0.0.1:8081", "HTTP API listener")
		adminAddr = fs.String("admin-addr", "127.0.0.1:9090", "admin listener: /metrics, /debug/pprof/, /healthz (\"off\" disables)")
		roles     = fs.String("roles", "all", "roles to run: all, or a comma list of gateway, core, store and broker (split gateway/core need --redis; a gateway-only process needs --brokers and the core's --data-dir for the token key; store and broker serve the embedded store and Kafka broker to other processes)")
		storeURL  = fs.String("store", "", "a store process's address (host:port) for the core role; empty opens the embedded store in --data-dir")
		scyllaH   = fs.String("scylla", "", "comma-separated ScyllaDB/Cassandra hosts for the core's store (user and password from CHATD_SCYLLA_USER, CHATD_SCYLLA_PASSWORD); empty: the embedded store")
		scyllaKS  = fs.String("scylla-keyspace", "chatd", "keyspace (created with --scylla-replication if missing; migrations applied at start)")
		scyllaRF  = fs.Int("scylla-replication", 3, "replication factor when chatd creates the keyspace")
		storeAddr = fs.String("store-addr", "127.0.0.1:7070", "listener of the store role (no authentication: loopback or a private network only)")
		redis     = fs.String("redis", "", "comma-separated Redis addresses for the registry and router; empty keeps them in process")
		redisUser = fs.String("redis-user", "", "Redis ACL user (password from CHATD_REDIS_PASSWORD; a password alone is AUTH with the default user)")
		redisTLS  = fs.Bool("redis-tls", false, "connect to Redis with TLS (system roots, or --redis-ca)")
		redisCA   = fs.String("redis-ca", "", "PEM file of the CAs that sign Redis's certificate (implies --redis-tls)")
		reusePort = fs.Bool("reuseport", false, "set SO_REUSEPORT on the gateway listener so several gateway processes share one port")
		gwID      = fs.String("gateway-id", "", "gateway id in the registry (default: generated, unique per process start)")
		dev       = fs.Bool("dev", false, "dev mode: POST /dev/token on the API mints tokens for anyone (never in production)")
		brokers   = fs.String("brokers", "", "comma-separated Kafka brokers; empty runs an embedded broker in process")
		kafkaPort = fs.Int("kafka-port", 0, "embedded broker's loopback port (0: any free port)")
		kTLS      = fs.Bool("kafka-tls", false, "dial the --brokers with TLS (implied by --kafka-ca, --kafka-cert, --kafka-server-name)")
		kCA       = fs.String("kafka-ca", "", "PEM file of the CAs that sign the brokers' certificates (default: the system roots)")
		kCert     = fs.String("kafka-cert", "", "PEM client certificate for brokers that require mutual TLS (with --kafka-key)")
		kKey      = fs.String("kafka-key", "", "PEM key of --kafka-cert")
		kSNI      = fs.String("kafka-server-name", "", "name to verify in the brokers' certificates (default: the host dialled)")
		kSASL     = fs.String("kafka-sasl", "", "SASL mechanism: plain, scram-sha-256 or scram-sha-512 (password from CHATD_KAFKA_PASSWORD)")
		kUser     = fs.String("kafka-user", "", "SASL user")
		repl      = fs.Int("replication", 0, "replication factor of the chat topics when chatd creates them on --brokers (0: the brokers' default)")
		parts     = fs.Int("partitions", 8, "partitions of chat.inbound and chat.events when chatd creates them")
		maxGroup  = fs.Int("max-group-size", messages.DefaultMaxGroupSize, "most members a group may have")
		pullAbove = fs.Int("pull-above", messages.DefaultPullAbove, "groups with more members than this are channels: messages are pushed only to connections focused on them")
		behind    = fs.Duration("receipt-write-behind", messages.DefaultReceiptWriteBehind, "how long group receipt pointers are held before one store write each (negative: write every update at once)")
		leaseTTL  = fs.Duration("lease-ttl", 90*time.Second, "gateway's registry lease: renewed every third of it; a dead gateway's routes stop being used within it")
		heartbeat = fs.Duration("heartbeat", 30*time.Second, "heartbeat interval the gateway announces in WELCOME: clients PING at least this often (each PING costs a read and a write on both ends; see docs/benchmarks.md)")
		idleTO    = fs.Duration("idle-timeout", 0, "close an authenticated connection silent this long (0: 2.5 x --heartbeat)")
		prodBuf   = fs.Int("produce-buffer", 10000, "records a gateway holds for Kafka while the brokers are slow or unreachable; beyond it SEND gets ERROR unavailable (retryable)")
		nodeID    = fs.Uint("node-id", 1, "Snowflake node id (0-1023), unique among running chatd processes")
		logLevel  = fs.String("log-level", "info", "debug, info, warn or error")
		logJSON   = fs.Bool("log-json", false, "log JSON instead of text")
		gogc      = fs.Int("gogc", 0, "GC percent (0: automatic: 400 when the process runs the core role, else Go's default, and the GOGC environment variable wins over it; -1 turns the GC off)")
		maxprocs  = fs.Int("gomaxprocs", 0, "Ps for Go code (0: automatic: at least 4 when the process runs the core role, and the GOMAXPROCS environment variable wins over it)")
		steady    = fs.Bool("sysmon-steady", true, "keep the Go runtime's sysmon thread on its 10 ms period instead of a deep sleep that system calls keep waking (chatd re-executes itself once with GODEBUG="+sysmon.Setting+"; a schedtrace already in GODEBUG is left alone)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := flagsFromEnv(fs, os.LookupEnv); err != nil {
		return err
	}
	log, err := newLogger(*logLevel, *logJSON)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	if *steady {
		// Before anything is opened: the exec replaces this process.
		if err := sysmon.Steady(); err != nil {
			log.Warn("runtime: could not re-execute with a steady sysmon; going on without", "err", err)
		}
	}
	if *nodeID > 1023 {
		return errors.New("--node-id must be 0..1023")
	}
	cfg := node.Config{
		DataDir:       *dataDir,
		GatewayAddr:   *gwAddr,
		APIAddr:       *apiAddr,
		AdminAddr:     *adminAddr,
		Dev:           *dev,
		KafkaPort:     *kafkaPort,
		Store:         *storeURL,
		ProduceBuffer: *prodBuf,
		StoreAddr:     *storeAddr,
		Partitions:    *parts,
		NodeID:        uint16(*nodeID),
		Logger:        log,
		Messages:      messages.Config{MaxGroupSize: *maxGroup, PullAbove: *pullAbove, ReceiptWriteBehind: *behind},
	}
	if *scyllaH != "" {
		cfg.Scylla = scylla.Options{Hosts: strings.Split(*scyllaH, ","), Keyspace: *scyllaKS, Replication: *scyllaRF,
			Username: os.Getenv("CHATD_SCYLLA_USER"), Password: os.Getenv("CHATD_SCYLLA_PASSWORD")}
	}
	if *brokers != "" {
		cfg.Brokers = strings.Split(*brokers, ",")
		sec := bus.Security{TLS: *kTLS, CAFile: *kCA, CertFile: *kCert, KeyFile: *kKey, ServerName: *kSNI,
			SASL: *kSASL, User: *kUser, Password: os.Getenv("CHATD_KAFKA_PASSWORD")}
		if cfg.KafkaTLS, cfg.KafkaSASL, err = sec.Build(); err != nil {
			return err
		}
		cfg.Replication = *repl
	}
	if *redis != "" {
		cfg.Redis = strings.Split(*redis, ",")
		cfg.RedisUser, cfg.RedisPassword = *redisUser, os.Getenv("CHATD_REDIS_PASSWORD")
		if *redisTLS || *redisCA != "" {
			// The same file handling as Kafka's (system roots or a CA file).
			if cfg.RedisTLS, _, err = (bus.Security{TLS: true, CAFile: *redisCA}).Build(); err != nil {
				return fmt.Errorf("--redis-ca: %w", err)
			}
		}
	}
	if *roles != "all" {
		cfg.Roles = strings.Split(*roles, ",")
	}
	g, p := runtimeSettings(cfg.Roles, *gogc, *maxprocs, os.Getenv, runtime.NumCPU())
	log.Info("runtime", "settings", applyRuntime(g, p))
	cfg.Gateway.ReusePort = *reusePort
	cfg.Gateway.ID = *gwID
	cfg.Gateway.LeaseTTL = *leaseTTL
	cfg.Gateway.HeartbeatInterval = *heartbeat
	cfg.Gateway.IdleTimeout = *idleTO
	if cfg.Gateway.IdleTimeout == 0 {
		cfg.Gateway.IdleTimeout = *heartbeat * 5 / 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		return err
	}
	// Readiness line for scripts and tests (stdout, one line).
	fmt.Printf("chatd ready gateway=%s api=%s admin=%s kafka=%s store=%s\n", n.GatewayURL(), n.APIURL(), n.AdminAddr(), strings.Join(n.Brokers(), ","), n.StoreAddr())
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.Close(sctx)
	return nil
}

// flagsFromEnv sets every flag not given on the command line from the
// environment variable CHATD_<NAME> (upper case, "-" as "_"), so that a
// container or a systemd unit can configure chatd without arguments:
// CHATD_BROKERS=k1:9092,k2:9092 is --brokers k1:9092,k2:9092. The command
// line wins. A value the flag cannot parse is an error naming the variable.
func flagsFromEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		env := "CHATD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := lookup(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	return err
}

func tokenCmd(args []string) error {
	fs := flag.NewFlagSet("chatd token", flag.ContinueOnError)
	var (
		dataDir = fs.String("data-dir", "chatd-data", "chatd's data directory (its keys/token.key signs the token)")
		user    = fs.String("user", "", "user id (1-64 of A-Z a-z 0-9 . _ @ -)")
		device  = fs.String("device", "", "device id to bind the token to (optional)")
		ttl     = fs.Duration("ttl", 24*time.Hour, "token lifetime")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !auth.ValidUserID(*user) {
		return errors.New("--user must be 1-64 of A-Z a-z 0-9 . _ @ -")
	}
	key, err := auth.LoadOrCreateKey(filepath.Join(*dataDir, "keys", "token.key"))
	if err != nil {
		return err
	}
	s, err := auth.NewSigner(key)
	if err != nil {
		return err
	}
	tok, err := s.Mint(*user, *device, *ttl)
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}

func newLogger(level string, json bool) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	if json {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
}

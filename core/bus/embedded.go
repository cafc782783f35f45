package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Retention defaults of the embedded cluster, per partition.
//
// Retention deletes records whether or not a consumer has read them, so
// both bounds are sized to outlast any consumer lag worth surviving, while
// keeping a single binary's disk and memory bounded. Messages are durable in
// the message store, not in Kafka: the topics are a hand-off log.
//
//   - DefaultRetention (24h): a core or fanout that is down or stuck for
//     less than a day resumes without losing an acknowledged send.
//   - DefaultRetentionBytes (64 MiB): the hard bound when traffic is heavy;
//     ~240k messages of 200 bytes per partition, ~1.9M per topic, far more
//     than a healthy consumer lags. Worst case on disk: 2 topics x 8
//     partitions x (64 MiB + one 16 MiB segment) = 1.25 GiB. It also bounds
//     heap: kfake keeps an in-memory index entry per retained record batch
//     (a 72-byte struct; measured ~76 bytes of heap per batch), and with
//     ProducerLinger(0) a batch is often one message (~276 bytes for a
//     200-byte value), so the index can reach ~27% of the retained bytes:
//     ~280 MiB if all 16 partitions are full of single-message batches.
//     Kafka-like 256 MiB+ would multiply that.
//   - DefaultSegmentBytes (16 MiB): kfake, like Kafka, deletes whole segment
//     files only, so disk usage can exceed RetentionBytes by up to one
//     segment; smaller segments than Kafka's default (1 GiB, kfake 100 MiB)
//     keep that overshoot small.
//   - DefaultRetentionCheck (1 min): how often retention is applied;
//     between passes a partition can grow by what is produced in that time.
const (
	DefaultRetention      = 24 * time.Hour
	DefaultRetentionBytes = 64 << 20
	DefaultSegmentBytes   = 16 << 20
	DefaultRetentionCheck = time.Minute
)

// EmbeddedOptions configures StartEmbedded. The zero value is an in-memory
// cluster on a free loopback port with the defaults above.
type EmbeddedOptions struct {
	// Port is the loopback port to listen on; 0 picks a free one.
	Port int
	// DataDir, when set, makes the cluster persistent: records, topics and
	// committed group offsets are written there and reloaded on the next
	// start. Empty keeps everything in memory, record data included, so
	// the retention bounds then bound RAM.
	DataDir string
	// SyncWrites fsyncs every produced batch and group log entry before it
	// is acknowledged. Without it, kfake has already write(2)-ten each
	// batch to its segment file before acknowledging, so a killed process
	// loses nothing (the page cache survives it; TestKill checks both
	// modes), but an OS crash or power loss can lose recent records, as
	// with Kafka's default flush policy. Even with SyncWrites, kfake (this
	// version) never fsyncs directories, so a segment file created just
	// before a power loss may vanish, and it ignores the error of the
	// per-batch fsync.
	SyncWrites bool
	// Partitions of TopicInbound and TopicEvents when they are created; 0
	// means DefaultPartitions. Existing topics (reloaded from DataDir) keep
	// their partition count.
	Partitions int32
	// Retention is the maximum age of a record batch (by its max
	// timestamp, which the producer sets); 0 means DefaultRetention, < 0
	// means unlimited. Time retention trusts client timestamps, so
	// RetentionBytes is the bound that always holds.
	Retention time.Duration
	// RetentionBytes is the maximum log size per partition; 0 means
	// DefaultRetentionBytes, < 0 means unlimited.
	RetentionBytes int64
	// SegmentBytes is the segment file size at which the log rolls; 0
	// means DefaultSegmentBytes.
	SegmentBytes int64
	// RetentionCheck is the interval between retention passes; 0 means
	// DefaultRetentionCheck.
	RetentionCheck time.Duration
	// Logger receives kfake's warnings and errors; nil discards them.
	Logger *slog.Logger
}

// Embedded is a one-broker kfake cluster running in this process, listening
// on 127.0.0.1.
type Embedded struct {
	c      *kfake.Cluster
	log    *kfakeLogger
	dialer *inprocDialer
	addrs  []string
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	closeE error
}

// StartEmbedded starts the embedded cluster and makes sure TopicInbound and
// TopicEvents exist.
//
// Retention: kfake implements retention.ms and retention.bytes (topic
// configs, falling back to the broker's log.retention.ms and
// log.retention.bytes) in applyRetention, advancing the log start offset and
// deleting segment files that fell entirely below it. But it only runs them
// from a cleaner ticker that is armed when some topic has retention.* or
// cleanup.policy=compact set at the topic level (broker-level values alone
// never arm it), every log.cleaner.backoff.ms (default 1h), and that is not
// re-armed when topics are reloaded from disk. We therefore set our bounds as
// broker configs (so they apply to every topic and changing the options
// takes effect on restart, which persisted topic configs would not) and
// drive the passes ourselves with Cluster.ApplyRetention every
// RetentionCheck.
func StartEmbedded(o EmbeddedOptions) (*Embedded, error) {
	if o.Partitions <= 0 {
		o.Partitions = DefaultPartitions
	}
	retMs := int64(-1)
	switch {
	case o.Retention == 0:
		retMs = DefaultRetention.Milliseconds()
	case o.Retention > 0:
		retMs = max(o.Retention.Milliseconds(), 1)
	}
	retBytes := o.RetentionBytes
	switch {
	case retBytes == 0:
		retBytes = DefaultRetentionBytes
	case retBytes < 0:
		retBytes = -1
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.RetentionCheck <= 0 {
		o.RetentionCheck = DefaultRetentionCheck
	}

	log := &kfakeLogger{l: o.Logger}
	dialer := &inprocDialer{}
	opts := []kfake.Opt{
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			l, err := listenInproc(network, address, o.Logger)
			if err != nil {
				return nil, err
			}
			dialer.add(l)
			return l, nil
		}),
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(int(o.Partitions)),
		kfake.SeedTopics(o.Partitions, TopicInbound, TopicEvents),
		kfake.WithLogger(log),
		kfake.BrokerConfigs(map[string]string{
			"log.retention.ms":    strconv.FormatInt(retMs, 10),
			"log.retention.bytes": strconv.FormatInt(retBytes, 10),
			"log.segment.bytes":   strconv.FormatInt(o.SegmentBytes, 10),
		}),
	}
	if o.Port != 0 {
		opts = append(opts, kfake.Ports(o.Port))
	}
	if o.DataDir != "" {
		opts = append(opts, kfake.DataDir(o.DataDir))
		if o.SyncWrites {
			opts = append(opts, kfake.SyncWrites())
		}
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("bus: start embedded kafka: %w", err)
	}
	// Seed topics are skipped when state was reloaded from DataDir; create
	// any that the reloaded state lacks.
	for _, t := range []string{TopicInbound, TopicEvents} {
		if err := c.CreateTopic(t, o.Partitions, nil); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			c.Close()
			return nil, fmt.Errorf("bus: create %s: %w", t, err)
		}
	}
	e := &Embedded{
		c:      c,
		log:    log,
		dialer: dialer,
		addrs:  c.ListenAddrs(),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	c.ApplyRetention() // reloaded logs may exceed new, smaller bounds
	go e.retentionLoop(o.RetentionCheck)
	return e, nil
}

func (e *Embedded) retentionLoop(every time.Duration) {
	defer close(e.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.c.ApplyRetention()
		}
	}
}

// Addrs returns the broker addresses (host:port) to use as seed brokers.
func (e *Embedded) Addrs() []string { return append([]string(nil), e.addrs...) }

// Config returns a Config pointing at the embedded cluster. Its clients
// connect in memory (Dial); other processes connect to Addrs over TCP.
func (e *Embedded) Config() Config { return Config{Brokers: e.Addrs(), Dialer: e.Dial} }

// Dial connects to the embedded broker in memory when host is one of Addrs,
// and over TCP otherwise. It has kgo.Dialer's signature.
func (e *Embedded) Dial(ctx context.Context, network, host string) (net.Conn, error) {
	return e.dialer.DialContext(ctx, network, host)
}

// Close shuts the cluster down gracefully: it stops the retention passes
// and the listeners, applies offset commits already received, and with
// DataDir writes its full state (partition snapshots with log start
// offsets, producer sequence windows, groups, group sessions) and syncs and
// closes every file, so that the next start reloads quickly and exactly.
// (After a crash instead, kfake rebuilds from the segment files and logs:
// acknowledged records and commits are kept, but the log start offset is
// rounded down to the oldest remaining batch.) It returns an error if kfake
// reported one while persisting. Close clients first: a group member still
// connected is saved with the group and, on restart, the group waits for it
// (up to its session timeout) before rebalancing. Close is idempotent.
func (e *Embedded) Close() error {
	e.once.Do(func() {
		close(e.stop)
		<-e.done // ApplyRetention would block forever on a closed cluster
		e.log.capture()
		e.c.Close()
		e.closeE = e.log.captured()
	})
	return e.closeE
}

// kfakeLogger forwards kfake's warnings and errors to slog and, during
// Close, collects errors (kfake's Close reports persistence failures only
// through its logger).
type kfakeLogger struct {
	l         *slog.Logger
	mu        sync.Mutex
	capturing bool
	errs      []error
}

func (k *kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	if level != kfake.LogLevelError && level != kfake.LogLevelWarn {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if level == kfake.LogLevelError {
		k.mu.Lock()
		if k.capturing {
			k.errs = append(k.errs, errors.New(msg))
		}
		k.mu.Unlock()
	}
	if k.l == nil {
		return
	}
	sl := slog.LevelWarn
	if level == kfake.LogLevelError {
		sl = slog.LevelError
	}
	k.l.Log(context.Background(), sl, msg, "component", "kfake")
}

func (k *kfakeLogger) capture() {
	k.mu.Lock()
	k.capturing = true
	k.mu.Unlock()
}

func (k *kfakeLogger) captured() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.errs) == 0 {
		return nil
	}
	return fmt.Errorf("bus: embedded kafka close: %w", errors.Join(k.errs...))
}

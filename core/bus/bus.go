// Package bus is chatd's Kafka plumbing: topic names, client options shared
// by every component, an async producer for the gateway, topic creation and
// the embedded single-process cluster.
//
// Data flow: gateway -> TopicInbound (key = conversation) -> core -> store
// -> TopicEvents -> fanout -> gateway. The same franz-go code talks to the
// in-process kfake cluster of the embedded default (StartEmbedded) and to
// real brokers in production (Config.Brokers).
package bus

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
)

// Topic names.
const (
	// TopicInbound carries client sends from the gateways to the core,
	// keyed by conversation so that one conversation's messages stay in
	// order on one partition.
	TopicInbound = "chat.inbound"
	// TopicEvents carries committed events from the core to the fanout.
	TopicEvents = "chat.events"
)

// DefaultPartitions is the partition count of the chat topics when nothing
// else is configured. Partitions bound the parallelism of a consumer group,
// and a key's partition changes with the count, so it is chosen once, with
// headroom: 8 lets a group spread over up to 8 core processes.
const DefaultPartitions = 8

// Client tuning shared by ProducerOpts and ConsumerOpts. See those for why.
const (
	fetchMaxWait          = 500 * time.Millisecond
	recordDeliveryTimeout = 30 * time.Second
	sessionTimeout        = 10 * time.Second
	heartbeatInterval     = time.Second
)

// Config says how to reach the Kafka cluster. The zero value of every field
// but Brokers is usable.
type Config struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// ClientID names the client in broker logs and quotas; "" means
	// "chatd".
	ClientID string
	// TLS, when not nil, is used to dial the brokers.
	TLS *tls.Config
	// SASL, when not nil, authenticates every connection (for example
	// franz-go's pkg/sasl/scram or pkg/sasl/plain mechanisms).
	SASL sasl.Mechanism
	// Dialer, when not nil, opens the connections to the brokers instead
	// of a plain TCP dial (it cannot be combined with TLS). Embedded.Config
	// sets it so that clients in the broker's own process connect in
	// memory.
	Dialer func(ctx context.Context, network, host string) (net.Conn, error)
}

// ClientOpts returns the options every client needs: seed brokers, client
// id, and TLS and SASL when configured.
func (c Config) ClientOpts() []kgo.Opt {
	id := c.ClientID
	if id == "" {
		id = "chatd"
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(id),
	}
	if c.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(c.TLS))
	}
	if c.SASL != nil {
		opts = append(opts, kgo.SASL(c.SASL))
	}
	if c.Dialer != nil {
		opts = append(opts, kgo.Dialer(c.Dialer))
	}
	return opts
}

// ProducerOpts returns ClientOpts plus the producer settings, ready for
// kgo.NewClient. The settings favour latency and durability over
// throughput, since every record is a user waiting for an ack:
//
//   - acks=all (RequiredAcks(AllISRAcks)), franz-go's default, made explicit:
//     a send is acknowledged to the user only once every in-sync replica has
//     it.
//   - Idempotent writes stay on (franz-go's default): retries after a
//     network error cannot duplicate or reorder a partition's records.
//   - ProducerLinger(0): franz-go v1.22 lingers 10ms by default to grow
//     batches; we send as soon as a record is buffered. Records arriving
//     while a request is in flight still batch together (up to 5 requests
//     in flight per broker with idempotency), so throughput under load is
//     kept without adding latency when idle.
//   - No compression: records are small chat messages, a batch often holds
//     one of them, and compressing a few hundred bytes saves little while
//     costing CPU on both ends. (franz-go's default prefers snappy.)
//   - StickyKeyPartitioner(nil): murmur2 of the key, high bit masked, mod
//     partitions: the Java client's default, so a key (conversation) always
//     lands on the same partition, whatever the client language.
//   - RecordDeliveryTimeout(30s): franz-go's default is to retry forever,
//     which would leave a user's send unanswered while Kafka is down; after
//     30s the record fails (when it is safe to, see franz-go) and the client
//     is told to retry.
//
// Combining ProducerOpts and ConsumerOpts into one client is allowed (the
// shared options just repeat), but separate clients keep fetch and produce
// state apart and are recommended.
func (c Config) ProducerOpts() []kgo.Opt {
	return append(c.ClientOpts(),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.RecordDeliveryTimeout(recordDeliveryTimeout),
	)
}

// ConsumerOpts returns ClientOpts plus the settings of a group member
// consuming topics, ready for kgo.NewClient:
//
//   - ConsumerGroup(group) + ConsumeTopics(topics...).
//   - Balancers(CooperativeStickyBalancer()): incremental rebalances, so
//     adding or losing a member moves only the partitions that must move
//     and the others keep flowing. (franz-go's default too, made explicit.)
//   - DisableAutoCommit: the consumer commits offsets itself, after the
//     records' effects are durable (stored, produced), for at-least-once
//     processing. Commit in OnPartitionsRevoked too, or a rebalance replays
//     the uncommitted tail to the next owner.
//   - BlockRebalanceOnPoll: a rebalance waits until the consumer calls
//     AllowRebalance after processing a poll, so it never commits for
//     partitions it no longer owns. Keep the work per poll short (use
//     PollRecords to bound it): a blocked rebalance stalls the whole group.
//     Close such a client with CloseAllowingRebalance: Close leaves the
//     group, which waits for an AllowRebalance that may never come.
//   - FetchMaxWait(500ms): with FetchMinBytes at its default of 1 a parked
//     fetch is answered as soon as a record lands, on Kafka (delayed fetch
//     completes once min bytes are there) and on kfake (its fetch watcher
//     fires on the first produced batch, 01_fetch.go), so MaxWait adds no
//     delivery latency: it is only how long an idle fetch is parked. 500ms
//     (Java's default) keeps an idle consumer at 2 requests/s per broker and
//     bounds how long anything waiting on an in-flight fetch can stall.
//   - ConsumeResetOffset(AtStart): a new group starts at the beginning of
//     the retained log, and a committed offset that retention has already
//     deleted resumes at the log start: replay what is left rather than skip
//     it (processing is idempotent; skipping would lose messages).
//   - SessionTimeout(10s), HeartbeatInterval(1s): a crashed member's
//     partitions are reassigned after ~10s instead of the default 45s; the
//     conversations on them are stalled until then. Heartbeats run on their
//     own goroutine, so slow processing does not cause spurious expiry.
func (c Config) ConsumerOpts(group string, topics ...string) []kgo.Opt {
	return append(c.ClientOpts(),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topics...),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxWait(fetchMaxWait),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(sessionTimeout),
		kgo.HeartbeatInterval(heartbeatInterval),
	)
}

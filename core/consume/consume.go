// Package consume runs a Kafka consumer-group loop with at-least-once
// semantics: a polled batch is handled, then its offsets are marked, and
// only then may the group rebalance. Marked offsets are committed at most
// every CommitInterval, and always before partitions are given up
// (CommitOnRevoke), so a rebalance hands over exactly where handling
// stopped and a crash re-delivers at most CommitInterval of records
// (handlers are idempotent).
//
// Why not commit every batch: every commit is a broker write, and kfake
// (the embedded broker) appends each to its groups log and periodically
// rewrites that log inside its single request loop, stalling every
// produce and fetch for 100 ms and more when commits come hundreds of
// times a second.
package consume

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Handler processes one polled batch. It returns nil once every record's
// effects are durable (or deliberately dropped). An error makes Run retry
// the same batch after a backoff; offsets are not committed until the
// handler succeeds, so a crash re-delivers the batch to whichever instance
// owns the partitions next: handlers must be idempotent.
type Handler func(ctx context.Context, recs []*kgo.Record) error

// Config tunes Run. Zero values mean defaults.
type Config struct {
	MaxPollRecords int           // default 2,000
	CommitInterval time.Duration // default 250ms; see the package doc
	RetryMin       time.Duration // first retry backoff, default 50ms
	RetryMax       time.Duration // retry backoff cap, default 5s
	Logger         *slog.Logger  // default slog.Default()
	// Offsets tracks handled offsets; share it with the client's
	// OnPartitionsRevoked callback (CommitOnRevoke). nil: Run uses its own.
	Offsets *Offsets
	// OnBatch, when set, is called after each committed batch with its
	// size (metrics).
	OnBatch func(n int, fetches kgo.Fetches)
}

// Run polls cl until ctx is done or the client is closed. The client must be
// a group consumer created with kgo.BlockRebalanceOnPoll and
// kgo.DisableAutoCommit: Run commits after each handled batch and then
// allows rebalancing, so a partition never moves while one of its records
// is half handled.
func Run(ctx context.Context, cl *kgo.Client, c Config, h Handler) error {
	if c.MaxPollRecords <= 0 {
		c.MaxPollRecords = 2000
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 50 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = 250 * time.Millisecond
	}
	lastCommit := time.Now()
	offs := c.Offsets
	if offs == nil {
		offs = NewOffsets()
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	dirty := false // offsets marked but not committed
	stop := func() error {
		if dirty {
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = offs.Commit(fctx, cl)
			cancel()
		}
		cl.AllowRebalance()
		return ctx.Err()
	}
	var recs []*kgo.Record
	for {
		pollCtx, cancelPoll := ctx, context.CancelFunc(func() {})
		if dirty {
			// Wake up to commit even if no more records come.
			pollCtx, cancelPoll = context.WithTimeout(ctx, c.CommitInterval)
		}
		fetches := cl.PollRecords(pollCtx, c.MaxPollRecords)
		cancelPoll()
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return stop()
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				log.Warn("fetch error", "topic", t, "partition", p, "err", err)
			}
		})
		recs = recs[:0]
		fetches.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
		if dirty && len(recs) == 0 && time.Since(lastCommit) >= c.CommitInterval {
			if err := commit(ctx, cl, offs, c.RetryMin, c.RetryMax, log); err != nil {
				return stop()
			}
			lastCommit, dirty = time.Now(), false
		}
		if len(recs) > 0 {
			backoff := c.RetryMin
			for {
				err := h(ctx, recs)
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return stop()
				}
				log.Error("batch handler failed; retrying", "records", len(recs), "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					return stop()
				}
				backoff = min(backoff*2, c.RetryMax)
			}
			offs.mark(recs)
			dirty = true
			if time.Since(lastCommit) >= c.CommitInterval {
				if err := commit(ctx, cl, offs, c.RetryMin, c.RetryMax, log); err != nil {
					return stop()
				}
				lastCommit, dirty = time.Now(), false
			}
			if c.OnBatch != nil {
				c.OnBatch(len(recs), fetches)
			}
		}
		cl.AllowRebalance()
	}
}

// Offsets remembers, per partition, the last handled record not yet
// committed. Safe for concurrent use (Run and a revoke callback).
type Offsets struct {
	mu   sync.Mutex
	last map[topicPartition]*kgo.Record
}

type topicPartition struct {
	topic     string
	partition int32
}

// NewOffsets returns an empty tracker.
func NewOffsets() *Offsets { return &Offsets{last: map[topicPartition]*kgo.Record{}} }

func (o *Offsets) mark(recs []*kgo.Record) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range recs {
		k := topicPartition{r.Topic, r.Partition}
		if cur := o.last[k]; cur == nil || r.Offset > cur.Offset {
			o.last[k] = r
		}
	}
}

// Commit commits the handled offsets (the highest per partition) and
// forgets them once the broker accepted them.
func (o *Offsets) Commit(ctx context.Context, cl *kgo.Client) error {
	o.mu.Lock()
	recs := make([]*kgo.Record, 0, len(o.last))
	for _, r := range o.last {
		recs = append(recs, r)
	}
	o.mu.Unlock()
	if len(recs) == 0 {
		return nil
	}
	if err := cl.CommitRecords(ctx, recs...); err != nil {
		return err
	}
	o.mu.Lock()
	for _, r := range recs {
		k := topicPartition{r.Topic, r.Partition}
		if o.last[k] == r {
			delete(o.last, k)
		}
	}
	o.mu.Unlock()
	return nil
}

// commit commits the handled offsets, retrying transient failures. A
// failed commit is not fatal for correctness (the records would be handled
// again), but retrying keeps duplicate work low.
func commit(ctx context.Context, cl *kgo.Client, offs *Offsets, lo, hi time.Duration, log *slog.Logger) error {
	backoff := lo
	for {
		err := offs.Commit(ctx, cl)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("offset commit failed; retrying", "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, hi)
	}
}

// CommitOnRevoke commits the handled offsets of a client whose partitions
// are being revoked: call it from kgo.OnPartitionsRevoked with the Offsets
// given to Run. It runs while Run is not handling a batch, since Run
// blocks rebalances while it does. A failed commit only means re-delivery
// to the next owner.
func CommitOnRevoke(ctx context.Context, cl *kgo.Client, offs *Offsets) {
	_ = offs.Commit(ctx, cl)
}

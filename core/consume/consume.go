// Package consume runs a Kafka consumer-group loop with at-least-once
// semantics: a polled batch is handled, then its offsets are committed, and
// only then may the group rebalance.
package consume

import (
	"context"
	"log/slog"
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
	RetryMin       time.Duration // first retry backoff, default 50ms
	RetryMax       time.Duration // retry backoff cap, default 5s
	Logger         *slog.Logger  // default slog.Default()
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
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	var recs []*kgo.Record
	for {
		fetches := cl.PollRecords(ctx, c.MaxPollRecords)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			cl.AllowRebalance()
			return ctx.Err()
		}
		fetches.EachError(func(t string, p int32, err error) {
			log.Warn("fetch error", "topic", t, "partition", p, "err", err)
		})
		recs = recs[:0]
		fetches.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
		if len(recs) > 0 {
			backoff := c.RetryMin
			for {
				err := h(ctx, recs)
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					cl.AllowRebalance()
					return ctx.Err()
				}
				log.Error("batch handler failed; retrying", "records", len(recs), "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					cl.AllowRebalance()
					return ctx.Err()
				}
				backoff = min(backoff*2, c.RetryMax)
			}
			if err := commit(ctx, cl, recs, c.RetryMin, c.RetryMax, log); err != nil {
				cl.AllowRebalance()
				return err
			}
			if c.OnBatch != nil {
				c.OnBatch(len(recs), fetches)
			}
		}
		cl.AllowRebalance()
	}
}

// commit commits recs' offsets, retrying transient failures. A failed
// commit is not fatal for correctness (the batch would be handled again),
// but retrying keeps duplicate work low.
func commit(ctx context.Context, cl *kgo.Client, recs []*kgo.Record, lo, hi time.Duration, log *slog.Logger) error {
	backoff := lo
	for {
		err := cl.CommitRecords(ctx, recs...)
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

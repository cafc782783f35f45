// Package consume runs a Kafka consumer-group loop with at-least-once
// semantics: a polled batch is handled, then its offsets are marked, and
// only then may the group rebalance. Marked offsets are committed at most
// every CommitInterval, and always before partitions are given up
// (CommitOnRevoke), so a rebalance hands over exactly where handling
// stopped and a crash re-delivers at most CommitInterval of records
// (handlers are idempotent).
//
// Write-behind: a handler may make part of a record's effects durable
// later than its return (a Deferrer, e.g. the core's group receipt
// pointers). Offsets built with NewDeferredOffsets then commit each
// partition only below the earliest record whose effects are still held,
// and Run flushes the deferrer as its effects fall due and before it
// stops or gives partitions up, so a crash re-delivers every record whose
// effects were not durable yet, and nothing is lost.
//
// Why not commit every batch: every commit is a broker write, and kfake
// (the embedded broker) appends each to its groups log and periodically
// rewrites that log inside its single request loop, stalling every
// produce and fetch for 100 ms and more when commits come hundreds of
// times a second.
//
// A failed commit never holds the loop: Run tries again after a backoff,
// and polls and allows rebalances in between. A commit refused because the
// group moved to a new generation (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
// REBALANCE_IN_PROGRESS) can only succeed after this member rejoins, and
// with kgo.BlockRebalanceOnPoll it rejoins only once Run calls
// AllowRebalance: retrying in place would wait forever while the group
// hands the partitions to someone else.
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
	// Offsets from NewDeferredOffsets also make Run flush their Deferrer.
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
	held := false  // the deferrer holds effects not yet durable
	stop := func() error {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if offs.deferrer != nil {
			if _, err := offs.deferrer.Flush(fctx, true); err != nil {
				log.Warn("flushing held effects before stopping failed; their records will be re-delivered", "err", err)
			}
		}
		if dirty || held {
			_ = offs.Commit(fctx, cl)
		}
		cl.AllowRebalance()
		return ctx.Err()
	}
	// flush makes the deferrer's due effects durable. A failure keeps them
	// held (and their records uncommitted); the next round retries.
	flush := func() {
		if offs.deferrer == nil {
			return
		}
		h, err := offs.deferrer.Flush(ctx, false)
		if err != nil && ctx.Err() == nil {
			log.Warn("flushing held effects failed; retrying", "err", err)
		}
		if held && !h {
			dirty = true // the floor is gone: commit past it
		}
		held = h
	}
	// Commit failures back off here rather than in place (package doc).
	var retryAt time.Time
	backoff := c.RetryMin
	tryCommit := func() {
		if time.Now().Before(retryAt) {
			return
		}
		if err := offs.Commit(ctx, cl); err != nil {
			if ctx.Err() == nil {
				log.Warn("offset commit failed; retrying after a poll", "err", err, "backoff", backoff)
			}
			retryAt = time.Now().Add(backoff)
			backoff = min(backoff*2, c.RetryMax)
			return
		}
		lastCommit, dirty = time.Now(), false
		retryAt, backoff = time.Time{}, c.RetryMin
	}
	var recs []*kgo.Record
	for {
		pollCtx, cancelPoll := ctx, context.CancelFunc(func() {})
		if dirty || held {
			// Wake up to commit (or flush) even if no more records come.
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
		if held && len(recs) == 0 {
			flush()
		}
		// While effects are held, a commit may move up to a floor that
		// moved; Commit skips partitions whose floor did not.
		if (dirty || held) && len(recs) == 0 && time.Since(lastCommit) >= c.CommitInterval {
			tryCommit()
		}
		if len(recs) > 0 {
			retry := c.RetryMin
			for {
				err := h(ctx, recs)
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return stop()
				}
				log.Error("batch handler failed; retrying", "records", len(recs), "err", err, "backoff", retry)
				select {
				case <-time.After(retry):
				case <-ctx.Done():
					return stop()
				}
				retry = min(retry*2, c.RetryMax)
			}
			offs.mark(recs)
			dirty = true
			flush()
			if time.Since(lastCommit) >= c.CommitInterval {
				tryCommit()
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
	last map[TopicPartition]*kgo.Record
	// committed is the next offset last committed per partition, so a
	// commit held at a floor is not repeated while the floor stays.
	committed map[TopicPartition]int64
	deferrer  Deferrer
	floors    map[TopicPartition]kgo.EpochOffset
}

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// A Deferrer is a handler's write-behind: effects of handled records that
// it makes durable after its Handler returned.
type Deferrer interface {
	// Floors sets floors[tp], for each partition with held effects, to the
	// earliest record (offset and leader epoch) whose effects are not
	// durable yet. Partitions with none are left absent.
	Floors(floors map[TopicPartition]kgo.EpochOffset)
	// Flush makes durable the held effects that are due (all: every one)
	// and reports whether any remain held. On error, whatever it did not
	// make durable stays held.
	Flush(ctx context.Context, all bool) (held bool, err error)
}

// NewOffsets returns an empty tracker.
func NewOffsets() *Offsets {
	return &Offsets{last: map[TopicPartition]*kgo.Record{}, committed: map[TopicPartition]int64{}}
}

// NewDeferredOffsets returns an empty tracker that commits no partition
// past the floors d reports; Run flushes d (see the package doc).
func NewDeferredOffsets(d Deferrer) *Offsets {
	o := NewOffsets()
	o.deferrer, o.floors = d, map[TopicPartition]kgo.EpochOffset{}
	return o
}

func (o *Offsets) mark(recs []*kgo.Record) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range recs {
		k := TopicPartition{r.Topic, r.Partition}
		if cur := o.last[k]; cur == nil || r.Offset > cur.Offset {
			o.last[k] = r
		}
	}
}

// Commit commits the handled offsets (the highest per partition, or just
// below the deferrer's floor where it holds effects) and forgets them once
// the broker accepted them.
func (o *Offsets) Commit(ctx context.Context, cl *kgo.Client) error {
	o.mu.Lock()
	if o.deferrer != nil {
		clear(o.floors)
		o.deferrer.Floors(o.floors)
	}
	recs := make([]*kgo.Record, 0, len(o.last))
	for k, r := range o.last {
		if f, ok := o.floors[k]; ok && f.Offset <= r.Offset {
			// Commit up to the floor (exclusive): the record at the floor
			// and everything after it are re-delivered after a crash.
			if f.Offset <= o.committed[k] {
				continue // nothing new below the floor
			}
			recs = append(recs, &kgo.Record{Topic: k.Topic, Partition: k.Partition, Offset: f.Offset - 1, LeaderEpoch: f.Epoch})
			continue
		}
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
		k := TopicPartition{r.Topic, r.Partition}
		o.committed[k] = r.Offset + 1
		if o.last[k] == r {
			delete(o.last, k)
		}
	}
	o.mu.Unlock()
	return nil
}

// CommitOnRevoke flushes every held effect, commits the handled offsets of
// a client whose partitions are being revoked, and forgets the revoked
// ones: call it from kgo.OnPartitionsRevoked with the Offsets given to Run
// and the revoked partitions. It runs while Run is not handling a batch,
// since Run blocks rebalances while it does. A failed flush or commit only
// means re-delivery to the next owner.
func CommitOnRevoke(ctx context.Context, cl *kgo.Client, offs *Offsets, revoked map[string][]int32) {
	if offs.deferrer != nil {
		_, _ = offs.deferrer.Flush(ctx, true)
	}
	_ = offs.Commit(ctx, cl)
	offs.Forget(revoked)
}

// Forget drops what offs remembers of partitions this member no longer
// owns (revoked, or lost: call it from kgo.OnPartitionsLost too). A later
// commit must not carry their offsets: the new owner commits them, and an
// older offset committed after its would move the group back.
func (o *Offsets) Forget(parts map[string][]int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for t, ps := range parts {
		for _, p := range ps {
			k := TopicPartition{t, p}
			delete(o.last, k)
			delete(o.committed, k)
		}
	}
}

package bench

import (
	"context"
	"fmt"
	"maps"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/chatd-dev/chatd/wire"
)

// LatencyConfig is a 1:1 latency run: Pairs sender/receiver pairs, each in
// its own direct conversation, sending Rate messages per second in total on
// an open-loop schedule for Duration (after Warmup, which is not recorded).
type LatencyConfig struct {
	GatewayURL string
	APIURL     string
	Pairs      int
	Rate       float64
	Duration   time.Duration
	Warmup     time.Duration
	Drain      time.Duration // wait for stragglers after the last send (default 10s)
	BodySize   int           // bytes per message body (default 32)
}

// LatencyResult is what a latency run measured. Latencies are measured
// from each message's scheduled send time, not from when the sender got
// around to sending it, so a stalled sender cannot hide queueing
// (coordinated omission).
type LatencyResult struct {
	Rate             float64 `json:"rate"`
	Pairs            int     `json:"pairs"`
	IdleConns        int64   `json:"idle_conns"`
	GatewayProcesses int     `json:"gateway_processes"`
	DurationSec      float64 `json:"duration_seconds"`
	Sent             int64   `json:"sent"`
	Acked            int64   `json:"acked"`
	Delivered        int64   `json:"delivered"`
	Lost             int64   `json:"lost"`
	Duplicates       int64   `json:"duplicates"`
	// Errors counts ERROR frames the senders got, by code name (a
	// rate_limited here means the run was misconfigured).
	Errors       map[string]int64 `json:"errors,omitempty"`
	AckP50ms     float64          `json:"ack_p50_ms"`
	AckP99ms     float64          `json:"ack_p99_ms"`
	AckMaxms     float64          `json:"ack_max_ms"`
	DeliverP50ms float64          `json:"deliver_p50_ms"`
	DeliverP90ms float64          `json:"deliver_p90_ms"`
	DeliverP99ms float64          `json:"deliver_p99_ms"`
	DeliverP999  float64          `json:"deliver_p999_ms"`
	DeliverMaxms float64          `json:"deliver_max_ms"`
	AchievedRate float64          `json:"achieved_rate"`
	// MaxRateP99Under100ms is set by --find-max: the highest rate tried
	// whose deliver P99 stayed under 100 ms with nothing lost.
	MaxRateP99Under100ms float64 `json:"max_rate_p99_under_100ms,omitempty"`

	// CPU is what each part of the topology used during the run, in
	// percent of one CPU ("bench" is chatbench itself: the senders and
	// receivers; "machine" counts everything, the kernel included).
	CPU map[string]float64 `json:"cpu_percent,omitempty"`
	// Sched is, per part, how often its threads were put on a CPU and how
	// long each waited for one on average: with every process of the run
	// sharing the CPUs, each hop of a message pays that wait.
	Sched map[string]SchedUse `json:"sched,omitempty"`
	// RedisRoundTripsPerMsg and RedisCommandsPerMsg are the Redis round
	// trips and commands of every chatd process together (their
	// chatd_redis_*_total counters) over the whole run, warm-up, the
	// pairs' connection setup and lease renewals included, divided by the
	// messages sent. Absent when the topology has no Redis.
	RedisRoundTripsPerMsg float64 `json:"redis_round_trips_per_msg,omitempty"`
	RedisCommandsPerMsg   float64 `json:"redis_commands_per_msg,omitempty"`
	// SchedAutogroup is kernel.sched_autogroup_enabled during the run (-1:
	// unknown). With 1, CPU is split between sessions first, and a busy
	// process in another session stalls the whole pipeline at once
	// (kernel-tuning/gateway.conf).
	SchedAutogroup int `json:"sched_autogroup_enabled"`

	// Timeline is deliver latency by scheduled send time, one point per
	// TimelineStep of the measured period: it shows whether a tail comes
	// from steady queueing or from periodic stalls.
	Timeline []LatencyPoint `json:"timeline,omitempty"`

	// AckHist and DeliverHist are the latency histograms (µs).
	AckHist     *hdrhistogram.Histogram `json:"-"`
	DeliverHist *hdrhistogram.Histogram `json:"-"`
}

// TimelineStep is the width of one LatencyResult.Timeline point.
const TimelineStep = 250 * time.Millisecond

// LatencyPoint is one step of LatencyResult.Timeline: messages scheduled in
// [T, T+TimelineStep) seconds after measuring began.
type LatencyPoint struct {
	T         float64 `json:"t"`
	Delivered int64   `json:"delivered"`
	P99ms     float64 `json:"deliver_p99_ms"`
	Maxms     float64 `json:"deliver_max_ms"`
}

type latRun struct {
	cfg       LatencyConfig
	start     time.Time
	warmupN   int64
	sched     []atomic.Int64 // message k's scheduled send time, ns since start
	acked     []atomic.Bool
	delivered []atomic.Bool
	nAcked    atomic.Int64
	nDeliv    atomic.Int64
	nDup      atomic.Int64
	mu        sync.Mutex
	errs      map[string]int64
	ackH      *hdrhistogram.Histogram
	delH      *hdrhistogram.Histogram
	steps     []*hdrhistogram.Histogram // deliver latency per TimelineStep (µs), under mu
}

type pair struct {
	conv     uint64
	from, to *Conn
}

// RunLatency runs the scenario against a running chatd.
func RunLatency(ctx context.Context, cfg LatencyConfig) (*LatencyResult, error) {
	if cfg.Rate <= 0 {
		return nil, fmt.Errorf("rate must be > 0")
	}
	if cfg.Pairs <= 0 {
		// Each sender stays at 25 msg/s, half the gateway's per-connection
		// flood limit (50 frames/s): a person types far slower, and a
		// sender over the limit measures the limiter, not the path.
		cfg.Pairs = int(math.Ceil(cfg.Rate / 25))
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 10 * time.Second
	}
	if cfg.BodySize <= 0 {
		cfg.BodySize = 32
	}
	total := int64(cfg.Rate * (cfg.Warmup + cfg.Duration).Seconds())
	r := &latRun{
		cfg:       cfg,
		warmupN:   int64(cfg.Rate * cfg.Warmup.Seconds()),
		sched:     make([]atomic.Int64, total),
		acked:     make([]atomic.Bool, total),
		delivered: make([]atomic.Bool, total),
		errs:      map[string]int64{},
		ackH:      hdrhistogram.New(1, 120_000_000, 3), // µs
		delH:      hdrhistogram.New(1, 120_000_000, 3),
	}
	for range int(math.Ceil(float64(cfg.Duration) / float64(TimelineStep))) {
		r.steps = append(r.steps, hdrhistogram.New(1, 120_000_000, 2))
	}
	pairs := make([]pair, cfg.Pairs)
	stamp := strconv.FormatInt(time.Now().UnixNano()%1_000_000_000, 36)
	for i := range pairs {
		a, b := fmt.Sprintf("lat%s-a%d", stamp, i), fmt.Sprintf("lat%s-b%d", stamp, i)
		ta, err := DevToken(ctx, cfg.APIURL, a, "bench")
		if err != nil {
			return nil, err
		}
		tb, err := DevToken(ctx, cfg.APIURL, b, "bench")
		if err != nil {
			return nil, err
		}
		if pairs[i].conv, err = OpenDirect(ctx, cfg.APIURL, ta, b); err != nil {
			return nil, err
		}
		if pairs[i].from, err = Dial(ctx, cfg.GatewayURL, ta, "bench"); err != nil {
			return nil, err
		}
		if pairs[i].to, err = Dial(ctx, cfg.GatewayURL, tb, "bench"); err != nil {
			return nil, err
		}
	}
	defer func() {
		for _, p := range pairs {
			p.from.Close()
			p.to.Close()
		}
	}()
	var readers sync.WaitGroup
	for _, p := range pairs {
		readers.Add(2)
		go func() { defer readers.Done(); r.readLoop(p.from, true) }()
		go func() { defer readers.Done(); r.readLoop(p.to, false) }()
	}

	body := make([]byte, cfg.BodySize)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	interval := float64(time.Second) / cfg.Rate
	r.start = time.Now()
	var sent int64
	var frame []byte
	var cmid []byte
	for k := int64(0); k < total; k++ {
		at := time.Duration(float64(k) * interval)
		if d := at - time.Since(r.start); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		r.sched[k].Store(int64(at))
		p := &pairs[k%int64(len(pairs))]
		cmid = strconv.AppendInt(cmid[:0], k, 10)
		s := wire.Send{ConvID: p.conv, ClientMsgID: cmid, Kind: wire.KindText, Body: body}
		frame = s.Append(frame[:0], 0)
		if err := p.from.Write(frame); err != nil {
			return nil, fmt.Errorf("send: %w", err)
		}
		sent++
	}
	sendEnd := time.Since(r.start)
	deadline := time.Now().Add(cfg.Drain)
	for time.Now().Before(deadline) && (r.nAcked.Load() < sent || r.nDeliv.Load() < sent) {
		time.Sleep(20 * time.Millisecond)
	}
	res := &LatencyResult{
		Rate:         cfg.Rate,
		Pairs:        cfg.Pairs,
		DurationSec:  cfg.Duration.Seconds(),
		Sent:         sent,
		Acked:        r.nAcked.Load(),
		Delivered:    r.nDeliv.Load(),
		Duplicates:   r.nDup.Load(),
		AchievedRate: float64(sent) / sendEnd.Seconds(),
	}
	res.Lost = res.Sent - res.Delivered
	r.mu.Lock()
	ms := func(h *hdrhistogram.Histogram, q float64) float64 { return float64(h.ValueAtQuantile(q)) / 1000 }
	res.AckP50ms, res.AckP99ms, res.AckMaxms = ms(r.ackH, 50), ms(r.ackH, 99), float64(r.ackH.Max())/1000
	res.DeliverP50ms, res.DeliverP90ms, res.DeliverP99ms = ms(r.delH, 50), ms(r.delH, 90), ms(r.delH, 99)
	res.DeliverP999, res.DeliverMaxms = ms(r.delH, 99.9), float64(r.delH.Max())/1000
	res.AckHist, res.DeliverHist = r.ackH, r.delH
	for i, h := range r.steps {
		res.Timeline = append(res.Timeline, LatencyPoint{
			T:         (time.Duration(i) * TimelineStep).Seconds(),
			Delivered: h.TotalCount(),
			P99ms:     ms(h, 99),
			Maxms:     float64(h.Max()) / 1000,
		})
	}
	if len(r.errs) > 0 {
		res.Errors = maps.Clone(r.errs)
	}
	r.mu.Unlock()
	return res, nil
}

// readLoop records ACKs (sender side) and MSGs (receiver side).
func (r *latRun) readLoop(c *Conn, sender bool) {
	var d wire.Decoder
	for {
		f, err := c.Read()
		if err != nil {
			return
		}
		now := int64(time.Since(r.start))
		t, _, err := d.Decode(f)
		if err != nil {
			continue
		}
		switch {
		case sender && t == wire.TypeAck:
			k, err := strconv.ParseInt(string(d.Ack.ClientMsgID), 10, 64)
			if err != nil || k < 0 || k >= int64(len(r.sched)) {
				continue
			}
			if r.acked[k].Swap(true) {
				continue
			}
			r.nAcked.Add(1)
			r.record(r.ackH, k, now)
		case t == wire.TypeError:
			r.mu.Lock()
			r.errs[d.Error.Code.String()]++
			r.mu.Unlock()
		case !sender && t == wire.TypeMsg:
			k, err := strconv.ParseInt(string(d.Msg.ClientMsgID), 10, 64)
			if err != nil || k < 0 || k >= int64(len(r.sched)) {
				continue
			}
			if r.delivered[k].Swap(true) {
				r.nDup.Add(1)
				continue
			}
			r.nDeliv.Add(1)
			if us := r.record(r.delH, k, now); us > 0 {
				r.recordStep(k, us)
			}
		}
	}
}

// record adds message k's latency to h and returns it in µs, or 0 for a
// warm-up message (not recorded).
func (r *latRun) record(h *hdrhistogram.Histogram, k, now int64) int64 {
	if k < r.warmupN {
		return 0
	}
	us := (now - r.sched[k].Load()) / 1000
	if us < 1 {
		us = 1
	}
	r.mu.Lock()
	_ = h.RecordValue(us)
	r.mu.Unlock()
	return us
}

func (r *latRun) recordStep(k, us int64) {
	i := int((time.Duration(r.sched[k].Load()) - r.cfg.Warmup) / TimelineStep)
	if i < 0 || i >= len(r.steps) {
		return
	}
	r.mu.Lock()
	_ = r.steps[i].RecordValue(us)
	r.mu.Unlock()
}

package bench

import (
	"context"
	"encoding/binary"
	"errors"
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

// GroupConfig is a group run (chatbench fanout and chatbench receipts):
// GroupSize members, every one online with one connection. Senders of them
// send Rate group messages per second in total on an open-loop schedule for
// Duration after Warmup (not recorded). Every group message is paired with
// a 1:1 message from the same sender at the same instant, so the ACK
// latency of a group send and of a 1:1 send are measured under the same
// load.
//
// With Receipts every member acknowledges what it got the way the SDK does:
// at most one RECEIPT delivered and one RECEIPT read per ReadEvery, each up
// to the highest seq it has (so one receipt covers every message of the
// interval).
type GroupConfig struct {
	GatewayURL string
	APIURL     string
	GroupSize  int
	Senders    int // default: enough that each stays at 15 group msg/s or less
	Rate       float64
	Duration   time.Duration
	Warmup     time.Duration
	Drain      time.Duration // wait for stragglers after the last send (default 10s)
	BodySize   int           // default 32
	Receipts   bool
	ReadEvery  time.Duration // default 1s
	// Counters, when set, reads the server's cumulative counters; the run
	// reports what they grew by between the first group message and the
	// end (the last receipt handled).
	Counters func(context.Context) (ServerCounters, error)
	// Log receives progress lines (nil: none).
	Log func(string)
}

// ServerCounters are server-side totals read before and after a run.
type ServerCounters struct {
	ReceiptStoreWrites float64            // chatd_receipt_pointer_writes_total
	ReceiptsHeld       float64            // chatd_receipt_pointers_held (write-behind)
	RedisCommands      float64            // Redis commands handled (0 without Redis)
	RedisByName        map[string]float64 // the same by command name
}

// GroupResult is what a group run measured. deliver_last is, per message,
// the time from its scheduled send until the last of its recipients had
// it; deliver is every single delivery.
type GroupResult struct {
	GroupSize  int     `json:"group_size"`
	Senders    int     `json:"senders"`
	Rate       float64 `json:"rate"`
	Duration   float64 `json:"duration_seconds"`
	Sent       int64   `json:"sent"`
	Acked      int64   `json:"acked"`
	Recipients int     `json:"recipients_per_msg"`
	Deliveries int64   `json:"deliveries"`
	Lost       int64   `json:"lost"`
	Duplicates int64   `json:"duplicates"`

	DeliverLastP50ms float64 `json:"deliver_last_p50_ms"`
	DeliverLastP99ms float64 `json:"deliver_last_p99_ms"`
	DeliverLastMaxms float64 `json:"deliver_last_max_ms"`
	DeliverP50ms     float64 `json:"deliver_p50_ms"`
	DeliverP99ms     float64 `json:"deliver_p99_ms"`
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`

	AckP50ms       float64 `json:"ack_p50_ms"`
	AckP99ms       float64 `json:"ack_p99_ms"`
	DirectAckP50ms float64 `json:"direct_ack_p50_ms"`
	DirectAckP99ms float64 `json:"direct_ack_p99_ms"`
	// AckP99VsDirect is ack_p99_ms / direct_ack_p99_ms: how much slower a
	// group send is acknowledged than a 1:1 send in the same run.
	AckP99VsDirect float64 `json:"ack_p99_vs_direct"`

	// Receipts (with GroupConfig.Receipts; counted over every group
	// message, warm-up included, since receipts of one interval cover
	// messages of both).
	ReceiptFramesSent     int64   `json:"receipt_frames_sent"`
	ReceiptFramesReceived int64   `json:"receipt_frames_received"`
	ReceiptStoreWrites    float64 `json:"receipt_store_writes"`
	// ReceiptStoreWritesPerMsg is receipt pointer rows written per group
	// message; NaiveStoreWritesPerMsg is one write per receipt event
	// (delivered and read from every recipient).
	ReceiptStoreWritesPerMsg float64 `json:"receipt_store_writes_per_msg"`
	NaiveStoreWritesPerMsg   float64 `json:"naive_store_writes_per_msg"`
	ReceiptFramesPerMsg      float64 `json:"receipt_frames_per_msg"`
	// NaiveReceiptFramesPerMsg relays every receipt event to every other
	// member: 2 x recipients x (members - 1).
	NaiveReceiptFramesPerMsg float64 `json:"naive_receipt_frames_per_msg"`
	RedisCommands            float64 `json:"redis_commands,omitempty"`
	RedisCommandsPerMsg      float64 `json:"redis_commands_per_msg,omitempty"`
	// RedisPerMsgByName splits redis_commands_per_msg by command (e.g.
	// hgetall: registry lookups, zadd: receipt counters).
	RedisPerMsgByName map[string]float64 `json:"redis_per_msg_by_command,omitempty"`

	Errors map[string]int64 `json:"errors,omitempty"`

	DeliverLastHist *hdrhistogram.Histogram `json:"-"`
	DeliverHist     *hdrhistogram.Histogram `json:"-"`
	AckHist         *hdrhistogram.Histogram `json:"-"`
}

type groupRun struct {
	cfg     GroupConfig
	start   time.Time
	warmupN int64
	total   int64
	sched   []atomic.Int64 // message k's scheduled time, ns since start
	count   []atomic.Int32 // recipients that have message k
	last    []atomic.Int64 // latest arrival of message k, ns since start
	seqOf   []atomic.Uint64
	acked   []atomic.Bool
	dacked  []atomic.Bool
	nAcked  atomic.Int64
	nDeliv  atomic.Int64
	nDup    atomic.Int64
	lastAt  atomic.Int64 // latest measured delivery, ns since start
	rSent   atomic.Int64
	rGot    atomic.Int64
	nDAcked atomic.Int64
	mu      sync.Mutex
	errs    map[string]int64
	ackH    *hdrhistogram.Histogram
	dackH   *hdrhistogram.Histogram
	delH    *hdrhistogram.Histogram
	convs   chan *wire.Conv // CONV answers to the creator
}

// groupMember is one member's connection and what its reader saw.
type groupMember struct {
	user   string
	c      *Conn
	got    []bool        // message k arrived (reader goroutine only)
	maxSeq atomic.Uint64 // highest group seq received
}

// RunGroup runs a group scenario against a running chatd.
func RunGroup(ctx context.Context, cfg GroupConfig) (*GroupResult, error) {
	if cfg.GroupSize < 2 {
		return nil, errors.New("group size must be at least 2")
	}
	if cfg.Rate <= 0 {
		return nil, errors.New("rate must be > 0")
	}
	if cfg.Senders <= 0 {
		// A sender sends a group and a 1:1 message per tick plus its
		// receipts: 15 ticks a second keeps it well under the gateway's
		// 50 frames/s flood limit.
		cfg.Senders = int(math.Ceil(cfg.Rate / 15))
	}
	cfg.Senders = min(cfg.Senders, cfg.GroupSize)
	if cfg.Drain <= 0 {
		cfg.Drain = 10 * time.Second
	}
	if cfg.BodySize <= 0 {
		cfg.BodySize = 32
	}
	if cfg.ReadEvery <= 0 {
		cfg.ReadEvery = time.Second
	}
	logf := func(format string, a ...any) {
		if cfg.Log != nil {
			cfg.Log(fmt.Sprintf(format, a...))
		}
	}
	total := int64(cfg.Rate * (cfg.Warmup + cfg.Duration).Seconds())
	r := &groupRun{
		cfg: cfg, total: total,
		warmupN: int64(cfg.Rate * cfg.Warmup.Seconds()),
		sched:   make([]atomic.Int64, total),
		count:   make([]atomic.Int32, total),
		last:    make([]atomic.Int64, total),
		seqOf:   make([]atomic.Uint64, total),
		acked:   make([]atomic.Bool, total),
		dacked:  make([]atomic.Bool, total),
		errs:    map[string]int64{},
		ackH:    hdrhistogram.New(1, 120_000_000, 3),
		dackH:   hdrhistogram.New(1, 120_000_000, 3),
		delH:    hdrhistogram.New(1, 120_000_000, 3),
		convs:   make(chan *wire.Conv, 16),
	}
	r.start = time.Now() // replaced when sending starts; readers need a base

	// Members, each with a token and a connection; one more user, the
	// peer, receives the senders' 1:1 messages.
	stamp := strconv.FormatInt(time.Now().UnixNano()%1_000_000_000, 36)
	members := make([]*groupMember, cfg.GroupSize)
	defer func() {
		for _, m := range members {
			if m != nil && m.c != nil {
				m.c.Close()
			}
		}
	}()
	tokens := make([]string, cfg.GroupSize)
	for i := range members {
		members[i] = &groupMember{user: fmt.Sprintf("g%s-%04d", stamp, i), got: make([]bool, total)}
		t, err := DevToken(ctx, cfg.APIURL, members[i].user, "bench")
		if err != nil {
			return nil, err
		}
		tokens[i] = t
	}
	peer := fmt.Sprintf("g%s-peer", stamp)
	peerTok, err := DevToken(ctx, cfg.APIURL, peer, "bench")
	if err != nil {
		return nil, err
	}
	direct := make([]uint64, cfg.Senders)
	for i := range direct {
		if direct[i], err = OpenDirect(ctx, cfg.APIURL, tokens[i], peer); err != nil {
			return nil, err
		}
	}
	pc, err := Dial(ctx, cfg.GatewayURL, peerTok, "bench")
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	go func() { // the peer only drains
		for {
			if _, err := pc.Read(); err != nil {
				return
			}
		}
	}()
	var conv atomic.Uint64
	var readers sync.WaitGroup
	for i, m := range members {
		if m.c, err = Dial(ctx, cfg.GatewayURL, tokens[i], "bench"); err != nil {
			return nil, fmt.Errorf("member %d: %w", i, err)
		}
		readers.Add(1)
		go func() { defer readers.Done(); r.readLoop(m, i == 0, i < cfg.Senders, &conv) }()
	}
	logf("%d members connected", len(members))

	// The group: created by member 0 with the first MaxGroupChange others,
	// the rest added in chunks of MaxGroupChange.
	var reqID uint64
	others := make([][]byte, 0, cfg.GroupSize-1)
	for _, m := range members[1:] {
		others = append(others, []byte(m.user))
	}
	chunk := func() [][]byte {
		n := min(len(others), wire.MaxGroupChange)
		c := others[:n]
		others = others[n:]
		return c
	}
	reqID++
	cg := wire.CreateGroup{ReqID: reqID, Name: []byte("bench " + stamp), Members: chunk()}
	if err := members[0].c.Write(cg.Append(nil, 0)); err != nil {
		return nil, err
	}
	cv, err := r.awaitConv(ctx, reqID)
	if err != nil {
		return nil, fmt.Errorf("create group: %w", err)
	}
	conv.Store(cv.ConvID)
	for len(others) > 0 {
		reqID++
		gc := wire.GroupChange{ReqID: reqID, ConvID: cv.ConvID, Op: wire.GroupAdd, Users: chunk()}
		if err := members[0].c.Write(gc.Append(nil, 0)); err != nil {
			return nil, err
		}
		if cv, err = r.awaitConv(ctx, reqID); err != nil {
			return nil, fmt.Errorf("add members: %w", err)
		}
	}
	if int(cv.MemberTotal) != cfg.GroupSize {
		return nil, fmt.Errorf("group has %d members, want %d", cv.MemberTotal, cfg.GroupSize)
	}
	logf("group %d of %d members created", cv.ConvID, cv.MemberTotal)

	var before ServerCounters
	if cfg.Counters != nil {
		if before, err = cfg.Counters(ctx); err != nil {
			return nil, err
		}
	}
	rctx, stopReceipts := context.WithCancel(ctx)
	var receiptWG sync.WaitGroup
	if cfg.Receipts {
		for _, m := range members {
			receiptWG.Add(1)
			go func() { defer receiptWG.Done(); r.receiptLoop(rctx, m, cv.ConvID) }()
		}
	}
	defer func() { stopReceipts(); receiptWG.Wait() }()

	body := make([]byte, max(cfg.BodySize, 8))
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	interval := float64(time.Second) / cfg.Rate
	r.start = time.Now()
	var sent int64
	var frame, cmid []byte
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
		s := int(k % int64(cfg.Senders))
		binary.BigEndian.PutUint64(body, uint64(k))
		cmid = append(strconv.AppendInt(cmid[:0], k, 10), 'g')
		f := wire.Send{ConvID: cv.ConvID, ClientMsgID: cmid, Kind: wire.KindText, Body: body}
		frame = f.Append(frame[:0], 0)
		if err := members[s].c.Write(frame); err != nil {
			return nil, fmt.Errorf("send: %w", err)
		}
		cmid[len(cmid)-1] = 'd'
		f = wire.Send{ConvID: direct[s], ClientMsgID: cmid, Kind: wire.KindText, Body: body}
		frame = f.Append(frame[:0], 0)
		if err := members[s].c.Write(frame); err != nil {
			return nil, fmt.Errorf("send: %w", err)
		}
		sent++
	}
	recipients := int64(cfg.GroupSize - 1)
	deadline := time.Now().Add(cfg.Drain)
	for time.Now().Before(deadline) && (r.nAcked.Load() < sent || r.nDAcked.Load() < sent || r.nDeliv.Load() < sent*recipients) {
		time.Sleep(20 * time.Millisecond)
	}
	res := &GroupResult{
		GroupSize: cfg.GroupSize, Senders: cfg.Senders, Rate: cfg.Rate, Duration: cfg.Duration.Seconds(),
		Sent: sent, Acked: r.nAcked.Load(), Recipients: int(recipients),
		Deliveries: r.nDeliv.Load(), Duplicates: r.nDup.Load(),
	}
	res.Lost = sent*recipients - res.Deliveries
	if cfg.Receipts {
		// Let the last interval's receipts be sent and handled: two
		// intervals, then until the server holds no receipt pointer back
		// (write-behind) and the store's count stops moving (at most 30 s).
		time.Sleep(2 * cfg.ReadEvery)
		stopReceipts()
		receiptWG.Wait()
		if cfg.Counters != nil {
			prev := -1.0
			for i := 0; i < 150; i++ {
				c, err := cfg.Counters(ctx)
				if err != nil {
					return nil, err
				}
				if c.ReceiptsHeld == 0 && c.ReceiptStoreWrites == prev {
					break
				}
				prev = c.ReceiptStoreWrites
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	if cfg.Counters != nil {
		after, err := cfg.Counters(ctx)
		if err != nil {
			return nil, err
		}
		res.ReceiptStoreWrites = after.ReceiptStoreWrites - before.ReceiptStoreWrites
		res.RedisCommands = after.RedisCommands - before.RedisCommands
		for name, v := range after.RedisByName {
			if d := v - before.RedisByName[name]; d > 0 && sent > 0 {
				if res.RedisPerMsgByName == nil {
					res.RedisPerMsgByName = map[string]float64{}
				}
				res.RedisPerMsgByName[name] = math.Round(d/float64(sent)*10) / 10
			}
		}
	}
	n := float64(sent)
	res.ReceiptFramesSent, res.ReceiptFramesReceived = r.rSent.Load(), r.rGot.Load()
	if n > 0 {
		res.ReceiptStoreWritesPerMsg = res.ReceiptStoreWrites / n
		res.ReceiptFramesPerMsg = float64(res.ReceiptFramesReceived) / n
		res.RedisCommandsPerMsg = res.RedisCommands / n
	}
	if cfg.Receipts {
		res.NaiveStoreWritesPerMsg = float64(2 * recipients)
		res.NaiveReceiptFramesPerMsg = float64(2 * recipients * int64(cfg.GroupSize-1))
	}

	// deliver_last: messages every recipient got; a message some never got
	// counts in lost, not here.
	lastH := hdrhistogram.New(1, 120_000_000, 3)
	for k := r.warmupN; k < sent; k++ {
		if int64(r.count[k].Load()) == recipients {
			_ = lastH.RecordValue(max(1, (r.last[k].Load()-r.sched[k].Load())/1000))
		}
	}
	ms := func(h *hdrhistogram.Histogram, q float64) float64 { return float64(h.ValueAtQuantile(q)) / 1000 }
	r.mu.Lock()
	defer r.mu.Unlock()
	res.DeliverLastP50ms, res.DeliverLastP99ms, res.DeliverLastMaxms = ms(lastH, 50), ms(lastH, 99), float64(lastH.Max())/1000
	res.DeliverP50ms, res.DeliverP99ms = ms(r.delH, 50), ms(r.delH, 99)
	res.AckP50ms, res.AckP99ms = ms(r.ackH, 50), ms(r.ackH, 99)
	res.DirectAckP50ms, res.DirectAckP99ms = ms(r.dackH, 50), ms(r.dackH, 99)
	if res.DirectAckP99ms > 0 {
		res.AckP99VsDirect = math.Round(res.AckP99ms/res.DirectAckP99ms*100) / 100
	}
	if span := time.Duration(r.lastAt.Load()) - time.Duration(r.sched[min(r.warmupN, sent-1)].Load()); span > 0 {
		res.DeliveriesPerSec = math.Round(float64(r.delH.TotalCount()) / span.Seconds())
	}
	res.DeliverLastHist, res.DeliverHist, res.AckHist = lastH, r.delH, r.ackH
	if len(r.errs) > 0 {
		res.Errors = maps.Clone(r.errs)
	}
	return res, nil
}

func (r *groupRun) awaitConv(ctx context.Context, reqID uint64) (*wire.Conv, error) {
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case c := <-r.convs:
			if c.ReqID == reqID {
				return c, nil
			}
		case <-t.C:
			r.mu.Lock()
			defer r.mu.Unlock()
			return nil, fmt.Errorf("no CONV for request %d within 30s (errors %v)", reqID, r.errs)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// readLoop records, for one member, group MSGs (as a recipient), ACKs (as
// a sender), CONV answers (the creator) and ERRORs.
func (r *groupRun) readLoop(m *groupMember, creator, sender bool, conv *atomic.Uint64) {
	var d wire.Decoder
	for {
		f, err := m.c.Read()
		if err != nil {
			return
		}
		now := int64(time.Since(r.start))
		t, _, err := d.Decode(f)
		if err != nil {
			continue
		}
		switch t {
		case wire.TypeMsg:
			if d.Msg.ConvID != conv.Load() {
				continue
			}
			if d.Msg.Seq > m.maxSeq.Load() {
				m.maxSeq.Store(d.Msg.Seq)
			}
			k, ok := r.index(d.Msg.ClientMsgID, 'g')
			if !ok {
				continue // a group change, or another run's
			}
			if m.got[k] {
				r.nDup.Add(1)
				continue
			}
			m.got[k] = true
			r.nDeliv.Add(1)
			r.count[k].Add(1)
			for {
				l := r.last[k].Load()
				if now <= l || r.last[k].CompareAndSwap(l, now) {
					break
				}
			}
			if k >= r.warmupN {
				for {
					l := r.lastAt.Load()
					if now <= l || r.lastAt.CompareAndSwap(l, now) {
						break
					}
				}
				r.record(r.delH, k, now)
			}
		case wire.TypeAck:
			if !sender {
				continue
			}
			if k, ok := r.index(d.Ack.ClientMsgID, 'g'); ok && !r.acked[k].Swap(true) {
				r.nAcked.Add(1)
				r.seqOf[k].Store(d.Ack.Seq)
				r.record(r.ackH, k, now)
			} else if k, ok := r.index(d.Ack.ClientMsgID, 'd'); ok && !r.dacked[k].Swap(true) {
				r.nDAcked.Add(1)
				r.record(r.dackH, k, now)
			}
		case wire.TypeReceipt:
			r.rGot.Add(1)
		case wire.TypeConv:
			if creator {
				c := d.Conv // copy: the decoder reuses its fields
				select {
				case r.convs <- &c:
				default:
				}
			}
		case wire.TypeError:
			r.mu.Lock()
			r.errs[d.Error.Code.String()]++
			r.mu.Unlock()
		}
	}
}

// index parses a bench client_msg_id "<k><suffix>".
func (r *groupRun) index(cmid []byte, suffix byte) (int64, bool) {
	if len(cmid) < 2 || cmid[len(cmid)-1] != suffix {
		return 0, false
	}
	k, err := strconv.ParseInt(string(cmid[:len(cmid)-1]), 10, 64)
	if err != nil || k < 0 || k >= r.total {
		return 0, false
	}
	return k, true
}

func (r *groupRun) record(h *hdrhistogram.Histogram, k, now int64) {
	if k < r.warmupN {
		return
	}
	r.mu.Lock()
	_ = h.RecordValue(max(1, (now-r.sched[k].Load())/1000))
	r.mu.Unlock()
}

// receiptLoop acknowledges like the SDK: every ReadEvery, if the member
// has new messages, one RECEIPT delivered and one RECEIPT read up to the
// highest seq it has. The first tick is at a random offset so a thousand
// members do not acknowledge in lockstep.
func (r *groupRun) receiptLoop(ctx context.Context, m *groupMember, conv uint64) {
	// What the member had before the run (the group's own changes) is not
	// the run's to acknowledge.
	acked := m.maxSeq.Load()
	offset := time.Duration(fnv32(m.user)%uint32(r.cfg.ReadEvery/time.Millisecond+1)) * time.Millisecond
	select {
	case <-time.After(offset):
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(r.cfg.ReadEvery)
	defer t.Stop()
	var frame []byte
	for {
		if s := m.maxSeq.Load(); s > acked {
			for _, kind := range []wire.ReceiptKind{wire.ReceiptDelivered, wire.ReceiptRead} {
				rc := wire.Receipt{ConvID: conv, Kind: kind, UpToSeq: s}
				frame = rc.Append(frame[:0], 0)
				if m.c.Write(frame) != nil {
					return
				}
				r.rSent.Add(1)
			}
			acked = s
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd-dev/chatd/bench/swarm"
	"github.com/chatd-dev/chatd/sdk"
	"github.com/chatd-dev/chatd/wire"
)

// StormConfig is a reconnect storm: Clients connected clients (each pair
// did one message round trip); every gateway process is SIGKILLed and
// restarted while SenderPairs pairs of SDK clients keep sending; everyone
// reconnects with backoff and jitter and resumes.
type StormConfig struct {
	ChatdBin string
	SelfBin  string
	Clients  int
	// GatewayProcs: 0 picks the fewest the open-files limit allows.
	GatewayProcs int
	// SenderPairs are SDK clients sending throughout (default 10), the
	// app-level witnesses of loss and duplicates.
	SenderPairs int
	// Rate is messages per second over all senders (default 200).
	Rate float64
	// Downtime is how long the gateways stay dead (default 1s).
	Downtime time.Duration
	// RecoveryTimeout bounds the wait for everyone to be back (default
	// 120s).
	RecoveryTimeout time.Duration
	Log             io.Writer
	Progress        func(string)
}

// StormResult is what a storm run measured.
type StormResult struct {
	Clients          int     `json:"clients"`
	GatewayProcesses int     `json:"gateway_processes"`
	Reconnected      int64   `json:"reconnected"`
	RecoverySeconds  float64 `json:"recovery_seconds"`
	Recovered        bool    `json:"recovered"`
	// Lost: messages acknowledged to an SDK sender that its receiver's app
	// never got. Duplicates: messages an app got twice.
	Lost            int64            `json:"lost"`
	Duplicates      int64            `json:"duplicates"`
	SenderPairs     int              `json:"sender_pairs"`
	Sent            int64            `json:"sent"`
	Acked           int64            `json:"acked"`
	Delivered       int64            `json:"delivered"`
	CrowdFailures   map[string]int64 `json:"crowd_failures,omitempty"`
	CrowdReconnects int64            `json:"crowd_reconnect_attempts"`
	DowntimeSeconds float64          `json:"downtime_seconds"`
	// GatewayRestartSeconds: from starting the gateways again until every
	// one printed its readiness line.
	GatewayRestartSeconds float64 `json:"gateway_restart_seconds"`
}

// witness is one SDK sender/receiver pair.
type witness struct {
	from, to  *sdk.Client
	conv      uint64
	mu        sync.Mutex
	acked     map[string]bool // client_msg_id
	ackedPre  int             // acked before the kill
	got       map[string]int  // client_msg_id -> times delivered to the app
	toConnect atomic.Int64
}

// RunStorm runs the scenario.
func RunStorm(ctx context.Context, cfg StormConfig) (*StormResult, []Sample, error) {
	if cfg.Clients < 2 {
		return nil, nil, errors.New("storm needs at least 2 clients")
	}
	cfg.Clients &^= 1
	if cfg.GatewayProcs <= 0 {
		cfg.GatewayProcs = GatewayProcsFor(cfg.Clients + 2*cfg.SenderPairs)
	}
	if cfg.SenderPairs <= 0 {
		cfg.SenderPairs = 10
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 200
	}
	if cfg.Downtime <= 0 {
		cfg.Downtime = time.Second
	}
	if cfg.RecoveryTimeout <= 0 {
		cfg.RecoveryTimeout = 120 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	progress := cfg.Progress
	if progress == nil {
		progress = func(string) {}
	}
	cl, err := StartCluster(ctx, ClusterConfig{ChatdBin: cfg.ChatdBin, GatewayProcs: cfg.GatewayProcs, Log: cfg.Log})
	if err != nil {
		return nil, nil, err
	}
	defer cl.Stop()
	res := &StormResult{Clients: cfg.Clients, GatewayProcesses: cfg.GatewayProcs, SenderPairs: cfg.SenderPairs, DowntimeSeconds: cfg.Downtime.Seconds()}

	// The crowd.
	crowd, err := SpawnWorkers(cl, WorkersConfig{SelfBin: cfg.SelfBin, Conns: cfg.Clients,
		Procs: GatewayProcsFor(cfg.Clients), RoundTrip: true, Reconnect: true, Tick: DefaultClientTick, Log: cfg.Log})
	if err != nil {
		return nil, nil, err
	}
	defer StopWorkers(crowd)
	if err := WaitFor(ctx, crowd, cfg.Clients, "clients round-tripped", func(s swarm.Stats) int64 { return s.RoundTripped }, progress); err != nil {
		return nil, nil, err
	}

	// The witnesses.
	wits := make([]*witness, cfg.SenderPairs)
	for i := range wits {
		if wits[i], err = newWitness(ctx, cl, i); err != nil {
			return nil, nil, err
		}
		defer wits[i].close()
	}
	sendCtx, stopSending := context.WithCancel(ctx)
	defer stopSending()
	var sent atomic.Int64
	var sendWG sync.WaitGroup
	interval := time.Duration(float64(time.Second) * float64(cfg.SenderPairs) / cfg.Rate)
	for i, w := range wits {
		sendWG.Add(1)
		go func() {
			defer sendWG.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			for k := 0; ; k++ {
				select {
				case <-sendCtx.Done():
					return
				case <-t.C:
				}
				if _, err := w.from.Send(sendCtx, w.conv, wire.KindText, []byte(fmt.Sprintf("storm %d/%d", i, k))); err == nil {
					sent.Add(1)
				}
			}
		}()
	}
	time.Sleep(2 * time.Second) // traffic flowing before the kill

	before := Aggregate(crowd)
	for _, w := range wits {
		w.mu.Lock()
		w.ackedPre = len(w.acked)
		w.mu.Unlock()
		w.toConnect.Store(2) // both clients must reconnect
	}
	start := time.Now()
	var samples []Sample
	for i := range cl.Gateways {
		cl.KillGateway(i)
	}
	progress(fmt.Sprintf("killed %d gateway process(es) with SIGKILL", len(cl.Gateways)))
	time.Sleep(cfg.Downtime)
	// All at once, as a supervisor restarting a crashed node's workers would.
	restartStart := time.Now()
	restartErrs := make([]error, len(cl.Gateways))
	var rwg sync.WaitGroup
	for i := range cl.Gateways {
		rwg.Add(1)
		go func() { defer rwg.Done(); restartErrs[i] = cl.RestartGateway(ctx, i) }()
	}
	rwg.Wait()
	res.GatewayRestartSeconds = time.Since(restartStart).Seconds()
	for i, err := range restartErrs {
		if err != nil {
			return nil, nil, fmt.Errorf("restart gateway %d: %w", i, err)
		}
	}
	progress("gateways restarted")
	deadline := start.Add(cfg.RecoveryTimeout)
	for {
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		agg := Aggregate(crowd)
		samples = append(samples, Sample{T: time.Since(start).Seconds(), Established: agg.Established})
		back := agg.Established >= int64(cfg.Clients) && agg.Resumed-before.Resumed >= int64(cfg.Clients)
		for _, w := range wits {
			back = back && w.caughtUp()
		}
		if len(samples)%10 == 0 {
			progress(fmt.Sprintf("%5.1fs after the kill: %d/%d back, %d resumed", time.Since(start).Seconds(), agg.Established, cfg.Clients, agg.Resumed-before.Resumed))
		}
		if back {
			res.Recovered = true
			break
		}
		if time.Now().After(deadline) {
			break
		}
	}
	res.RecoverySeconds = time.Since(start).Seconds()
	after := Aggregate(crowd)
	res.Reconnected = after.Welcomes - before.Welcomes
	res.CrowdReconnects = after.Reconnects - before.Reconnects
	res.CrowdFailures = after.Failures

	// Stop sending, let every acknowledged message arrive, then count.
	stopSending()
	sendWG.Wait()
	drain := time.Now().Add(30 * time.Second)
	for time.Now().Before(drain) {
		if allDelivered(wits) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.Sent = sent.Load()
	for _, w := range wits {
		w.mu.Lock()
		res.Acked += int64(len(w.acked))
		for id := range w.acked {
			if w.got[id] == 0 {
				res.Lost++
			}
		}
		for _, n := range w.got {
			res.Delivered++
			if n > 1 {
				res.Duplicates += int64(n - 1)
			}
		}
		w.mu.Unlock()
	}
	return res, samples, nil
}

func newWitness(ctx context.Context, cl *Cluster, i int) (*witness, error) {
	w := &witness{acked: map[string]bool{}, got: map[string]int{}}
	mk := func(user string, onEvent func(sdk.Event)) (*sdk.Client, error) {
		tok, err := cl.Signer.Mint(user, "storm", 24*time.Hour)
		if err != nil {
			return nil, err
		}
		c, err := sdk.New(sdk.Config{URL: cl.GatewayURL, DeviceID: "storm",
			Token:      func(context.Context) (string, error) { return tok, nil },
			BackoffMin: 100 * time.Millisecond, BackoffMax: 2 * time.Second})
		if err != nil {
			return nil, err
		}
		go func() {
			for ev := range c.Events() {
				onEvent(ev)
			}
		}()
		return c, c.Start(ctx)
	}
	stamp := time.Now().UnixNano() % 1e9
	a, b := fmt.Sprintf("storm%d-a%d", stamp, i), fmt.Sprintf("storm%d-b%d", stamp, i)
	var err error
	w.from, err = mk(a, func(ev sdk.Event) {
		switch ev := ev.(type) {
		case sdk.Ack:
			w.mu.Lock()
			w.acked[ev.ClientMsgID] = true
			w.mu.Unlock()
		case sdk.Connected:
			w.toConnect.Add(-1)
		}
	})
	if err != nil {
		return nil, err
	}
	w.to, err = mk(b, func(ev sdk.Event) {
		switch ev := ev.(type) {
		case sdk.Message:
			w.mu.Lock()
			w.got[ev.ClientMsgID]++
			w.mu.Unlock()
		case sdk.Connected:
			w.toConnect.Add(-1)
		}
	})
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conv, err := w.from.OpenDirect(octx, b)
	if err != nil {
		return nil, fmt.Errorf("witness open: %w", err)
	}
	w.conv = conv.ID
	return w, nil
}

// caughtUp: both clients reconnected after the kill and the receiver holds
// every message acknowledged before it.
func (w *witness) caughtUp() bool {
	if w.toConnect.Load() > 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.got) < w.ackedPre {
		return false
	}
	n := 0
	for id := range w.acked {
		if w.got[id] > 0 {
			n++
		}
	}
	return n >= w.ackedPre
}

func allDelivered(ws []*witness) bool {
	for _, w := range ws {
		w.mu.Lock()
		for id := range w.acked {
			if w.got[id] == 0 {
				w.mu.Unlock()
				return false
			}
		}
		w.mu.Unlock()
	}
	return true
}

func (w *witness) close() {
	w.from.Close()
	w.to.Close()
}

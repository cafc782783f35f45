package swarm

import (
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Stats is a snapshot of a run. Gauges (Dialing, Established, Backoff,
// Done) describe the connections now; everything else is a counter since
// the start of the run.
type Stats struct {
	ElapsedSec float64 `json:"elapsed_sec"`
	Conns      int     `json:"conns"` // configured connections

	Dialing     int64 `json:"dialing"`     // connecting, upgrading or waiting for WELCOME
	Established int64 `json:"established"` // WELCOME received and still open
	Backoff     int64 `json:"backoff"`     // closed, waiting to reconnect
	Done        int64 `json:"done"`        // closed for good (Reconnect off)

	Dials        int64 `json:"dials"`         // connection attempts, first ones and reconnects
	Welcomes     int64 `json:"welcomes"`      // WELCOMEs received, reconnects included
	RoundTripped int64 `json:"round_tripped"` // connections that saw their side of the round trip
	Reconnects   int64 `json:"reconnects"`    // attempts after the first of a connection

	// Failures counts connection failures by reason: "connect:ECONNREFUSED"
	// (errno name), "upgrade:status_404", "upgrade:bad_accept",
	// "hello:token_invalid" (refusal code), "goaway:shutting_down" (GOAWAY
	// code), "timeout:connect|upgrade|hello|pong", "<stage>:eof" and
	// "<stage>:<ERRNO>" for sockets closed or reset without a GOAWAY,
	// "error:<code>" for a closing ERROR after WELCOME, "ws:<problem>" for
	// WebSocket protocol violations by the server.
	Failures      map[string]int64 `json:"failures,omitempty"`
	FailuresTotal int64            `json:"failures_total"`
	// Errors counts ERROR frames that did not close the connection, by
	// code name, plus "decode" for server frames that failed to decode.
	Errors map[string]int64 `json:"errors,omitempty"`

	PingsSent     int64 `json:"pings_sent"`
	PongsReceived int64 `json:"pongs_received"`
	PongsMissed   int64 `json:"pongs_missed"` // a PING's PONG had not arrived when the next PING was due

	Sends    int64 `json:"sends"`    // SEND frames written
	Acks     int64 `json:"acks"`     // ACKs for our SENDs
	Msgs     int64 `json:"msgs"`     // MSG frames received, live and replayed
	Receipts int64 `json:"receipts"` // RECEIPT frames received
	Replayed int64 `json:"replayed"` // MSG frames with FlagReplay (RESUME answers)
	Resumes  int64 `json:"resumes"`  // RESUME frames written
	Resumed  int64 `json:"resumed"`  // RESUMED frames received

	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`

	// Connect is the time from starting a dial to its WELCOME; RoundTrip
	// the time from the initiator's SEND to the peer's RECEIPT reaching it.
	// Milliseconds; 0 when nothing was measured.
	ConnectP50Ms   float64 `json:"connect_p50_ms"`
	ConnectP99Ms   float64 `json:"connect_p99_ms"`
	ConnectMaxMs   float64 `json:"connect_max_ms"`
	RoundTripP50Ms float64 `json:"round_trip_p50_ms"`
	RoundTripP99Ms float64 `json:"round_trip_p99_ms"`
	RoundTripMaxMs float64 `json:"round_trip_max_ms"`

	// The histograms behind the percentiles (values in microseconds) in
	// HdrHistogram's compressed V2 encoding (base64), so that runs split
	// over several processes can be merged exactly: see DecodeHist and
	// Merge. Only Run's last snapshot carries them.
	ConnectHist   string `json:"connect_hist,omitempty"`
	RoundTripHist string `json:"round_trip_hist,omitempty"`
}

// Histogram bounds: 1µs to 1h, 2 significant digits (1% error, a few KiB).
const (
	histMin    = 1
	histMax    = int64(time.Hour / time.Microsecond)
	histDigits = 2
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// counters are the live, shared statistics of a run.
type counters struct {
	dialing, established, backoff, done    atomic.Int64
	dials, welcomes, roundTripped, reconns atomic.Int64
	failuresTotal                          atomic.Int64
	pings, pongs, missed                   atomic.Int64
	sends, acks, msgs, receipts            atomic.Int64
	replayed, resumes, resumed             atomic.Int64
	bytesIn, bytesOut                      atomic.Int64
	mu                                     sync.Mutex // guards the maps and histograms
	failures, errors                       map[string]int64
	connectH, rtH                          *hdrhistogram.Histogram
}

func newCounters() *counters {
	return &counters{
		failures: map[string]int64{},
		errors:   map[string]int64{},
		connectH: newHist(),
		rtH:      newHist(),
	}
}

func (s *counters) failure(reason string) {
	s.failuresTotal.Add(1)
	s.mu.Lock()
	s.failures[reason]++
	s.mu.Unlock()
}

func (s *counters) error(name string) {
	s.mu.Lock()
	s.errors[name]++
	s.mu.Unlock()
}

func (s *counters) record(h *hdrhistogram.Histogram, d time.Duration) {
	us := max(int64(d/time.Microsecond), histMin)
	s.mu.Lock()
	_ = h.RecordValue(min(us, histMax))
	s.mu.Unlock()
}

func msAt(h *hdrhistogram.Histogram, q float64) float64 {
	return float64(h.ValueAtQuantile(q)) / 1000
}

// snapshot copies the counters; hists adds the histograms themselves.
func (s *counters) snapshot(elapsed time.Duration, conns int, hists bool) Stats {
	st := Stats{
		ElapsedSec:    elapsed.Seconds(),
		Conns:         conns,
		Dialing:       s.dialing.Load(),
		Established:   s.established.Load(),
		Backoff:       s.backoff.Load(),
		Done:          s.done.Load(),
		Dials:         s.dials.Load(),
		Welcomes:      s.welcomes.Load(),
		RoundTripped:  s.roundTripped.Load(),
		Reconnects:    s.reconns.Load(),
		FailuresTotal: s.failuresTotal.Load(),
		PingsSent:     s.pings.Load(),
		PongsReceived: s.pongs.Load(),
		PongsMissed:   s.missed.Load(),
		Sends:         s.sends.Load(),
		Acks:          s.acks.Load(),
		Msgs:          s.msgs.Load(),
		Receipts:      s.receipts.Load(),
		Replayed:      s.replayed.Load(),
		Resumes:       s.resumes.Load(),
		Resumed:       s.resumed.Load(),
		BytesIn:       s.bytesIn.Load(),
		BytesOut:      s.bytesOut.Load(),
	}
	s.mu.Lock()
	if len(s.failures) > 0 {
		st.Failures = maps.Clone(s.failures)
	}
	if len(s.errors) > 0 {
		st.Errors = maps.Clone(s.errors)
	}
	if s.connectH.TotalCount() > 0 {
		st.ConnectP50Ms, st.ConnectP99Ms = msAt(s.connectH, 50), msAt(s.connectH, 99)
		st.ConnectMaxMs = float64(s.connectH.Max()) / 1000
	}
	if s.rtH.TotalCount() > 0 {
		st.RoundTripP50Ms, st.RoundTripP99Ms = msAt(s.rtH, 50), msAt(s.rtH, 99)
		st.RoundTripMaxMs = float64(s.rtH.Max()) / 1000
	}
	if hists {
		st.ConnectHist = encodeHist(s.connectH)
		st.RoundTripHist = encodeHist(s.rtH)
	}
	s.mu.Unlock()
	return st
}

// Merge adds o's counters and gauges to s (for runs split over several
// worker processes). Percentiles are recomputed from the histograms when
// both sides carry them, and left as the maximum of the two otherwise.
func (s *Stats) Merge(o Stats) {
	s.ElapsedSec = max(s.ElapsedSec, o.ElapsedSec)
	s.Conns += o.Conns
	s.Dialing += o.Dialing
	s.Established += o.Established
	s.Backoff += o.Backoff
	s.Done += o.Done
	s.Dials += o.Dials
	s.Welcomes += o.Welcomes
	s.RoundTripped += o.RoundTripped
	s.Reconnects += o.Reconnects
	s.FailuresTotal += o.FailuresTotal
	s.PingsSent += o.PingsSent
	s.PongsReceived += o.PongsReceived
	s.PongsMissed += o.PongsMissed
	s.Sends += o.Sends
	s.Acks += o.Acks
	s.Msgs += o.Msgs
	s.Receipts += o.Receipts
	s.Replayed += o.Replayed
	s.Resumes += o.Resumes
	s.Resumed += o.Resumed
	s.BytesIn += o.BytesIn
	s.BytesOut += o.BytesOut
	s.Failures = mergeMap(s.Failures, o.Failures)
	s.Errors = mergeMap(s.Errors, o.Errors)
	s.ConnectHist, s.ConnectP50Ms, s.ConnectP99Ms, s.ConnectMaxMs = mergeHist(
		s.ConnectHist, o.ConnectHist,
		[3]float64{s.ConnectP50Ms, s.ConnectP99Ms, s.ConnectMaxMs},
		[3]float64{o.ConnectP50Ms, o.ConnectP99Ms, o.ConnectMaxMs})
	s.RoundTripHist, s.RoundTripP50Ms, s.RoundTripP99Ms, s.RoundTripMaxMs = mergeHist(
		s.RoundTripHist, o.RoundTripHist,
		[3]float64{s.RoundTripP50Ms, s.RoundTripP99Ms, s.RoundTripMaxMs},
		[3]float64{o.RoundTripP50Ms, o.RoundTripP99Ms, o.RoundTripMaxMs})
}

func mergeMap(a, b map[string]int64) map[string]int64 {
	if len(b) == 0 {
		return a
	}
	if a == nil {
		a = make(map[string]int64, len(b))
	}
	for k, v := range b {
		a[k] += v
	}
	return a
}

func mergeHist(a, b string, pa, pb [3]float64) (string, float64, float64, float64) {
	ha, errA := DecodeHist(a)
	hb, errB := DecodeHist(b)
	if errA != nil || errB != nil {
		if a == "" && b != "" && pa == [3]float64{} {
			return b, pb[0], pb[1], pb[2]
		}
		return a, max(pa[0], pb[0]), max(pa[1], pb[1]), max(pa[2], pb[2])
	}
	ha.Merge(hb)
	if ha.TotalCount() == 0 {
		return encodeHist(ha), 0, 0, 0
	}
	return encodeHist(ha), msAt(ha, 50), msAt(ha, 99), float64(ha.Max()) / 1000
}

func encodeHist(h *hdrhistogram.Histogram) string {
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return ""
	}
	return string(b)
}

// DecodeHist decodes a histogram of Stats (ConnectHist, RoundTripHist):
// values are microseconds.
func DecodeHist(s string) (*hdrhistogram.Histogram, error) {
	if s == "" {
		return nil, errors.New("swarm: no histogram")
	}
	return hdrhistogram.Decode([]byte(s))
}

package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatd-dev/chatd/wire"
)

// metrics are the gateway's Prometheus collectors. They always exist (an
// increment is cheaper than a nil check everywhere) and are registered only
// when Deps.Metrics is set. Per-type counters are resolved once, so the hot
// path never looks up a label.
type metrics struct {
	open          prometheus.Gauge
	accepted      prometheus.Counter
	authenticated prometheus.Counter
	hsFailed      *prometheus.CounterVec
	framesInVec   *prometheus.CounterVec
	framesOutVec  *prometheus.CounterVec
	errorsVec     *prometheus.CounterVec
	bytesIn       prometheus.Counter
	bytesOut      prometheus.Counter
	drops         *prometheus.CounterVec
	closes        *prometheus.CounterVec
	produced      prometheus.Counter
	produceErrors prometheus.Counter
	// produceSeconds is the time from handing a record to the producer to
	// the broker's acknowledgement (or the failure): the gateway's half of
	// the core's chatd_inbound_delay_seconds, which also counts the wait
	// for the core's consumer.
	produceSeconds    prometheus.Histogram
	rateLimited       prometheus.Counter
	protocolErrors    prometheus.Counter
	registryCalls     *prometheus.CounterVec
	registryErrors    prometheus.Counter
	badBatches        prometheus.Counter
	routedUnknown     prometheus.Counter
	typingDropped     prometheus.Counter
	unfocused         prometheus.Counter
	presenceAnnounced prometheus.Counter
	presenceSent      prometheus.Counter
	// presenceConfirmed counts users whose new watches a confirming read
	// checked (topics.go), by outcome.
	presenceConfirmed *prometheus.CounterVec
	presenceTopics    prometheus.Gauge
	channelSent       prometheus.Counter

	in, out [wire.LastType + 2]prometheus.Counter // by type; the last is "unknown"
}

func newMetrics() *metrics {
	const ns, sub = "chatd", "gateway"
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	vec := func(name, help, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, []string{label})
	}
	m := &metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "connections_open", Help: "Open client connections, in any state."}),
		accepted:      counter("connections_accepted_total", "TCP connections accepted."),
		authenticated: counter("connections_authenticated_total", "Connections that got a WELCOME."),
		hsFailed:      vec("handshakes_failed_total", "Connections that did not reach WELCOME, by reason.", "reason"),
		framesInVec:   vec("frames_in_total", "Complete frames received from clients, by type.", "type"),
		framesOutVec:  vec("frames_out_total", "Frames written to clients, by type.", "type"),
		errorsVec:     vec("errors_sent_total", "ERROR frames sent to clients (connection kept), by code.", "code"),
		bytesIn:       counter("bytes_in_total", "Bytes read from client sockets."),
		bytesOut:      counter("bytes_out_total", "Bytes written to client sockets."),
		drops:         vec("queue_dropped_frames_total", "Outbound frames dropped, by reason (slow_consumer, closed).", "reason"),
		closes:        vec("closes_total", "Connections closed, by reason.", "reason"),
		produced:      counter("produced_total", "Records handed to the producer."),
		produceErrors: counter("produce_errors_total", "Records the producer failed (answered ERROR unavailable)."),
		produceSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name:    "produce_seconds",
			Help:    "Time from handing a record to the producer to the broker's acknowledgement or the failure.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		rateLimited:       counter("rate_limited_total", "Frames dropped by the per-connection rate limit."),
		protocolErrors:    counter("websocket_protocol_errors_total", "Connections closed for a WebSocket protocol violation."),
		registryCalls:     vec("registry_calls_total", "Registry calls, by operation.", "op"),
		registryErrors:    counter("registry_errors_total", "Registry calls that failed."),
		badBatches:        counter("routed_bad_batches_total", "Routed batches that did not decode."),
		routedUnknown:     counter("routed_unknown_conns_total", "Routed deliveries to connections this gateway no longer has."),
		typingDropped:     counter("typing_stopped_ignored_total", "TYPING stopped frames for a conversation the connection was not typing in (no-ops, dropped)."),
		unfocused:         counter("typing_unfocused_total", "Routed TYPING and PRESENCE deliveries skipped because the connection's FOCUS is another conversation."),
		presenceAnnounced: counter("presence_announced_total", "Presence changes of this gateway's users published (to the users' presence topics, or to every gateway when the router has no topics)."),
		presenceTopics: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "presence_topics", Help: "Presence topics this gateway holds: users some connection of it watches."}),
		presenceSent: counter("presence_changes_sent_total", "PRESENCE frames sent to connections watching a user whose presence changed."),
		presenceConfirmed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "presence_watches_confirmed_total",
			Help: "Users whose new watches were checked by a presence read once their topic was held: result=read (checked; watchers whose online state differed were sent the current one) or overtaken (a change came over the topic during the read, which was dropped)."},
			[]string{"result"}),
		channelSent: counter("channel_frames_sent_total", "Channel MSG and TYPING frames written to connections focused on the channel (the pull model)."),
	}
	for t := range m.in {
		name := "unknown"
		if wire.KnownType(wire.Type(t)) {
			name = wire.Type(t).String()
		}
		m.in[t] = m.framesInVec.WithLabelValues(name)
		m.out[t] = m.framesOutVec.WithLabelValues(name)
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.open, m.accepted, m.authenticated, m.hsFailed, m.framesInVec,
		m.framesOutVec, m.errorsVec, m.bytesIn, m.bytesOut, m.drops, m.closes, m.produced,
		m.produceErrors, m.produceSeconds, m.rateLimited, m.protocolErrors, m.registryCalls, m.registryErrors,
		m.badBatches, m.routedUnknown, m.typingDropped, m.unfocused, m.presenceAnnounced, m.presenceSent, m.presenceConfirmed, m.presenceTopics, m.channelSent}
}

func (m *metrics) register(r *prometheus.Registry) error {
	for i, c := range m.collectors() {
		if err := r.Register(c); err != nil {
			for _, done := range m.collectors()[:i] {
				r.Unregister(done)
			}
			return err
		}
	}
	return nil
}

func (m *metrics) unregister(r *prometheus.Registry) {
	for _, c := range m.collectors() {
		r.Unregister(c)
	}
}

func typeIndex(t wire.Type) int {
	if wire.KnownType(t) {
		return int(t)
	}
	return int(wire.LastType) + 1
}

func (m *metrics) framesIn(t wire.Type) prometheus.Counter  { return m.in[typeIndex(t)] }
func (m *metrics) framesOut(t wire.Type) prometheus.Counter { return m.out[typeIndex(t)] }

func (m *metrics) errorsOut(code wire.Code) prometheus.Counter {
	return m.errorsVec.WithLabelValues(code.String())
}

func (m *metrics) handshakeFailed(reason string) { m.hsFailed.WithLabelValues(reason).Inc() }

package messages

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the processor's Prometheus collectors.
type Metrics struct {
	Acked       prometheus.Counter
	Deduped     prometheus.Counter
	Replayed    prometheus.Counter
	Dropped     prometheus.Counter
	RouteErrors prometheus.Counter
	EventErrors prometheus.Counter
	// SeqConflicts counts batches the store refused because another core
	// committed to one of their conversations first (store.ErrSeqConflict):
	// a partition moved while this core still held a batch of it.
	SeqConflicts prometheus.Counter
	// ReceiptsCoalesced counts receipt pointer updates merged into an
	// earlier update of the same pointer in the same batch.
	ReceiptsCoalesced prometheus.Counter
	// ReceiptsSkipped counts "delivered" receipts ignored in groups over
	// DeliveredMaxGroup members.
	ReceiptsSkipped prometheus.Counter
	// ReceiptWrites counts receipt pointer rows the store wrote (updates
	// that advanced a pointer).
	ReceiptWrites prometheus.Counter
	// ImpliedReads counts Seen pointer rows the store wrote because their
	// user sent a message or joined a group (impliedRead).
	ImpliedReads prometheus.Counter
	// ReceiptsHeld is how many group receipt pointers are held, not yet
	// written (see behind.go).
	ReceiptsHeld  prometheus.Gauge
	Errors        *prometheus.CounterVec
	CommitSeconds prometheus.Histogram
	// InboundDelay is the time from the gateway receiving a frame to the
	// core handling it: the Kafka hop plus the consumer's queueing.
	InboundDelay prometheus.Histogram
}

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Acked:             prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_messages_acked_total", Help: "SENDs acknowledged (new and resent)."}),
		Deduped:           prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_messages_deduped_total", Help: "SENDs answered from the client_msg_id dedupe entry."}),
		Replayed:          prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_messages_replayed_total", Help: "Messages replayed for RESUME."}),
		Dropped:           prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_inbound_dropped_total", Help: "Inbound records that did not decode."}),
		RouteErrors:       prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_core_route_errors_total", Help: "Replies the router refused."}),
		EventErrors:       prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_core_event_produce_errors_total", Help: "chat.events produce attempts that failed and were retried."}),
		SeqConflicts:      prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_core_seq_conflicts_total", Help: "Inbound batches the store refused because another core committed to one of their conversations first (a partition moved); each is redone from the stored last seq."}),
		ReceiptsCoalesced: prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_receipts_coalesced_total", Help: "Receipt pointer updates merged into an earlier update of the same pointer in the same inbound batch."}),
		ReceiptsSkipped:   prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_receipts_skipped_total", Help: "Delivered receipts ignored in groups over 256 members."}),
		ReceiptWrites:     prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_receipt_pointer_writes_total", Help: "Receipt pointer rows written to the store (updates that advanced a pointer)."}),
		ImpliedReads:      prometheus.NewCounter(prometheus.CounterOpts{Name: "chatd_implied_read_pointer_writes_total", Help: "Seen pointer rows written because their user sent a message in the conversation or joined the group (writing implies having seen)."}),
		ReceiptsHeld:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "chatd_receipt_pointers_held", Help: "Group receipt pointer updates held for write-behind, not yet written to the store (their records are not committed)."}),
		Errors:            prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatd_core_errors_total", Help: "ERROR frames sent by the core, by code."}, []string{"code"}),
		CommitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "chatd_store_commit_seconds", Help: "Durable store commit latency per inbound batch.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		InboundDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "chatd_inbound_delay_seconds", Help: "Time from the gateway receiving a frame to the core handling it (Kafka hop and consumer queueing).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Acked, m.Deduped, m.Replayed, m.Dropped, m.RouteErrors, m.EventErrors, m.SeqConflicts, m.ReceiptsCoalesced, m.ReceiptsSkipped, m.ReceiptWrites, m.ImpliedReads, m.ReceiptsHeld, m.Errors, m.CommitSeconds, m.InboundDelay)
	}
	return m
}

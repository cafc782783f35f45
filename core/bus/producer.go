package bus

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Producer produces to one topic through a franz-go client built with
// Config.ProducerOpts. It is safe for concurrent use; records with the same
// key produced from one goroutine are delivered in that order.
type Producer struct {
	cl    *kgo.Client
	topic string
}

// NewProducer returns a Producer writing to topic with cl. The caller keeps
// ownership of cl (flush and close it on shutdown).
func NewProducer(cl *kgo.Client, topic string) *Producer {
	return &Producer{cl: cl, topic: topic}
}

// pending is one in-flight record. The record and the context wrapper that
// carries done share one allocation, and the promise is a plain function
// (no closure): one allocation per Produce.
type pending struct {
	rec kgo.Record
	ctx doneCtx
}

// doneCtx is the caller's context plus the completion callback. It is the
// record's Context, which is how promise finds done again; cancellation and
// values still come from the caller's context.
type doneCtx struct {
	context.Context
	done func(error)
}

// promise is the kgo promise of every record produced by a Producer.
func promise(r *kgo.Record, err error) {
	if d, ok := r.Context.(*doneCtx); ok && d.done != nil {
		d.done(err)
	}
}

// Produce sends value under key asynchronously and calls done exactly once
// with the result: nil once the record is acknowledged by all in-sync
// replicas, an error otherwise. done may be nil.
//
// Contract:
//   - key and value are owned by the client until done is called: do not
//     modify or reuse them before.
//   - done runs on the client's promise goroutine, serially with every
//     other promise of the client: it must be quick and must not block (in
//     particular it must not call Produce and wait).
//   - Produce never blocks. While the client holds its maximum of buffered
//     records or bytes (franz-go MaxBufferedRecords / MaxBufferedBytes; see
//     GatewayBufferOpts), a new record fails at once with
//     kgo.ErrMaxBuffered: that is the bound on what a gateway holds while
//     Kafka is slow or unreachable, and the caller answers "retry later"
//     instead of stalling its event loop. A buffered record that Kafka does
//     not acknowledge within the delivery timeout (30s) fails too.
//     Cancelling ctx fails a buffered record when it is safe to (not yet
//     sent), with done getting the context's error.
func (p *Producer) Produce(ctx context.Context, key, value []byte, done func(error)) {
	pd := &pending{
		rec: kgo.Record{Topic: p.topic, Key: key, Value: value},
		ctx: doneCtx{Context: ctx, done: done},
	}
	pd.rec.Context = &pd.ctx
	p.cl.TryProduce(&pd.ctx, &pd.rec, promise)
}

// Default bounds of a gateway's produce buffer (GatewayBufferOpts): what one
// gateway holds for Kafka while the brokers are unreachable. 10,000 records
// is ~1 s of a busy gateway's sends (franz-go's default is 50,000);
// 64 MiB caps it when the records are large (a frame is at most 64 KiB).
const (
	DefaultGatewayBufferRecords = 10_000
	DefaultGatewayBufferBytes   = 64 << 20
)

// GatewayBufferOpts bounds a producer client's buffer to records and bytes
// (<= 0: the defaults above). Beyond them Producer.Produce fails records at
// once with kgo.ErrMaxBuffered.
func GatewayBufferOpts(records, bytes int) []kgo.Opt {
	if records <= 0 {
		records = DefaultGatewayBufferRecords
	}
	if bytes <= 0 {
		bytes = DefaultGatewayBufferBytes
	}
	return []kgo.Opt{kgo.MaxBufferedRecords(records), kgo.MaxBufferedBytes(bytes)}
}

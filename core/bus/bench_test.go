package bus

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkProduceConsumeRoundTrip measures the Kafka hop of embedded mode:
// one record produced with Producer (ProducerOpts) and waited for by a group
// consumer (ConsumerOpts) on TopicInbound, one at a time. ns/op is the
// latency from Produce to the record being returned by PollFetches; the
// produce ack is awaited too, before the next op, so ops do not overlap.
func BenchmarkProduceConsumeRoundTrip(b *testing.B) {
	for _, bc := range []struct {
		name string
		o    func(b *testing.B) EmbeddedOptions
	}{
		{"memory", func(*testing.B) EmbeddedOptions { return EmbeddedOptions{} }},
		{"disk", func(b *testing.B) EmbeddedOptions { return EmbeddedOptions{DataDir: b.TempDir()} }},
		{"disk-sync", func(b *testing.B) EmbeddedOptions { return EmbeddedOptions{DataDir: b.TempDir(), SyncWrites: true} }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := startEmbedded(b, bc.o(b))
			cfg := e.Config()
			p := NewProducer(newClient(b, cfg.ProducerOpts()...), TopicInbound)
			ccl := newClient(b, cfg.ConsumerOpts("bench", TopicInbound)...)
			ctx := context.Background()
			key, val := []byte("conv-42"), make([]byte, 200)
			acked := make(chan error, 1)
			done := func(err error) { acked <- err }

			roundTrip := func() {
				p.Produce(ctx, key, val, done)
				for n := 0; n == 0; {
					fs := ccl.PollFetches(ctx)
					if err := fs.Err(); err != nil {
						b.Fatal(err)
					}
					n = fs.NumRecords()
					ccl.AllowRebalance()
				}
				if err := <-acked; err != nil {
					b.Fatal(err)
				}
			}
			roundTrip() // join the group, discover partitions

			lat := make([]time.Duration, 0, 1024)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				roundTrip()
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

package bus

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func startEmbedded(t testing.TB, o EmbeddedOptions) *Embedded {
	t.Helper()
	e, err := StartEmbedded(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Error(err)
		}
	})
	return e
}

func newClient(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	// CloseAllowingRebalance: a BlockRebalanceOnPoll member that polled
	// without AllowRebalance would otherwise block Close forever.
	t.Cleanup(cl.CloseAllowingRebalance)
	return cl
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// readAll reads topic from the start with a group-less consumer until it
// has n records, and returns them.
func readAll(t testing.TB, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := newClient(t,
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	defer cl.Close()
	ctx := ctxT(t, 20*time.Second)
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %s: got %d of %d records: %v", topic, len(out), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

func TestEndToEnd(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{})
	cfg := e.Config()

	pcl := newClient(t, cfg.ProducerOpts()...)
	if err := EnsureTopics(ctxT(t, 10*time.Second), pcl, 8, 1, TopicInbound, TopicEvents); err != nil {
		t.Fatalf("EnsureTopics on existing topics: %v", err)
	}
	p := NewProducer(pcl, TopicInbound)

	const keys, perKey = 20, 50
	var wg sync.WaitGroup
	errs := make(chan error, keys*perKey)
	for i := range perKey {
		for k := range keys {
			wg.Add(1)
			p.Produce(context.Background(), fmt.Appendf(nil, "conv-%d", k), fmt.Appendf(nil, "%d", i), func(err error) {
				if err != nil {
					errs <- err
				}
				wg.Done()
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	ccl := newClient(t, cfg.ConsumerOpts("core", TopicInbound)...)
	ctx := ctxT(t, 20*time.Second)
	next := map[string]int{}
	partOf := map[string]int32{}
	var n int
	for n < keys*perKey {
		fs := ccl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("got %d of %d records", n, keys*perKey)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatal(err) })
		for _, r := range fs.Records() {
			k := string(r.Key)
			if got := string(r.Value); got != fmt.Sprint(next[k]) {
				t.Fatalf("key %s: got value %s, want %d (out of order)", k, got, next[k])
			}
			next[k]++
			if p, ok := partOf[k]; ok && p != r.Partition {
				t.Fatalf("key %s on partitions %d and %d", k, p, r.Partition)
			}
			partOf[k] = r.Partition
			n++
		}
		if err := ccl.CommitRecords(ctx, fs.Records()...); err != nil {
			t.Fatal(err)
		}
		ccl.AllowRebalance()
	}
	if len(next) != keys {
		t.Fatalf("saw %d keys, want %d", len(next), keys)
	}
	parts := map[int32]bool{}
	for _, p := range partOf {
		parts[p] = true
	}
	if len(parts) < 3 {
		t.Fatalf("20 keys hashed to only %d partitions", len(parts))
	}
	ccl.CloseAllowingRebalance() // leaves the group

	// A new member resumes after the commit: it sees only new records.
	p.Produce(ctx, []byte("conv-0"), []byte("after"), nil)
	ccl2 := newClient(t, cfg.ConsumerOpts("core", TopicInbound)...)
	fs := ccl2.PollFetches(ctx)
	recs := fs.Records()
	if len(recs) != 1 || string(recs[0].Value) != "after" {
		var vs []string
		for _, r := range recs {
			vs = append(vs, string(r.Key)+"="+string(r.Value))
		}
		t.Fatalf("after recommit got %v (err %v), want only conv-0=after", vs, fs.Err())
	}
}

func TestEnsureTopics(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{Partitions: 2})
	cl := newClient(t, e.Config().ClientOpts()...)
	ctx := ctxT(t, 10*time.Second)
	for range 2 { // the second call finds them existing
		if err := EnsureTopics(ctx, cl, 3, 1, "t1", "t2"); err != nil {
			t.Fatal(err)
		}
	}
	if err := EnsureTopics(ctx, cl, 0, 0, "t3"); err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]int{"t1": 3, "t2": 3, "t3": 2, TopicInbound: 2, TopicEvents: 2} {
		if got := len(e.c.PartitionInfos(topic)); got != want {
			t.Errorf("%s: %d partitions, want %d", topic, got, want)
		}
	}
	// Errors other than "already exists" are reported, per topic.
	err := EnsureTopics(ctx, cl, 1, 3, "t1", "t4")
	if !errors.Is(err, kerr.InvalidReplicationFactor) || !strings.Contains(err.Error(), "t4") || strings.Contains(err.Error(), "t1") {
		t.Fatalf("replication 3 on one broker: err = %v", err)
	}
	if err := EnsureTopics(ctx, cl, 1, 1); err != nil {
		t.Fatal(err)
	}
}

func TestConfigOpts(t *testing.T) {
	cfg := Config{Brokers: []string{"127.0.0.1:1"}}
	cl := newClient(t, cfg.ProducerOpts()...)
	if got := cl.OptValue(kgo.ProducerLinger); got != time.Duration(0) {
		t.Errorf("linger = %v", got)
	}
	if got := cl.OptValue(kgo.RequiredAcks); got != kgo.AllISRAcks() {
		t.Errorf("acks = %v", got)
	}
	if got := cl.OptValue(kgo.ClientID); got != "chatd" {
		t.Errorf("client id = %v", got)
	}
	if got := cl.OptValue(kgo.DisableIdempotentWrite); got != false {
		t.Errorf("idempotency disabled")
	}
	ccl := newClient(t, cfg.ConsumerOpts("g", TopicEvents)...)
	if got := ccl.OptValue(kgo.FetchMaxWait); got != fetchMaxWait {
		t.Errorf("fetch max wait = %v", got)
	}
	if got := ccl.OptValue(kgo.ConsumerGroup); got != "g" {
		t.Errorf("group = %v", got)
	}
	if got := ccl.OptValue(kgo.BlockRebalanceOnPoll); got != true {
		t.Errorf("block rebalance on poll = %v", got)
	}
	if got := ccl.OptValue(kgo.DisableAutoCommit); got != true {
		t.Errorf("autocommit enabled")
	}
	// Cooperative-sticky: a partition move revokes only the partitions that
	// move, so the other core instances keep consuming through a rebalance.
	if bs, ok := ccl.OptValue(kgo.Balancers).([]kgo.GroupBalancer); !ok || len(bs) != 1 || bs[0].ProtocolName() != "cooperative-sticky" || !bs[0].IsCooperative() {
		t.Errorf("balancers = %#v, want only cooperative-sticky", ccl.OptValue(kgo.Balancers))
	}

	// The partitioner is Kafka's default for keyed records:
	// toPositive(murmur2(key)) % partitions. The hashes are the test
	// vectors of Kafka's UtilsTest.testMurmur2.
	tp := kgo.StickyKeyPartitioner(nil).ForTopic(TopicInbound)
	for key, h := range map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	} {
		for _, n := range []int{8, 1000} {
			want := int(h&0x7fffffff) % n
			if got := tp.Partition(&kgo.Record{Key: []byte(key)}, n); got != want {
				t.Errorf("key %q, %d partitions: got %d, want %d", key, n, got, want)
			}
		}
	}
}

func TestProduceFailureCallsDoneOnce(t *testing.T) {
	// Nothing listens on port 1: the record cannot be sent, so cancelling
	// the context fails it.
	cl := newClient(t, Config{Brokers: []string{"127.0.0.1:1"}}.ProducerOpts()...)
	p := NewProducer(cl, TopicInbound)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	calls := make(chan error, 2)
	p.Produce(ctx, []byte("k"), []byte("v"), func(err error) { calls <- err })
	select {
	case err := <-calls:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("done(%v), want deadline exceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("done not called")
	}
	select {
	case err := <-calls:
		t.Fatalf("done called twice (second: %v)", err)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestProduceAllocs(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{Partitions: 1})
	cl := newClient(t, e.Config().ProducerOpts()...)
	p := NewProducer(cl, TopicInbound)
	key, val := []byte("conv"), []byte("hello")
	var wg sync.WaitGroup
	done := func(error) { wg.Done() }
	n := testing.AllocsPerRun(200, func() {
		wg.Add(1)
		p.Produce(context.Background(), key, val, done)
	})
	wg.Wait()
	t.Logf("allocs per Produce call (ours + franz-go's buffering): %.1f", n)
}

// dirBytes sums the sizes of files under dir whose name ends in suffix.
func dirBytes(t testing.TB, dir, suffix string) int64 {
	var n int64
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, suffix) {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRetentionBytes(t *testing.T) {
	dir := t.TempDir()
	const retBytes, segBytes = 64 << 10, 16 << 10
	o := EmbeddedOptions{
		DataDir:        dir,
		Partitions:     1,
		RetentionBytes: retBytes,
		SegmentBytes:   segBytes,
		RetentionCheck: 20 * time.Millisecond,
	}
	e := startEmbedded(t, o)
	cl := newClient(t, e.Config().ProducerOpts()...)
	ctx := ctxT(t, 30*time.Second)
	val := make([]byte, 1024)
	const calls, per = 256, 8 // 2 MiB in batches of ~8 KiB
	maxDisk := int64(0)
	for i := range calls {
		recs := make([]*kgo.Record, per)
		for j := range recs {
			recs[j] = &kgo.Record{Topic: TopicInbound, Key: []byte("k"), Value: val}
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if i%16 == 0 {
			maxDisk = max(maxDisk, dirBytes(t, dir, ".dat"))
		}
	}
	waitFor(t, "retention pass", 5*time.Second, func() bool {
		return e.c.PartitionInfo(TopicInbound, 0).NumBytes <= retBytes
	})
	pi := e.c.PartitionInfo(TopicInbound, 0)
	disk := dirBytes(t, dir, ".dat")
	maxDisk = max(maxDisk, disk)
	t.Logf("produced %d KiB; log start %d, end %d; retained %d KiB; .dat on disk now %d KiB, max seen %d KiB",
		calls*per, pi.LogStartOffset, pi.HighWatermark, pi.NumBytes>>10, disk>>10, maxDisk>>10)
	if pi.HighWatermark != calls*per || pi.LogStartOffset < calls*per-retBytes/1024 {
		t.Fatalf("log start %d, end %d: retention did not advance the start", pi.LogStartOffset, pi.HighWatermark)
	}
	// Segment files are deleted once entirely below the log start: on
	// disk is at most the retained bytes, plus the partly trimmed oldest
	// segment, plus one batch of overshoot in the active segment.
	if bound := int64(retBytes + segBytes + 2*per*1100); disk > bound {
		t.Fatalf("%d bytes of segments on disk, bound %d", disk, bound)
	}
	// Sampled during the run (retention passes every 20ms, so the log
	// can grow between passes, but nowhere near the 2 MiB produced).
	if maxDisk > 1<<20 {
		t.Fatalf("disk reached %d bytes during the run", maxDisk)
	}
	recs := readAll(t, e.Addrs(), TopicInbound, int(pi.HighWatermark-pi.LogStartOffset))
	if recs[0].Offset != pi.LogStartOffset {
		t.Fatalf("first readable offset %d, log start %d", recs[0].Offset, pi.LogStartOffset)
	}

	// The bound holds across a restart with a smaller limit: the first
	// pass runs at start, without waiting for the ticker (which would
	// never run in kfake after a reload).
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	o.RetentionBytes = 16 << 10
	o.RetentionCheck = time.Hour
	e2 := startEmbedded(t, o)
	pi2 := e2.c.PartitionInfo(TopicInbound, 0)
	if pi2.NumBytes > 16<<10 || pi2.HighWatermark != pi.HighWatermark || pi2.LogStartOffset <= pi.LogStartOffset {
		t.Fatalf("after restart: %+v (before %+v)", pi2, pi)
	}
}

func TestRetentionTime(t *testing.T) {
	dir := t.TempDir()
	e := startEmbedded(t, EmbeddedOptions{
		DataDir:        dir,
		Partitions:     1,
		Retention:      200 * time.Millisecond,
		RetentionCheck: 20 * time.Millisecond,
	})
	cl := newClient(t, e.Config().ProducerOpts()...)
	ctx := ctxT(t, 10*time.Second)
	for i := range 10 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: TopicInbound, Value: fmt.Appendf(nil, "%d", i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if dirBytes(t, dir, ".dat") == 0 {
		t.Fatal("nothing on disk")
	}
	waitFor(t, "time retention", 5*time.Second, func() bool {
		pi := e.c.PartitionInfo(TopicInbound, 0)
		return pi.LogStartOffset == 10 && pi.HighWatermark == 10
	})
	waitFor(t, "segment deletion", 5*time.Second, func() bool { return dirBytes(t, dir, ".dat") == 0 })
}

// committedOffsets returns, per partition, the offset after the last of recs.
func committedOffsets(recs []*kgo.Record) map[int32]int64 {
	m := map[int32]int64{}
	for _, r := range recs {
		m[r.Partition] = max(m[r.Partition], r.Offset+1)
	}
	return m
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	e, err := StartEmbedded(EmbeddedOptions{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	firstAddr := e.Addrs()[0]
	cfg := e.Config()
	pcl := newClient(t, cfg.ProducerOpts()...)
	ctx := ctxT(t, 30*time.Second)
	const n = 500
	want := map[string]bool{}
	var recs []*kgo.Record
	for i := range n {
		v := fmt.Sprintf("msg-%d", i)
		want[v] = true
		recs = append(recs, &kgo.Record{Topic: TopicInbound, Key: fmt.Appendf(nil, "conv-%d", i%37), Value: []byte(v)})
	}
	if err := pcl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	pcl.Close()

	// Consume part of it and commit.
	ccl := newClient(t, cfg.ConsumerOpts("core", TopicInbound)...)
	var consumed []*kgo.Record
	for len(consumed) < n/3 {
		fs := ccl.PollRecords(ctx, 50)
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
		consumed = append(consumed, fs.Records()...)
		ccl.AllowRebalance()
	}
	if err := ccl.CommitRecords(ctx, consumed...); err != nil {
		t.Fatal(err)
	}
	committed := committedOffsets(consumed)
	ccl.Close()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopen on the same directory (on another free port).
	e2 := startEmbedded(t, EmbeddedOptions{DataDir: dir})
	if e2.Addrs()[0] == firstAddr {
		t.Logf("same port reused: %s", firstAddr)
	}
	if stored := fetchCommitted(t, e2, "core", TopicInbound); !maps.Equal(stored, committed) {
		t.Fatalf("stored commits %v, committed %v", stored, committed)
	}
	all := readAll(t, e2.Addrs(), TopicInbound, n)
	got := map[string]bool{}
	for _, r := range all {
		got[string(r.Value)] = true
	}
	if len(all) != n || len(got) != n {
		t.Fatalf("after reopen: %d records, %d distinct, want %d", len(all), len(got), n)
	}

	// The group resumes exactly at its commits: every record at or after
	// a partition's commit, and none before, is delivered again.
	wantRest := map[string]bool{}
	for _, r := range all {
		if r.Offset >= committed[r.Partition] {
			wantRest[string(r.Value)] = true
		}
	}
	ccl2 := newClient(t, e2.Config().ConsumerOpts("core", TopicInbound)...)
	gotRest := map[string]bool{}
	for len(gotRest) < len(wantRest) {
		fs := ccl2.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("resumed group got %d of %d records", len(gotRest), len(wantRest))
		}
		for _, r := range fs.Records() {
			if r.Offset < committed[r.Partition] {
				t.Fatalf("partition %d: redelivered offset %d below commit %d", r.Partition, r.Offset, committed[r.Partition])
			}
			gotRest[string(r.Value)] = true
		}
		ccl2.AllowRebalance()
	}
	if len(wantRest) != n-len(consumed) {
		t.Fatalf("commit covered %d records, consumed %d", n-len(wantRest), len(consumed))
	}
	parts := make([]int32, 0, len(committed))
	for p := range committed {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	t.Logf("committed %d of %d records over partitions %v; resumed group got the other %d", len(consumed), n, parts, len(gotRest))
}

func TestCloseIdempotent(t *testing.T) {
	e, err := StartEmbedded(EmbeddedOptions{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestFixedPort(t *testing.T) {
	// Find a free port, then ask for it.
	e := startEmbedded(t, EmbeddedOptions{})
	addr := e.Addrs()[0]
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	var port int
	fmt.Sscanf(addr[strings.LastIndexByte(addr, ':')+1:], "%d", &port)
	e2, err := StartEmbedded(EmbeddedOptions{Port: port})
	if err != nil {
		t.Skipf("port %d taken meanwhile: %v", port, err)
	}
	defer e2.Close()
	if got := e2.Addrs()[0]; got != addr || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Fatalf("listening on %s, want %s", got, addr)
	}
}

// TestEmbeddedDefaults checks that the retention defaults reach the broker
// configs. (kfake's DescribeConfigs of a topic lists its static topic
// defaults next to the broker values instead of resolving them; retention
// uses the broker values, as TestRetentionBytes shows.)
func TestEmbeddedDefaults(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{})
	cl := newClient(t, e.Config().ClientOpts()...)
	req := kmsg.NewPtrDescribeConfigsRequest()
	rr := kmsg.NewDescribeConfigsRequestResource()
	rr.ResourceType = kmsg.ConfigResourceTypeBroker
	rr.ResourceName = "0"
	rr.ConfigNames = []string{"log.retention.ms", "log.retention.bytes", "log.segment.bytes"}
	req.Resources = append(req.Resources, rr)
	resp, err := req.RequestWith(ctxT(t, 10*time.Second), cl)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range resp.Resources {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			t.Fatal(err)
		}
		for _, c := range r.Configs {
			if c.Value != nil {
				got[c.Name] = *c.Value
			}
		}
	}
	want := map[string]string{
		"log.retention.ms":    fmt.Sprint(DefaultRetention.Milliseconds()),
		"log.retention.bytes": fmt.Sprint(DefaultRetentionBytes),
		"log.segment.bytes":   fmt.Sprint(DefaultSegmentBytes),
	}
	if !maps.Equal(got, want) {
		t.Fatalf("broker configs %v, want %v", got, want)
	}
	if n := len(e.c.PartitionInfos(TopicEvents)); n != DefaultPartitions {
		t.Fatalf("%s has %d partitions", TopicEvents, n)
	}
}

// TestProduceBufferBound: while no broker answers, a producer with
// GatewayBufferOpts holds up to its bound and fails every record beyond it
// at once with ErrMaxBuffered. When the broker appears, the held records
// are delivered, each once.
func TestProduceBufferBound(t *testing.T) {
	// A port with nothing on it yet; the broker starts there later.
	probe := startEmbedded(t, EmbeddedOptions{})
	addr := probe.Addrs()[0]
	if err := probe.Close(); err != nil {
		t.Fatal(err)
	}
	const bound = 3
	cl := newClient(t, append(Config{Brokers: []string{addr}}.ProducerOpts(), GatewayBufferOpts(bound, 0)...)...)
	p := NewProducer(cl, TopicInbound)
	results := make(chan error, 10)
	for i := 0; i < bound+2; i++ {
		p.Produce(context.Background(), []byte("k"), fmt.Appendf(nil, "v%d", i), func(err error) { results <- err })
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-results:
			if !errors.Is(err, kgo.ErrMaxBuffered) {
				t.Fatalf("record beyond the bound: done(%v), want ErrMaxBuffered", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("records beyond the bound were not failed at once")
		}
	}
	select {
	case err := <-results:
		t.Fatalf("a held record completed with no broker: %v", err)
	case <-time.After(200 * time.Millisecond):
	}

	var port int
	fmt.Sscanf(addr[strings.LastIndexByte(addr, ':')+1:], "%d", &port)
	e, err := StartEmbedded(EmbeddedOptions{Port: port, Partitions: 1})
	if err != nil {
		t.Skipf("port %d taken meanwhile: %v", port, err)
	}
	t.Cleanup(func() { _ = e.Close() })
	if err := EnsureTopics(ctxT(t, 10*time.Second), newClient(t, Config{Brokers: e.Addrs()}.ClientOpts()...), 1, 1, TopicInbound); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < bound; i++ {
		select {
		case err := <-results:
			if err != nil {
				t.Fatalf("held record: done(%v), want nil once the broker is up", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("held records were not delivered once the broker was up")
		}
	}
	recs := readAll(t, e.Addrs(), TopicInbound, bound)
	got := map[string]int{}
	for _, r := range recs {
		got[string(r.Value)]++
	}
	for i := 0; i < bound; i++ {
		if v := fmt.Sprintf("v%d", i); got[v] != 1 {
			t.Errorf("record %s delivered %d times, want 1 (all: %v)", v, got[v], got)
		}
	}
	if len(recs) != bound {
		t.Errorf("%d records in the topic, want %d", len(recs), bound)
	}
}

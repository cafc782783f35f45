package store_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/core/store/storetest"
	"github.com/chatd-dev/chatd/wire"
)

// quietLogger drops Pebble's informational lines (WAL replay, ...).
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "pebble: "+format+"\n", a...)
}
func (quietLogger) Fatalf(format string, a ...any) { panic(fmt.Sprintf("pebble: "+format, a...)) }

var testOpts = store.PebbleOptions{Logger: quietLogger{}}

func openPebble(t testing.TB, dir string) *store.Pebble {
	t.Helper()
	p, err := store.OpenPebble(dir, testOpts)
	if err != nil {
		t.Fatalf("OpenPebble: %v", err)
	}
	return p
}

func TestPebbleContract(t *testing.T) {
	var dirs sync.Map // store.Store -> its directory
	storetest.Run(t, storetest.Options{
		Open: func(t *testing.T) store.Store {
			dir := t.TempDir()
			p := openPebble(t, dir)
			dirs.Store(p, dir)
			return p
		},
		Reopen: func(t *testing.T, old store.Store) store.Store {
			dir, ok := dirs.Load(old)
			if !ok {
				t.Fatal("Reopen: unknown store")
			}
			if err := old.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			p := openPebble(t, dir.(string))
			dirs.Store(p, dir)
			return p
		},
	})
}

func msgAt(conv, seq uint64) store.Message {
	return store.Message{
		ConvID:       conv,
		MessageID:    conv<<32 | seq,
		Seq:          seq,
		ServerTimeMS: 1_700_000_000_000 + seq,
		Sender:       "alice",
		SenderDevice: "phone",
		ClientMsgID:  "c" + strconv.FormatUint(seq, 10),
		Kind:         wire.KindText,
		Body:         fmt.Appendf(nil, "body %d/%d", conv, seq),
	}
}

// TestPebbleExtremeIDs covers key-range edges the contract suite cannot use
// (it draws random ids): conversations 0 and 2^64-1, whose message ranges
// border other tables.
func TestPebbleExtremeIDs(t *testing.T) {
	p := openPebble(t, t.TempDir())
	defer p.Close()
	ctx := context.Background()
	top := ^uint64(0)
	for _, conv := range []uint64{0, 1, top - 1, top} {
		var b store.Batch
		for seq := uint64(1); seq <= 3; seq++ {
			b.Messages = append(b.Messages, msgAt(conv, seq))
		}
		b.Messages = append(b.Messages, msgAt(conv, top))
		b.Pointers = append(b.Pointers, store.PointerUpdate{ConvID: conv, User: "", Kind: wire.ReceiptRead, Seq: top})
		if err := p.Commit(ctx, &b); err != nil {
			t.Fatal(err)
		}
		if _, err := p.EnsureConversation(ctx, store.Conversation{ID: conv, Kind: wire.ConvGroup, Members: []string{"", "u"}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, conv := range []uint64{0, 1, top - 1, top} {
		ms, err := p.MessagesAfter(ctx, conv, 0, 100)
		if err != nil || len(ms) != 4 || ms[0].Seq != 1 || ms[3].Seq != top || ms[3].ConvID != conv {
			t.Errorf("MessagesAfter(%d) = %v, %v", conv, len(ms), err)
		}
		ms, more, err := p.MessagesBefore(ctx, conv, 0, 2)
		if err != nil || len(ms) != 2 || ms[0].Seq != 3 || ms[1].Seq != top || !more {
			t.Errorf("MessagesBefore(%d) = %v, %v, %v", conv, len(ms), more, err)
		}
		ms, err = p.MessagesAfter(ctx, conv, top-1, 100)
		if err != nil || len(ms) != 1 || ms[0].Seq != top {
			t.Errorf("MessagesAfter(%d, top-1) = %v, %v", conv, len(ms), err)
		}
		if last, err := p.LastSeq(ctx, conv); err != nil || last != top {
			t.Errorf("LastSeq(%d) = %d, %v", conv, last, err)
		}
		if ptr, err := p.Pointers(ctx, conv, ""); err != nil || ptr.Read != top {
			t.Errorf("Pointers(%d, \"\") = %+v, %v", conv, ptr, err)
		}
	}
	for _, u := range []string{"", "u"} {
		ids, err := p.UserConversations(ctx, u)
		if err != nil || fmt.Sprint(ids) != fmt.Sprint([]uint64{0, 1, top - 1, top}) {
			t.Errorf("UserConversations(%q) = %v, %v", u, ids, err)
		}
	}
}

func TestPebbleContextCanceled(t *testing.T) {
	p := openPebble(t, t.TempDir())
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Commit(ctx, &store.Batch{Messages: []store.Message{msgAt(1, 1)}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Commit(canceled) = %v", err)
	}
	if _, err := p.MessagesAfter(ctx, 1, 0, 10); !errors.Is(err, context.Canceled) {
		t.Errorf("MessagesAfter(canceled) = %v", err)
	}
	if last, err := p.LastSeq(context.Background(), 1); err != nil || last != 0 {
		t.Errorf("LastSeq after canceled Commit = %d, %v", last, err)
	}
}

func TestPebbleDirLocked(t *testing.T) {
	dir := t.TempDir()
	p := openPebble(t, dir)
	if q, err := store.OpenPebble(dir, testOpts); err == nil {
		q.Close()
		t.Error("second OpenPebble of an open dir succeeded")
	}
	p.Close()
	openPebble(t, dir).Close()
}

// TestPebbleCloseDuringCalls closes the store under concurrent callers:
// each call must return nil or ErrClosed, never panic.
func TestPebbleCloseDuringCalls(t *testing.T) {
	p := openPebble(t, t.TempDir())
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := uint64(1); ; i++ {
				var err error
				switch g {
				case 0:
					err = p.Commit(ctx, &store.Batch{Messages: []store.Message{msgAt(1, i)}})
				case 1:
					_, err = p.MessagesAfter(ctx, 1, 0, 100)
				case 2:
					_, _, err = p.MessagesBefore(ctx, 1, 0, 100)
				case 3:
					_, _, err = p.LookupClientMsg(ctx, 1, "alice", "c1")
				}
				if errors.Is(err, store.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("goroutine %d: %v", g, err)
					return
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
}

// TestPebblePowerLoss commits on a file system that can forget everything
// not fsynced, "loses power" after each Commit, and checks that everything
// committed is in the clone.
func TestPebblePowerLoss(t *testing.T) {
	fs := vfs.NewCrashableMem()
	p, err := store.OpenPebbleFS("db", testOpts, fs)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	var last uint64
	for round := range 20 {
		var b store.Batch
		for range 1 + rng.IntN(10) {
			last++
			b.Messages = append(b.Messages, msgAt(7, last))
		}
		b.Pointers = append(b.Pointers, store.PointerUpdate{ConvID: 7, User: "bob", Kind: wire.ReceiptDelivered, Seq: last})
		if err := p.Commit(ctx, &b); err != nil {
			t.Fatal(err)
		}
		if round%5 != 4 {
			continue
		}
		crashed := fs.CrashClone(vfs.CrashCloneCfg{})
		q, err := store.OpenPebbleFS("db", testOpts, crashed)
		if err != nil {
			t.Fatalf("open after power loss: %v", err)
		}
		checkLog(t, q, 7, last, last)
		if ptr, err := q.Pointers(ctx, 7, "bob"); err != nil || ptr.Delivered != last {
			t.Errorf("round %d: Pointers after power loss = %+v, %v; want delivered %d", round, ptr, err, last)
		}
		q.Close()
	}
}

// checkLog checks that conv holds exactly the messages 1..LastSeq, intact,
// and that LastSeq >= atLeast (and <= atMost when atMost > 0). It returns
// LastSeq.
func checkLog(t *testing.T, s store.Store, conv, atLeast, atMost uint64) uint64 {
	t.Helper()
	ctx := context.Background()
	last, err := s.LastSeq(ctx, conv)
	if err != nil {
		t.Fatalf("LastSeq: %v", err)
	}
	if last < atLeast || (atMost > 0 && last > atMost) {
		t.Errorf("LastSeq = %d, want %d..%d", last, atLeast, atMost)
	}
	var next uint64
	for {
		page, err := s.MessagesAfter(ctx, conv, next, store.MaxLimit)
		if err != nil {
			t.Fatalf("MessagesAfter: %v", err)
		}
		if len(page) == 0 {
			break
		}
		for _, m := range page {
			want := msgAt(conv, next+1)
			if m.Seq != want.Seq {
				t.Fatalf("gap: seq %d follows %d", m.Seq, next)
			}
			if m.MessageID != want.MessageID || m.ClientMsgID != want.ClientMsgID || !bytes.Equal(m.Body, want.Body) {
				t.Fatalf("message %d damaged: %+v", m.Seq, m)
			}
			next = m.Seq
		}
	}
	if next != last {
		t.Errorf("messages end at %d, LastSeq is %d", next, last)
	}
	return last
}

const crashDirEnv = "CHATD_STORE_CRASH_DIR"

// TestHelperProcess is the child of TestPebbleCrashDurability: it commits
// batches to conversation 7 forever, printing "committed <seq>" (the batch's
// highest seq) after each Commit returns, until it is killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process of TestPebbleCrashDurability")
	}
	p, err := store.OpenPebble(dir, testOpts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	ctx := context.Background()
	last, err := p.LastSeq(ctx, 7)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	deadline := time.Now().Add(time.Minute) // in case the parent is gone
	var b store.Batch
	for time.Now().Before(deadline) {
		b.Reset()
		for range 1 + last%7 {
			last++
			b.Messages = append(b.Messages, msgAt(7, last))
		}
		b.Pointers = append(b.Pointers, store.PointerUpdate{ConvID: 7, User: "bob", Kind: wire.ReceiptRead, Seq: last})
		if err := p.Commit(ctx, &b); err != nil {
			fmt.Fprintln(os.Stderr, "helper: commit:", err)
			os.Exit(3)
		}
		fmt.Printf("committed %d\n", last) // os.Stdout is unbuffered: one write
	}
	os.Exit(4)
}

// TestPebbleCrashDurability SIGKILLs a process that is committing, at a
// random moment, several times over the same directory, and checks that
// every seq the process reported committed survived, with no gap.
//
// SIGKILL loses what the process had not handed to the kernel; the kernel's
// page cache survives, so this checks the commit path and recovery, not
// fsync itself (TestPebblePowerLoss covers fsync).
func TestPebbleCrashDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	var reported uint64
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 50 + rand.IntN(200) // lines
		lines, killed := 0, false
		kill := func() {
			if !killed {
				killed = true
				if err := cmd.Process.Kill(); err != nil { // SIGKILL
					t.Errorf("kill: %v", err)
				}
			}
		}
		timer := time.AfterFunc(30*time.Second, kill)
		sc := bufio.NewScanner(out)
		for sc.Scan() { // after the kill, drain what the child wrote before dying
			seq, ok := strings.CutPrefix(sc.Text(), "committed ")
			if !ok {
				continue // test framework output
			}
			n, err := strconv.ParseUint(seq, 10, 64)
			if err != nil {
				t.Fatalf("round %d: bad line %q", round, sc.Text())
			}
			if n <= reported {
				t.Fatalf("round %d: reported %d after %d", round, n, reported)
			}
			reported = n
			if lines++; lines == killAfter {
				time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond) // land mid-commit
				kill()
			}
		}
		timer.Stop()
		err = cmd.Wait()
		if !killed {
			t.Fatalf("round %d: child exited by itself after %d lines: %v\n%s", round, lines, err, stderr.Bytes())
		}
		p := openPebble(t, dir)
		last := checkLog(t, p, 7, reported, 0)
		ptr, err := p.Pointers(context.Background(), 7, "bob")
		if err != nil || ptr.Read != last {
			t.Errorf("round %d: read pointer %d, %v; want %d (committed with the last batch)", round, ptr.Read, err, last)
		}
		if m, ok, err := p.LookupClientMsg(context.Background(), 7, "alice", "c"+strconv.FormatUint(reported, 10)); err != nil || !ok || m.Seq != reported {
			t.Errorf("round %d: LookupClientMsg(last reported %d) = %d, %v, %v", round, reported, m.Seq, ok, err)
		}
		t.Logf("round %d: killed after %d commits; reported %d, recovered %d", round, lines, reported, last)
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func benchStore(b *testing.B) *store.Pebble {
	p := openPebble(b, b.TempDir())
	b.Cleanup(func() { p.Close() })
	return p
}

func benchCommit(b *testing.B, perBatch int) {
	p := benchStore(b)
	ctx := context.Background()
	var batch store.Batch
	for i := range perBatch {
		m := msgAt(1, 0)
		m.Body = bytes.Repeat([]byte{'x'}, 200)
		m.ClientMsgID = fmt.Sprintf("client-msg-%08d", i)
		batch.Messages = append(batch.Messages, m)
	}
	batch.Pointers = []store.PointerUpdate{{ConvID: 1, User: "bob", Kind: wire.ReceiptDelivered}}
	var seq uint64
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for i := range batch.Messages {
			seq++
			batch.Messages[i].Seq = seq
			batch.Messages[i].MessageID = seq
		}
		batch.Pointers[0].Seq = seq
		if err := p.Commit(ctx, &batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(seq), "ns/msg")
}

func BenchmarkCommit1(b *testing.B)  { benchCommit(b, 1) }
func BenchmarkCommit64(b *testing.B) { benchCommit(b, 64) }

func benchFill(b *testing.B, p *store.Pebble, n uint64) {
	ctx := context.Background()
	var batch store.Batch
	for seq := uint64(1); seq <= n; seq++ {
		m := msgAt(1, seq)
		m.Body = bytes.Repeat([]byte{'x'}, 200)
		batch.Messages = append(batch.Messages, m)
		if len(batch.Messages) == 500 || seq == n {
			if err := p.Commit(ctx, &batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
	}
}

func BenchmarkMessagesAfter100(b *testing.B) {
	p := benchStore(b)
	const n = 10_000
	benchFill(b, p, n)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	var i uint64
	for b.Loop() {
		after := (i * 100) % (n - 100)
		i++
		ms, err := p.MessagesAfter(ctx, 1, after, 100)
		if err != nil || len(ms) != 100 {
			b.Fatal(len(ms), err)
		}
	}
}

func BenchmarkLookupClientMsg(b *testing.B) {
	p := benchStore(b)
	const n = 10_000
	benchFill(b, p, n)
	ctx := context.Background()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "c" + strconv.Itoa(i+1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var i int
	for b.Loop() {
		_, ok, err := p.LookupClientMsg(ctx, 1, "alice", ids[i%n])
		i++
		if err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkLookupClientMsgMiss is the common case on the write path: a new
// SEND whose client_msg_id the store has never seen.
func BenchmarkLookupClientMsgMiss(b *testing.B) {
	p := benchStore(b)
	const n = 100_000
	benchFill(b, p, n)
	ctx := context.Background()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "new" + strconv.Itoa(i+1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var i int
	for b.Loop() {
		_, ok, err := p.LookupClientMsg(ctx, uint64(i%64), "alice", ids[i%n])
		i++
		if err != nil || ok {
			b.Fatal(ok, err)
		}
	}
}

// TestPebbleCacheKeepsBlocksBesideMemtables: Pebble charges its memtables
// to the block cache, so a cache no bigger than the memtables holds no
// table block at all and every point read (each SEND's dedupe lookup)
// reads the index and filter blocks from the files again. OpenPebble sizes
// the cache so that table blocks stay cached with the memtables full.
func TestPebbleCacheKeepsBlocksBesideMemtables(t *testing.T) {
	const memtable = 1 << 20
	p, err := store.OpenPebble(t.TempDir(), store.PebbleOptions{Logger: quietLogger{}, CacheSize: 2 * memtable, MemTableSize: memtable})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	var batch store.Batch
	last := map[uint64]uint64{}
	// About six memtables of messages: flushed tables, and full memtables
	// reserving their share of the cache.
	for i := range 12_000 {
		conv := uint64(i%64 + 1)
		last[conv]++
		m := msgAt(conv, last[conv])
		m.ClientMsgID = fmt.Sprintf("cmid-%d", i)
		m.Body = bytes.Repeat([]byte{'x'}, 400)
		batch.Messages = append(batch.Messages, m)
		if len(batch.Messages) == 100 {
			if err := p.Commit(ctx, &batch); err != nil {
				t.Fatal(err)
			}
			batch.Reset()
		}
	}
	lookups := func() {
		for i := range 2_000 {
			conv := uint64(i%64 + 1)
			if _, ok, err := p.LookupClientMsg(ctx, conv, msgAt(conv, 1).Sender, fmt.Sprintf("new-%d", i)); err != nil || ok {
				t.Fatal(ok, err)
			}
		}
	}
	lookups()
	_, hits0, misses0 := p.BlockCacheStats()
	lookups()
	count, hits1, misses1 := p.BlockCacheStats()
	if count == 0 || misses1-misses0 > hits1-hits0 {
		t.Fatalf("block cache holds %d blocks; the same lookups again: %d hits, %d misses", count, hits1-hits0, misses1-misses0)
	}
}

// BenchmarkLookupClientMsgMissLoaded is the dedupe lookup of a new SEND
// after the store took 500,000 messages in batches of 25 over 400
// conversations (the latency scenario's shape, several memtables and
// flushes in): the case where a block cache squeezed out by the memtables
// made every lookup re-read index and filter blocks from the files.
func BenchmarkLookupClientMsgMissLoaded(b *testing.B) {
	p, err := store.OpenPebble(b.TempDir(), testOpts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	ctx := context.Background()
	const convs, n = 400, 500_000
	last := make([]uint64, convs+1)
	var batch store.Batch
	for i := range n {
		conv := uint64(i%convs + 1)
		last[conv]++
		m := msgAt(conv, last[conv])
		m.ClientMsgID = fmt.Sprintf("%016x", i)
		batch.Messages = append(batch.Messages, m)
		if len(batch.Messages) == 25 {
			if err := p.Commit(ctx, &batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
	}
	senders := make([]string, convs+1)
	for c := range senders {
		senders[c] = msgAt(uint64(c), 1).Sender
	}
	b.ReportAllocs()
	b.ResetTimer()
	var i int
	for b.Loop() {
		conv := uint64(i%convs + 1)
		if _, ok, err := p.LookupClientMsg(ctx, conv, senders[conv], "new-"+strconv.Itoa(i)); err != nil || ok {
			b.Fatal(ok, err)
		}
		i++
	}
}

// BenchmarkSteadyState is the store's share of one SEND in the core, on a
// store already holding enough to keep its memtables full: the dedupe
// lookup (a miss), then the message, its dedupe entry, the conversation's
// last seq and two pointer updates (the sender's Seen, the recipient's
// delivered), committed 25 messages per batch across 400 conversations.
// cpu-ns/op is the process's CPU time per message (Pebble's flushes and
// compactions included); ns/op includes the fsync waits.
func BenchmarkSteadyState(b *testing.B) {
	p := openPebble(b, b.TempDir())
	b.Cleanup(func() { p.Close() })
	ctx := context.Background()
	const convs = 400
	last := make([]uint64, convs+1)
	var batch store.Batch
	var i int
	step := func() {
		conv := uint64(i%convs + 1)
		cmid := fmt.Sprintf("%016x", i)
		if _, ok, err := p.LookupClientMsg(ctx, conv, "alice", cmid); err != nil || ok {
			b.Fatal(ok, err)
		}
		last[conv]++
		m := msgAt(conv, last[conv])
		m.ClientMsgID = cmid
		batch.Messages = append(batch.Messages, m)
		batch.Pointers = append(batch.Pointers,
			store.PointerUpdate{ConvID: conv, User: "alice", Kind: store.PointerSeen, Seq: last[conv]},
			store.PointerUpdate{ConvID: conv, User: "bob", Kind: wire.ReceiptDelivered, Seq: last[conv]})
		if len(batch.Messages) == 25 {
			if err := p.Commit(ctx, &batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
		i++
	}
	// 200,000 messages fill more than two 32 MiB memtables.
	for range 200_000 {
		step()
	}
	b.ReportAllocs()
	start := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		step()
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

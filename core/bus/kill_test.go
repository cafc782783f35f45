package bus

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The kill test re-executes the test binary as a child running
// TestKillHelper, which starts Embedded on a directory, produces without
// pause and prints every acknowledged record ("ACK partition offset
// value") and every successful group commit ("COMMIT partition offset").
// The parent SIGKILLs it mid-stream, reopens the directory and checks that
// every acknowledged record and every acknowledged commit survived.
const (
	killDirEnv  = "CHATD_BUS_KILL_DIR"
	killSyncEnv = "CHATD_BUS_KILL_SYNC"
	killGroup   = "killtest"
)

func TestKillHelper(t *testing.T) {
	dir := os.Getenv(killDirEnv)
	if dir == "" {
		t.Skip("helper process for TestKill")
	}
	e, err := StartEmbedded(EmbeddedOptions{DataDir: dir, SyncWrites: os.Getenv(killSyncEnv) == "1"})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	cfg := e.Config()
	pcl, err := kgo.NewClient(cfg.ProducerOpts()...)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	ccl, err := kgo.NewClient(cfg.ConsumerOpts(killGroup, TopicInbound)...)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	var out sync.Mutex // one write(2) per line; os.Stdout is unbuffered
	println := func(format string, args ...any) {
		out.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
		out.Unlock()
	}
	go func() {
		for {
			fs := ccl.PollRecords(context.Background(), 100)
			recs := fs.Records()
			if len(recs) > 0 {
				if err := ccl.CommitRecords(context.Background(), recs...); err == nil {
					for p, o := range committedOffsets(recs) {
						println("COMMIT %d %d", p, o)
					}
				}
			}
			ccl.AllowRebalance()
		}
	}()
	sem := make(chan struct{}, 256)
	deadline := time.Now().Add(30 * time.Second) // the parent kills us long before
	for i := 0; time.Now().Before(deadline); i++ {
		sem <- struct{}{}
		r := &kgo.Record{Topic: TopicInbound, Key: fmt.Appendf(nil, "conv-%d", i%101), Value: fmt.Appendf(nil, "v%d", i)}
		pcl.Produce(context.Background(), r, func(r *kgo.Record, err error) {
			if err == nil {
				println("ACK %d %d %s", r.Partition, r.Offset, r.Value)
			}
			<-sem
		})
	}
	os.Exit(2)
}

func TestKill(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	for _, mode := range []struct {
		name string
		sync string
	}{{"SyncWrites", "1"}, {"NoSync", "0"}} {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestKillHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), killDirEnv+"="+dir, killSyncEnv+"="+mode.sync)
			cmd.Stderr = os.Stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			type key struct {
				p   int32
				off int64
			}
			acked := map[key]string{}
			committed := map[int32]int64{}
			killed := false
			timeout := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
			defer timeout.Stop()
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				line := sc.Text()
				var p int32
				var off int64
				var val string
				switch {
				case strings.HasPrefix(line, "ACK "):
					// A line cut short by the kill does not parse.
					if n, _ := fmt.Sscanf(line, "ACK %d %d %s", &p, &off, &val); n == 3 {
						acked[key{p, off}] = val
					}
				case strings.HasPrefix(line, "COMMIT "):
					if n, _ := fmt.Sscanf(line, "COMMIT %d %d", &p, &off); n == 2 {
						committed[p] = max(committed[p], off)
					}
				case strings.HasPrefix(line, "ERR "):
					t.Fatalf("child: %s", line)
				}
				// Kill mid-stream once there is something to check.
				if !killed && len(acked) >= 3000 && len(committed) > 0 {
					killed = true
					if err := cmd.Process.Kill(); err != nil { // SIGKILL
						t.Fatal(err)
					}
				}
			}
			cmd.Wait()
			if !killed {
				t.Fatalf("child ended before the kill: %d acks, %d commits", len(acked), len(committed))
			}

			e := startEmbedded(t, EmbeddedOptions{DataDir: dir})
			var total int64
			for _, pi := range e.c.PartitionInfos(TopicInbound) {
				total += pi.HighWatermark - pi.LogStartOffset
			}
			got := map[key]string{}
			for _, r := range readAll(t, e.Addrs(), TopicInbound, int(total)) {
				got[key{r.Partition, r.Offset}] = string(r.Value)
			}
			var lost, wrong int
			for k, v := range acked {
				g, ok := got[k]
				switch {
				case !ok:
					lost++
				case g != v:
					wrong++
				}
			}
			t.Logf("%d records acknowledged before SIGKILL, %d on disk after reopening (unacknowledged extras allowed); lost %d, mismatched %d",
				len(acked), len(got), lost, wrong)
			if lost > 0 || wrong > 0 {
				t.Fatalf("acknowledged records lost: %d, mismatched: %d", lost, wrong)
			}

			// Acknowledged commits survived. The stored commit may be
			// later than the last one printed (the kill can land between
			// a commit's response and its line), never earlier.
			stored := fetchCommitted(t, e, killGroup, TopicInbound)
			for p, c := range committed {
				if stored[p] < c {
					t.Fatalf("partition %d: stored commit %d, below acknowledged %d", p, stored[p], c)
				}
			}
			t.Logf("commits acknowledged on %d partitions survived", len(committed))
		})
	}
}

// fetchCommitted returns group's committed offsets in topic, by partition.
func fetchCommitted(t testing.TB, e *Embedded, group, topic string) map[int32]int64 {
	t.Helper()
	cl := newClient(t, e.Config().ClientOpts()...)
	req := kmsg.NewPtrOffsetFetchRequest()
	rg := kmsg.NewOffsetFetchRequestGroup()
	rg.Group = group
	rt := kmsg.NewOffsetFetchRequestGroupTopic()
	rt.Topic = topic
	for _, pi := range e.c.PartitionInfos(topic) {
		rt.Partitions = append(rt.Partitions, pi.Partition)
	}
	rg.Topics = append(rg.Topics, rt)
	req.Groups = append(req.Groups, rg)
	resp, err := req.RequestWith(ctxT(t, 10*time.Second), cl)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	for _, g := range resp.Groups {
		if err := kerr.ErrorForCode(g.ErrorCode); err != nil {
			t.Fatal(err)
		}
		for _, rt := range g.Topics {
			for _, p := range rt.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					t.Fatal(err)
				}
				if p.Offset >= 0 {
					out[p.Partition] = p.Offset
				}
			}
		}
	}
	return out
}

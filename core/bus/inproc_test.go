package bus

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// establishedTo counts the established TCP sockets (IPv4) whose local port
// is port: the broker's ends of its TCP connections.
func establishedTo(t *testing.T, port int) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatalf("reading the TCP socket table (Linux): %v", err)
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 3 && strings.HasSuffix(fs[1], want) && fs[3] == "01" {
			n++
		}
	}
	return n
}

func produceN(t *testing.T, cl *kgo.Client, prefix string, n int) {
	t.Helper()
	ctx := ctxT(t, 20*time.Second)
	for i := range n {
		r := &kgo.Record{Topic: TopicInbound, Key: []byte(prefix), Value: fmt.Appendf(nil, "%s-%d", prefix, i)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce %s-%d: %v", prefix, i, err)
		}
	}
}

// The broker serves clients of its own process in memory and clients of
// other processes over TCP, at once, with the same records visible to both.
func TestInprocAndTCPClientsShareTheBroker(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{DataDir: t.TempDir()})
	_, portStr, err := net.SplitHostPort(e.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portStr)

	in := newClient(t, e.Config().ProducerOpts()...)
	produceN(t, in, "inproc", 50)
	if n := establishedTo(t, port); n != 0 {
		t.Fatalf("after an in-process client produced, the broker has %d TCP connections, want 0", n)
	}

	tcp := newClient(t, Config{Brokers: e.Addrs()}.ProducerOpts()...)
	produceN(t, tcp, "tcp", 50)
	if n := establishedTo(t, port); n == 0 {
		t.Fatal("a client given only the addresses produced, but the broker has no TCP connection")
	}

	// Both kinds of consumer read all 100, each key in order.
	for name, cfg := range map[string]Config{"inproc": e.Config(), "tcp": {Brokers: e.Addrs()}} {
		cl := newClient(t, append(cfg.ClientOpts(), kgo.ConsumeTopics(TopicInbound),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))...)
		ctx := ctxT(t, 20*time.Second)
		next := map[string]int{}
		for got := 0; got < 100; {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("%s consumer: %d of 100 records", name, got)
			}
			fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("%s consumer: %v", name, err) })
			for _, r := range fs.Records() {
				k := string(r.Key)
				if want := fmt.Sprintf("%s-%d", k, next[k]); string(r.Value) != want {
					t.Fatalf("%s consumer: got %q, want %q", name, r.Value, want)
				}
				next[k]++
				got++
			}
		}
	}
}

// After Close, an in-process dial is refused like a connect to a closed
// port, so a client backs off and retries as it would over TCP.
func TestInprocDialAfterCloseIsRefused(t *testing.T) {
	e, err := StartEmbedded(EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addr := e.Addrs()[0]
	c, err := e.Dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("dial before close: %v", err)
	}
	if _, ok := c.(*memConn); !ok {
		t.Fatalf("dial of the broker's own address returned %T, want an in-memory pipe", c)
	}
	_ = c.Close()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = e.Dial(context.Background(), "tcp", addr)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after close: %v, want ECONNREFUSED", err)
	}
}

// flakyListener fails its first Accepts with a transient error, then
// hands out one end of a pipe per Accept until closed.
type flakyListener struct {
	mu       sync.Mutex
	failures int
	closed   chan struct{}
	once     sync.Once
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	fail := l.failures > 0
	if fail {
		l.failures--
	}
	l.mu.Unlock()
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	if fail {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	c, _ := net.Pipe()
	return c, nil
}

func (l *flakyListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *flakyListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// A transient accept error (out of file descriptors) is retried, not
// returned: kfake stops listening on the first Accept error.
func TestInprocListenerRetriesTransientAcceptErrors(t *testing.T) {
	fl := &flakyListener{failures: 3, closed: make(chan struct{})}
	l := &inprocListener{Listener: fl, log: slog.New(slog.DiscardHandler), accepted: make(chan acceptResult), pipes: make(chan net.Conn), done: make(chan struct{})}
	go l.acceptTCP()
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept after transient errors: %v", err)
	}
	_ = c.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// Something that is not a Kafka client connecting to the broker's port (an
// HTTP health check here: "GET " reads as a 1.2 GB request) is cut off
// before the broker allocates for it, and the broker keeps serving.
func TestStrayConnectionToKafkaPortIsRefused(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	c, err := net.Dial("tcp", e.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 16)); err == nil {
		t.Fatalf("the broker answered %d bytes instead of closing", n)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the broker kept the connection open")
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Fatalf("the process allocated %d MB for the stray request", grew>>20)
	}
	produceN(t, newClient(t, Config{Brokers: e.Addrs()}.ProducerOpts()...), "after", 3)
}

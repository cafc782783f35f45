package sdk

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/sdk/sdktest"
	"github.com/chatd-dev/chatd/wire"
)

// patience bounds every wait in these tests. It is a safety net against
// hanging, never an assertion about speed.
const patience = 10 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// newClient returns a started Client of user on srv with test-friendly
// timings, and its event recorder. mod may adjust the config first.
func newClient(t *testing.T, srv *sdktest.Server, user, device string, mod func(*Config)) (*Client, *recorder) {
	t.Helper()
	cfg := Config{
		URL:        srv.URL(),
		Token:      func(context.Context) (string, error) { return srv.Token(user), nil },
		DeviceID:   device,
		BackoffMin: time.Millisecond,
		BackoffMax: 20 * time.Millisecond,
		Logger:     slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := record(c)
	t.Cleanup(func() {
		c.Close()
		<-rec.done
	})
	return c, rec
}

func start(t *testing.T, c *Client) {
	t.Helper()
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// recorder drains a Client's events into a list that tests wait on.
type recorder struct {
	mu   sync.Mutex
	evs  []Event
	pos  int // next event waitNext looks at
	upd  chan struct{}
	done chan struct{}
}

func record(c *Client) *recorder {
	r := &recorder{upd: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range c.Events() {
			r.mu.Lock()
			r.evs = append(r.evs, ev)
			r.mu.Unlock()
			select {
			case r.upd <- struct{}{}:
			default:
			}
		}
	}()
	return r
}

// waitNext consumes events in order until one matches, and returns it.
func (r *recorder) waitNext(t *testing.T, what string, match func(Event) bool) Event {
	t.Helper()
	deadline := time.After(patience)
	for {
		r.mu.Lock()
		for r.pos < len(r.evs) {
			ev := r.evs[r.pos]
			r.pos++
			if match(ev) {
				r.mu.Unlock()
				return ev
			}
		}
		r.mu.Unlock()
		select {
		case <-r.upd:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; events: %v", what, r.all())
		}
	}
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.evs...)
}

// messages returns the Message events of conv received so far.
func (r *recorder) messages(conv uint64) []Message {
	var out []Message
	for _, ev := range r.all() {
		if m, ok := ev.(Message); ok && m.Conv == conv {
			out = append(out, m)
		}
	}
	return out
}

// waitMessages waits until n messages of conv have arrived and returns them.
func (r *recorder) waitMessages(t *testing.T, conv uint64, n int) []Message {
	t.Helper()
	eventually(t, fmt.Sprintf("%d messages in conv %d", n, conv), func() bool {
		return len(r.messages(conv)) >= n
	})
	return r.messages(conv)
}

func is[T Event](ev Event) bool {
	_, ok := ev.(T)
	return ok
}

func waitEvent[T Event](t *testing.T, r *recorder) T {
	t.Helper()
	var zero T
	return r.waitNext(t, fmt.Sprintf("%T", zero), is[T]).(T)
}

// eventually polls cond until it holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkSeqs asserts that msgs have seqs 1..n in order, each once.
func checkSeqs(t *testing.T, msgs []Message, n int) {
	t.Helper()
	if len(msgs) != n {
		t.Fatalf("got %d messages, want %d: %v", len(msgs), n, seqsOf(msgs))
	}
	for i, m := range msgs {
		if m.Seq != uint64(i+1) {
			t.Fatalf("message %d has seq %d; seqs: %v", i, m.Seq, seqsOf(msgs))
		}
	}
}

func seqsOf(msgs []Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

// decode decodes one client frame logged by the fake server.
func decode(t *testing.T, frame []byte) *wire.Decoder {
	t.Helper()
	d := new(wire.Decoder)
	if _, _, err := d.Decode(frame); err != nil {
		t.Fatal(err)
	}
	return d
}

// storeN stores n messages from sender in conv without delivering them.
func storeN(srv *sdktest.Server, conv uint64, sender string, n int) []sdktest.Message {
	out := make([]sdktest.Message, n)
	for i := range out {
		out[i], _ = srv.Store(conv, sender, "phone", "", wire.KindText, fmt.Appendf(nil, "m%d", i+1))
	}
	return out
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/core/api"
	"github.com/chatd-dev/chatd/sdk"
	"github.com/chatd-dev/chatd/wire"
)

// These tests run the real chatd binary as a child process (so it can be
// SIGKILLed) and drive it with the Go SDK, the way an app would.

var chatdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	chatdBin = filepath.Join(dir, "chatd")
	out, err := exec.Command("go", "build", "-o", chatdBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build chatd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const waitFor = 60 * time.Second // upper bound for anything to happen; never asserted as a timing

type server struct {
	t       *testing.T
	dir     string
	gwAddr  string
	apiAddr string
	env     []string // added to the test's environment
	cmd     *exec.Cmd
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// newServer prepares a chatd on fixed loopback ports (so clients can
// reconnect to the same URL after a restart) and a data dir.
func newServer(t *testing.T) *server {
	s := &server{t: t, dir: t.TempDir(), gwAddr: freeAddr(t), apiAddr: freeAddr(t)}
	t.Cleanup(func() { s.kill() })
	return s
}

func (s *server) wsURL() string  { return "ws://" + s.gwAddr + "/chat/v1/ws" }
func (s *server) apiURL() string { return "http://" + s.apiAddr }

// start runs chatd and waits for its readiness line.
func (s *server) start() {
	s.t.Helper()
	s.cmd = exec.Command(chatdBin, "--dev", "--data-dir", s.dir, "--gateway-addr", s.gwAddr,
		"--api-addr", s.apiAddr, "--admin-addr", "off", "--partitions", "4", "--log-level", "warn")
	if s.env != nil {
		s.cmd.Env = append(os.Environ(), s.env...)
	}
	s.cmd.Stderr = os.Stderr
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "chatd ready ") && !ok {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			s.t.Fatal("chatd exited before it was ready")
		}
	case <-time.After(waitFor):
		s.t.Fatal("chatd not ready")
	}
}

// kill sends SIGKILL: no shutdown code runs.
func (s *server) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// recorder collects a client's events.
type recorder struct {
	mu        sync.Mutex
	msgs      []sdk.Message
	acks      map[string]sdk.Ack
	receipts  map[wire.ReceiptKind]uint64
	typing    []sdk.Typing
	presence  []sdk.Presence
	connected int
	changed   chan struct{}
	failOK    bool    // a SendFailed is expected: record it, do not fail the test
	failed    []error // SendFailed errors while failOK
}

// endpoint is where clients connect: one chatd, or a cluster's gateways
// and API.
type endpoint interface {
	wsURL() string
	apiURL() string
}

func newClient(t *testing.T, s endpoint, user, device string, cursors sdk.CursorStore) (*sdk.Client, *recorder) {
	t.Helper()
	c, err := sdk.New(sdk.Config{
		URL:        s.wsURL(),
		APIURL:     s.apiURL(),
		DeviceID:   device,
		Cursors:    cursors,
		BackoffMin: 50 * time.Millisecond,
		BackoffMax: time.Second,
		Token: func(ctx context.Context) (string, error) {
			return sdk.DevToken(ctx, s.apiURL(), user, device)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{acks: map[string]sdk.Ack{}, receipts: map[wire.ReceiptKind]uint64{}, changed: make(chan struct{}, 1)}
	go func() {
		for ev := range c.Events() {
			r.mu.Lock()
			switch ev := ev.(type) {
			case sdk.Message:
				r.msgs = append(r.msgs, ev)
			case sdk.Ack:
				r.acks[ev.ClientMsgID] = ev
			case sdk.Receipt:
				r.receipts[ev.Kind] = max(r.receipts[ev.Kind], ev.UpToSeq)
			case sdk.Typing:
				r.typing = append(r.typing, ev)
			case sdk.Presence:
				r.presence = append(r.presence, ev)
			case sdk.Connected:
				r.connected++
			case sdk.SendFailed:
				if r.failOK {
					r.failed = append(r.failed, ev.Err)
				} else {
					t.Errorf("%s: send %s failed: %v", user, ev.ClientMsgID, ev.Err)
				}
			}
			r.mu.Unlock()
			select {
			case r.changed <- struct{}{}:
			default:
			}
		}
	}()
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, r
}

// waitUntil waits for cond (checked under the recorder's lock) to hold.
func (r *recorder) waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// history fetches a whole conversation through the HTTP API.
func history(t *testing.T, s endpoint, token string, conv uint64) []api.MessageJSON {
	t.Helper()
	var all []api.MessageJSON
	before := uint64(0)
	for {
		url := fmt.Sprintf("%s/api/v1/conversations/%d/messages?limit=200", s.apiURL(), conv)
		if before != 0 {
			url += fmt.Sprintf("&before=%d", before)
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var h api.HistoryJSON
		err = json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("history: %d %v", resp.StatusCode, err)
		}
		all = append(h.Messages, all...)
		if !h.HasMore {
			return all
		}
		before = h.NextBefore
	}
}

// TestKillMidTraffic: chatd is SIGKILLed while Alice sends and restarted on
// the same data dir. The SDK clients reconnect and resume on their own; no
// acknowledged message is lost, no seq is reused, Bob's app sees every
// message exactly once and in order.
func TestKillMidTraffic(t *testing.T) {
	s := newServer(t)
	s.start()
	alice, ar := newClient(t, s, "alice", "phone", nil)
	_, br := newClient(t, s, "bob", "phone", nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	conv, err := alice.OpenDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	const total = 300
	var ids []string
	for i := 0; i < total; i++ {
		if i == 120 {
			// Kill while sends are in flight, then restart.
			ar.waitUntil(t, "some acks", func() bool { return len(ar.acks) >= 60 })
			s.kill()
		}
		if i == 160 {
			s.start()
		}
		id, err := alice.Send(ctx, conv.ID, wire.KindText, []byte(fmt.Sprintf("message %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		time.Sleep(2 * time.Millisecond)
	}
	ar.waitUntil(t, "every ack", func() bool { return len(ar.acks) == total })
	br.waitUntil(t, "every message at bob", func() bool { return len(br.msgs) >= total })

	// The store holds each message once, at the seq its ACK announced;
	// Bob's app saw each once, in order.
	checkConversation(t, s, conv.ID, ids, ar, br)
	ar.mu.Lock()
	defer ar.mu.Unlock()
	br.mu.Lock()
	defer br.mu.Unlock()
	if ar.connected < 2 || br.connected < 2 {
		t.Fatalf("clients connected %d and %d times, want a reconnect each", ar.connected, br.connected)
	}
}

// TestOfflineResumeWithSDK: Bob's app goes away, Alice sends 100, Bob's app
// comes back with its saved cursors: exactly those 100, in order, once.
func TestOfflineResumeWithSDK(t *testing.T) {
	s := newServer(t)
	s.start()
	alice, ar := newClient(t, s, "alice", "phone", nil)
	cursorFile := filepath.Join(t.TempDir(), "bob.json")
	bob, br := newClient(t, s, "bob", "phone", sdk.FileCursorStore(cursorFile))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	conv, err := alice.OpenDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendWait(ctx, conv.ID, wire.KindText, []byte("are you home?")); err != nil {
		t.Fatal(err)
	}
	br.waitUntil(t, "first message", func() bool { return len(br.msgs) == 1 })
	bob.Close()

	for i := 0; i < 100; i++ {
		if _, err := alice.Send(ctx, conv.ID, wire.KindText, []byte(fmt.Sprintf("while away %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	ar.waitUntil(t, "100 acks", func() bool { return len(ar.acks) == 101 })

	_, br2 := newClient(t, s, "bob", "phone", sdk.FileCursorStore(cursorFile))
	br2.waitUntil(t, "100 messages", func() bool { return len(br2.msgs) >= 100 })
	if _, err := alice.SendWait(ctx, conv.ID, wire.KindText, []byte("marker")); err != nil {
		t.Fatal(err)
	}
	br2.waitUntil(t, "marker", func() bool { return len(br2.msgs) > 0 && string(br2.msgs[len(br2.msgs)-1].Body) == "marker" })
	br2.mu.Lock()
	defer br2.mu.Unlock()
	if len(br2.msgs) != 101 {
		t.Fatalf("bob's app got %d messages after resuming, want 100 + marker", len(br2.msgs))
	}
	// In seq order, each once. (Send order and seq order can differ: the
	// gateway's flood limit refuses part of a burst of 100 with a
	// retryable rate_limited, and the SDK resends those later.)
	bodies := map[string]bool{}
	for i, m := range br2.msgs[:100] {
		if m.Seq != uint64(i+2) {
			t.Fatalf("message %d: seq %d", i, m.Seq)
		}
		bodies[string(m.Body)] = true
	}
	for i := 0; i < 100; i++ {
		if !bodies[fmt.Sprintf("while away %d", i)] {
			t.Fatalf("message %d missing", i)
		}
	}
	// Bob's client sent delivered receipts for what it got: Alice sees them.
	ar.waitUntil(t, "delivered receipt", func() bool { return ar.receipts[wire.ReceiptDelivered] >= 102 })
}

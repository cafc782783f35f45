package remote_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/core/store/remote"
	"github.com/chatd-dev/chatd/core/store/storetest"
	"github.com/chatd-dev/chatd/wire"
)

// served is a Pebble store in a temp dir behind a real loopback HTTP
// server, and a client of it.
type served struct {
	dir string
	pst *store.Pebble
	srv *httptest.Server
	cl  *remote.Client
}

func serve(t testing.TB, dir string) *served {
	t.Helper()
	pst, err := store.OpenPebble(dir, store.PebbleOptions{})
	if err != nil {
		t.Fatalf("OpenPebble: %v", err)
	}
	srv := httptest.NewServer(remote.Handler(pst))
	cl, err := remote.Dial(srv.Listener.Addr().String(), remote.ClientOptions{})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	s := &served{dir: dir, pst: pst, srv: srv, cl: cl}
	t.Cleanup(s.stop)
	return s
}

func (s *served) stop() {
	_ = s.cl.Close()
	s.srv.Close()
	_ = s.pst.Close()
}

// TestRemoteContract runs the store contract suite through the client, so
// that the protocol carries every field and error the suite checks.
// Durability restarts the server's store too, the way a restarted store
// process would.
func TestRemoteContract(t *testing.T) {
	var all sync.Map // *remote.Client -> *served
	storetest.Run(t, storetest.Options{
		Open: func(t *testing.T) store.Store {
			s := serve(t, t.TempDir())
			all.Store(s.cl, s)
			return s.cl
		},
		Reopen: func(t *testing.T, old store.Store) store.Store {
			v, ok := all.Load(old)
			if !ok {
				t.Fatal("Reopen: unknown store")
			}
			v.(*served).stop()
			s := serve(t, v.(*served).dir)
			all.Store(s.cl, s)
			return s.cl
		},
	})
}

func TestErrorsCrossTheWire(t *testing.T) {
	s := serve(t, t.TempDir())
	ctx := context.Background()

	if _, err := s.cl.Conversation(ctx, 42); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Conversation(unknown) = %v, want ErrNotFound", err)
	}
	bad := &store.Batch{Messages: []store.Message{{ConvID: 1, Seq: 0, Sender: "a"}}}
	if err := s.cl.Commit(ctx, bad); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Commit(seq 0) = %v, want ErrInvalid", err)
	}
	badKind := &store.Batch{Pointers: []store.PointerUpdate{{ConvID: 1, User: "a", Kind: wire.ReceiptKind(99), Seq: 1}}}
	if err := s.cl.Commit(ctx, badKind); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Commit(unknown pointer kind) = %v, want ErrInvalid", err)
	}
	// A group update of a missing or a direct conversation.
	if _, err := s.cl.EnsureConversation(ctx, store.Conversation{ID: 7, Kind: wire.ConvDirect, Members: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{6, 7} {
		b := &store.Batch{GroupUpdates: []store.GroupUpdate{{Conv: store.Conversation{ID: id, Name: "n", Members: []string{"a"}}}}}
		if err := s.cl.Commit(ctx, b); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Commit(group update of conversation %d) = %v, want ErrInvalid", id, err)
		}
	}

	// The server's store closing (a store process shutting down) reads as
	// ErrClosed on the client, which stays usable for nothing else.
	_ = s.pst.Close()
	if _, err := s.cl.LastSeq(ctx, 1); !errors.Is(err, store.ErrClosed) {
		t.Errorf("LastSeq after the server's store closed = %v, want ErrClosed", err)
	}

	// A server that is gone is a plain error, not ErrNotFound or ErrClosed:
	// the caller retries.
	s.srv.Close()
	_, err := s.cl.LastSeq(ctx, 1)
	if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrClosed) {
		t.Errorf("LastSeq with the server gone = %v, want a transport error", err)
	}
}

func TestBadRequests(t *testing.T) {
	s := serve(t, t.TempDir())
	url := s.srv.URL + remote.Path
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"malformed json", http.MethodPost, "commit", `{"Messages": [`, http.StatusBadRequest, `"bad_request"`},
		{"wrong type", http.MethodPost, "last_seq", `{"id": "x"}`, http.StatusBadRequest, `"bad_request"`},
		{"unknown method", http.MethodPost, "drop_everything", `{}`, http.StatusNotFound, ""},
		{"GET", http.MethodGet, "last_seq", ``, http.StatusMethodNotAllowed, ""},
		{"oversize", http.MethodPost, "commit", `{"Messages":[{"Body":"` + strings.Repeat("A", 65<<20) + `"}]}`, http.StatusBadRequest, `"bad_request"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, url+tc.path, strings.NewReader(tc.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if tc.code != "" && !strings.Contains(string(body), tc.code) {
				t.Errorf("body %q lacks %s", body, tc.code)
			}
		})
	}
	// None of it wrote anything.
	if seq, err := s.cl.LastSeq(context.Background(), 0); err != nil || seq != 0 {
		t.Errorf("LastSeq(0) = %d, %v after bad requests", seq, err)
	}
}

func TestDialRejectsOtherSchemes(t *testing.T) {
	if _, err := remote.Dial("https://store:7070", remote.ClientOptions{}); err == nil {
		t.Error("Dial(https://...) = nil error, want unsupported")
	}
}

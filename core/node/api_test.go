package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bench"
	"github.com/chatd-dev/chatd/core/api"
	"github.com/chatd-dev/chatd/wire"
)

func get(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: content type %q", url, ct)
	}
	return resp.StatusCode, b
}

func wantError(t *testing.T, status int, body []byte, wantStatus int, code wire.Code) {
	t.Helper()
	var e api.ErrorJSON
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if status != wantStatus || e.Error.Code != uint64(code) || e.Error.Name != code.String() {
		t.Fatalf("got %d %s, want %d %v", status, body, wantStatus, code)
	}
}

// TestHTTPHistory pages a conversation over the HTTP API and checks every
// documented error.
func TestHTTPHistory(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := context.Background()
	tokA, err := bench.DevToken(ctx, n.APIURL(), "alice", "web")
	if err != nil {
		t.Fatal(err)
	}
	conv, err := bench.OpenDirect(ctx, n.APIURL(), tokA, "bob")
	if err != nil {
		t.Fatal(err)
	}
	alice := connect(t, n, "alice", "phone")
	for i := 1; i <= 120; i++ {
		alice.send(sendFrame(conv, fmt.Sprintf("c%d", i), fmt.Sprintf("message %d", i)))
	}
	for i := 0; i < 120; i++ {
		alice.expect(wire.TypeAck)
	}
	base := fmt.Sprintf("%s/api/v1/conversations/%d/messages", n.APIURL(), conv)
	var seen []uint64
	before := uint64(0)
	for pages := 0; ; pages++ {
		url := base + "?limit=50"
		if before != 0 {
			url += fmt.Sprintf("&before=%d", before)
		}
		status, body := get(t, url, tokA)
		if status != http.StatusOK {
			t.Fatalf("%d %s", status, body)
		}
		var h api.HistoryJSON
		if err := json.Unmarshal(body, &h); err != nil {
			t.Fatal(err)
		}
		for i := len(h.Messages) - 1; i >= 0; i-- {
			m := h.Messages[i]
			seen = append(seen, m.Seq)
			if m.Body == nil || *m.Body != fmt.Sprintf("message %d", m.Seq) {
				t.Fatalf("seq %d body %v", m.Seq, m.Body)
			}
		}
		if !h.HasMore {
			break
		}
		before = h.NextBefore
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if len(seen) != 120 || seen[0] != 120 || seen[119] != 1 {
		t.Fatalf("paged %d messages: first %d last %d", len(seen), seen[0], seen[len(seen)-1])
	}

	tokC, _ := n.Signer().Mint("carol", "", time.Hour)
	expired, err := n.Signer().MintAt("alice", "", time.Now().Add(-2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, url, token string
		status           int
		code             wire.Code
	}{
		{"no token", base, "", 401, wire.CodeTokenInvalid},
		{"bad token", base, "garbage", 401, wire.CodeTokenInvalid},
		{"expired token", base, expired, 401, wire.CodeTokenExpired},
		{"not a member", base, tokC, 403, wire.CodeNotMember},
		{"unknown conversation", n.APIURL() + "/api/v1/conversations/777/messages", tokA, 404, wire.CodeConvNotFound},
		{"bad id", n.APIURL() + "/api/v1/conversations/abc/messages", tokA, 400, wire.CodeInvalidArgument},
		{"bad limit", base + "?limit=0", tokA, 400, wire.CodeInvalidArgument},
		{"limit too big", base + "?limit=201", tokA, 400, wire.CodeInvalidArgument},
		{"bad before", base + "?before=-1", tokA, 400, wire.CodeInvalidArgument},
		{"unknown path", n.APIURL() + "/api/v2/nothing", tokA, 404, wire.CodeInvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := get(t, c.url, c.token)
			wantError(t, status, body, c.status, c.code)
		})
	}

	// The conversation list shows the direct conversation with its last seq.
	status, body := get(t, n.APIURL()+"/api/v1/conversations", tokA)
	if status != 200 || !strings.Contains(string(body), fmt.Sprintf(`"conversation_id":"%d"`, conv)) || !strings.Contains(string(body), `"last_seq":120`) {
		t.Fatalf("list: %d %s", status, body)
	}
}

// TestHTTPOpenDirectErrors covers the direct-open and dev token endpoints'
// bad input.
func TestHTTPOpenDirectErrors(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := context.Background()
	tok, err := bench.DevToken(ctx, n.APIURL(), "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	post := func(path, token, body string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodPost, n.APIURL()+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, c := range []struct{ name, path, token, body string }{
		{"self", "/api/v1/conversations/direct", tok, `{"peer":"alice"}`},
		{"bad peer", "/api/v1/conversations/direct", tok, `{"peer":"a b"}`},
		{"not json", "/api/v1/conversations/direct", tok, `{`},
		{"bad user", "/dev/token", "", `{"user":""}`},
		{"bad ttl", "/dev/token", "", `{"user":"x","ttl":"forever"}`},
	} {
		status, body := post(c.path, c.token, c.body)
		wantError(t, status, body, 400, wire.CodeInvalidArgument)
	}
	status, body := post("/api/v1/conversations/direct", "", `{"peer":"bob"}`)
	wantError(t, status, body, 401, wire.CodeTokenInvalid)
	// Either side opens the same conversation.
	tokB, _ := bench.DevToken(ctx, n.APIURL(), "bob", "")
	c1, err1 := bench.OpenDirect(ctx, n.APIURL(), tok, "bob")
	c2, err2 := bench.OpenDirect(ctx, n.APIURL(), tokB, "alice")
	if err1 != nil || err2 != nil || c1 != c2 || c1 == 0 {
		t.Fatalf("direct ids %d %d (%v %v)", c1, c2, err1, err2)
	}
}

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

// get sends an API GET and checks that the answer is JSON, as every
// answer of the API is.
func get(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	status, ct, b := request(t, http.MethodGet, url, token, "")
	if ct != "application/json" {
		t.Fatalf("%s: content type %q", url, ct)
	}
	return status, b
}

// do sends an API request with a body and returns the status and body.
func do(t *testing.T, method, url, token, body string) (int, []byte) {
	t.Helper()
	status, _, b := request(t, method, url, token, body)
	return status, b
}

func request(t *testing.T, method, url, token, body string) (status int, contentType string, b []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ = io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
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
		return do(t, http.MethodPost, n.APIURL()+path, token, body)
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

// TestHTTPPresence: a user sees its own presence and that of the users it
// shares a direct conversation with (online while connected, then offline
// with a last seen); anyone else is hidden; bad requests get coded errors.
func TestHTTPPresence(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := context.Background()
	tokBob, err := bench.DevToken(ctx, n.APIURL(), "bob", "web")
	if err != nil {
		t.Fatal(err)
	}
	presence := func(users ...string) []api.PresenceJSON {
		t.Helper()
		status, body := get(t, n.APIURL()+"/api/v1/presence?user="+strings.Join(users, "&user="), tokBob)
		if status != http.StatusOK {
			t.Fatalf("%d %s", status, body)
		}
		var out struct {
			Presence []api.PresenceJSON `json:"presence"`
		}
		if err := json.Unmarshal(body, &out); err != nil || len(out.Presence) != len(users) {
			t.Fatalf("body %s: %v", body, err)
		}
		return out.Presence
	}
	alice := connect(t, n, "alice", "phone")
	// No conversation shared yet: alice is hidden, like a user who does
	// not exist; bob sees himself.
	got := presence("alice", "nobody", "bob")
	if want := (api.PresenceJSON{User: "alice", Hidden: true}); got[0] != want {
		t.Fatalf("stranger: %+v", got[0])
	}
	if want := (api.PresenceJSON{User: "nobody", Hidden: true}); got[1] != want {
		t.Fatalf("unknown user: %+v", got[1])
	}
	if got[2].Hidden || got[2].Online {
		t.Fatalf("self, not connected: %+v", got[2])
	}

	if _, err := bench.OpenDirect(ctx, n.APIURL(), tokBob, "alice"); err != nil {
		t.Fatal(err)
	}
	if p := presence("alice")[0]; p.Hidden || !p.Online || p.LastSeenMS == 0 {
		t.Fatalf("connected peer: %+v", p)
	}
	before := time.Now().UnixMilli()
	alice.conn.Close()
	var p api.PresenceJSON
	for deadline := time.Now().Add(10 * time.Second); ; {
		if p = presence("alice")[0]; !p.Online {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still online after closing: %+v", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p.Hidden || p.LastSeenMS < before || p.LastSeenMS > time.Now().UnixMilli() {
		t.Fatalf("disconnected peer: %+v, want last seen after %d", p, before)
	}

	url := n.APIURL() + "/api/v1/presence"
	status, body := get(t, url+"?user=alice", "")
	wantError(t, status, body, http.StatusUnauthorized, wire.CodeTokenInvalid)
	status, body = get(t, url, tokBob)
	wantError(t, status, body, http.StatusBadRequest, wire.CodeInvalidArgument)
	status, body = get(t, url+"?user="+strings.Repeat("x&user=", api.MaxPresenceUsers)+"x", tokBob)
	wantError(t, status, body, http.StatusBadRequest, wire.CodeInvalidArgument)
	status, body = get(t, url+"?user=%00bad", tokBob)
	wantError(t, status, body, http.StatusBadRequest, wire.CodeInvalidArgument)
}

// TestHTTPReceipts: receipts sent over the socket become counts and a
// reader list over the API, for members only; bad requests get coded
// errors.
func TestHTTPReceipts(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := context.Background()
	tokA, err := bench.DevToken(ctx, n.APIURL(), "alice", "web")
	if err != nil {
		t.Fatal(err)
	}
	tokC, err := bench.DevToken(ctx, n.APIURL(), "carol", "web")
	if err != nil {
		t.Fatal(err)
	}
	alice := connect(t, n, "alice", "phone")
	bob := connect(t, n, "bob", "phone")
	conv := alice.openDirect("bob")
	for i := 1; i <= 3; i++ {
		alice.send(sendFrame(conv, fmt.Sprintf("c%d", i), "hi"))
		alice.expect(wire.TypeAck)
		bob.expect(wire.TypeMsg, wire.TypeConv)
	}
	bob.send(receiptFrame(conv, wire.ReceiptDelivered, 3))
	bob.send(receiptFrame(conv, wire.ReceiptRead, 2))
	alice.expect(wire.TypeReceipt)
	alice.expect(wire.TypeReceipt)

	base := fmt.Sprintf("%s/api/v1/conversations/%d/receipts", n.APIURL(), conv)
	want := api.ReceiptsJSON{ConvID: fmt.Sprint(conv), Others: 1, Receipts: []api.ReceiptCountJSON{
		{Seq: 1, Delivered: 1, Read: 1}, {Seq: 3, Delivered: 1, Read: 0}, {Seq: 2, Delivered: 1, Read: 1}, {Seq: 4}}}
	// The fanout writes the counters after the RECEIPT frames went out;
	// poll until they are in.
	var got api.ReceiptsJSON
	for deadline := time.Now().Add(10 * time.Second); ; {
		status, body := get(t, base+"?seq=1&seq=3&seq=2&seq=4", tokA)
		if status != http.StatusOK {
			t.Fatalf("%d %s", status, body)
		}
		got = api.ReceiptsJSON{}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counts %+v, want %+v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	readers := func(seq int) string {
		t.Helper()
		status, body := get(t, fmt.Sprintf("%s/%d/readers", base, seq), tokA)
		if status != http.StatusOK {
			t.Fatalf("%d %s", status, body)
		}
		return strings.TrimSpace(string(body))
	}
	if got := readers(2); got != fmt.Sprintf(`{"conversation_id":"%d","seq":2,"readers":["bob"]}`, conv) {
		t.Fatalf("readers of 2: %s", got)
	}
	if got := readers(3); got != fmt.Sprintf(`{"conversation_id":"%d","seq":3,"readers":[]}`, conv) {
		t.Fatalf("readers of 3: %s", got)
	}

	for _, tc := range []struct {
		url, tok string
		status   int
		code     wire.Code
	}{
		{base + "?seq=1", "", http.StatusUnauthorized, wire.CodeTokenInvalid},
		{base + "?seq=1", tokC, http.StatusForbidden, wire.CodeNotMember},
		{base + "/1/readers", tokC, http.StatusForbidden, wire.CodeNotMember},
		{base, tokA, http.StatusBadRequest, wire.CodeInvalidArgument},
		{base + "?seq=0", tokA, http.StatusBadRequest, wire.CodeInvalidArgument},
		{base + "?seq=x", tokA, http.StatusBadRequest, wire.CodeInvalidArgument},
		{base + "?seq=" + strings.Repeat("1&seq=", api.MaxReceiptSeqs) + "1", tokA, http.StatusBadRequest, wire.CodeInvalidArgument},
		{base + "/0/readers", tokA, http.StatusBadRequest, wire.CodeInvalidArgument},
		{base + "/1/readers?limit=0", tokA, http.StatusBadRequest, wire.CodeInvalidArgument},
		{base + "/1/readers?limit=5000", tokA, http.StatusBadRequest, wire.CodeInvalidArgument},
		{n.APIURL() + "/api/v1/conversations/12345/receipts?seq=1", tokA, http.StatusNotFound, wire.CodeConvNotFound},
		{n.APIURL() + "/api/v1/conversations/x/receipts?seq=1", tokA, http.StatusBadRequest, wire.CodeInvalidArgument},
	} {
		status, body := get(t, tc.url, tc.tok)
		wantError(t, status, body, tc.status, tc.code)
	}
}

// TestHTTPMembers: a group's members page by page, with roles (a CONV
// lists at most 512), members only; and the list shows the group's name
// and admins.
func TestHTTPMembers(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := context.Background()
	alice := connect(t, n, "alice", "phone")
	var first, more [][]byte
	for i := range 300 {
		u := []byte(fmt.Sprintf("u%03d", i))
		if i < 255 {
			first = append(first, u)
		} else {
			more = append(more, u)
		}
	}
	alice.send((&wire.CreateGroup{ReqID: 1, Name: []byte("big"), Members: first}).Append(nil, 0))
	alice.expect(wire.TypeConv, wire.TypeMsg)
	conv := alice.dec.Conv.ConvID
	if alice.dec.Conv.MemberTotal != 256 {
		t.Fatalf("CONV after create: %d members", alice.dec.Conv.MemberTotal)
	}
	alice.send((&wire.GroupChange{ReqID: 2, ConvID: conv, Op: wire.GroupAdd, Users: more}).Append(nil, 0))
	alice.expect(wire.TypeConv, wire.TypeMsg)
	if alice.dec.Conv.ReqID != 2 || alice.dec.Conv.MemberTotal != 301 {
		t.Fatalf("CONV after add: %+v", alice.dec.Conv)
	}
	tokA, err := bench.DevToken(ctx, n.APIURL(), "alice", "web")
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("%s/api/v1/conversations/%d/members", n.APIURL(), conv)
	var all []api.MemberJSON
	after, pages := "", 0
	for {
		status, body := get(t, base+"?limit=100&after="+after, tokA)
		if status != http.StatusOK {
			t.Fatalf("%d %s", status, body)
		}
		var page api.MembersJSON
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		if page.Total != 301 {
			t.Fatalf("total %d", page.Total)
		}
		all = append(all, page.Members...)
		pages++
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if pages != 4 || len(all) != 301 || all[0] != (api.MemberJSON{User: "alice", Role: "admin"}) || all[300] != (api.MemberJSON{User: "u299", Role: "member"}) {
		t.Fatalf("%d pages, %d members, first %v, last %v", pages, len(all), all[0], all[len(all)-1])
	}
	tokC, err := bench.DevToken(ctx, n.APIURL(), "carol", "web")
	if err != nil {
		t.Fatal(err)
	}
	status, body := get(t, base, tokC)
	wantError(t, status, body, http.StatusForbidden, wire.CodeNotMember)
	status, body = get(t, base+"?limit=1025", tokA)
	wantError(t, status, body, http.StatusBadRequest, wire.CodeInvalidArgument)
	status, body = get(t, base+"?after=no%20spaces", tokA)
	wantError(t, status, body, http.StatusBadRequest, wire.CodeInvalidArgument)
	status, body = get(t, fmt.Sprintf("%s/api/v1/conversations/12345/members", n.APIURL()), tokA)
	wantError(t, status, body, http.StatusNotFound, wire.CodeConvNotFound)

	status, body = get(t, n.APIURL()+"/api/v1/conversations", tokA)
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	var list struct {
		Conversations []api.ConversationJSON `json:"conversations"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Conversations) != 1 || list.Conversations[0].Name != "big" || fmt.Sprint(list.Conversations[0].Admins) != "[alice]" || list.Conversations[0].Kind != "group" {
		t.Fatalf("list %+v", list.Conversations)
	}
}

// TestHTTPInbox: the inbox lists a user's conversations by recency, each
// with its last message and an unread count from the read pointer (one's
// own messages and a group's history before one joined never count), and
// pages with a cursor.
func TestHTTPInbox(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := context.Background()
	alice := connect(t, n, "alice", "phone")
	bob := connect(t, n, "bob", "phone")
	carol := connect(t, n, "carol", "phone")
	// Distinct server milliseconds make the recency order unambiguous;
	// the pause orders events, it asserts no timing.
	tick := func() { time.Sleep(3 * time.Millisecond) }
	ab := alice.openDirect("bob")
	for i := 1; i <= 3; i++ {
		alice.send(sendFrame(ab, fmt.Sprintf("a%d", i), fmt.Sprintf("hi bob %d", i)))
		alice.expect(wire.TypeAck)
	}
	tick()
	ca := carol.openDirect("alice")
	carol.send(sendFrame(ca, "c1", "hi alice"))
	carol.expect(wire.TypeAck)
	tick()
	alice.send((&wire.CreateGroup{ReqID: 1, Name: []byte("hikers"), Members: [][]byte{[]byte("carol")}}).Append(nil, 0))
	alice.expect(wire.TypeConv, wire.TypeMsg, wire.TypeConv)
	g := alice.dec.Conv.ConvID
	tick()
	carol.send(sendFrame(g, "g1", "hello hikers"))
	carol.expect(wire.TypeAck, wire.TypeMsg, wire.TypeConv)
	tick()
	alice.send((&wire.GroupChange{ReqID: 2, ConvID: g, Op: wire.GroupAdd, Users: [][]byte{[]byte("bob")}}).Append(nil, 0))
	alice.expect(wire.TypeConv, wire.TypeMsg)
	// Bob reads up to 2 of Alice's 3; the RECEIPT reaching Alice proves
	// the pointer is stored.
	bob.send(receiptFrame(ab, wire.ReceiptRead, 2))
	alice.expect(wire.TypeReceipt, wire.TypeMsg, wire.TypeConv)

	inbox := func(user, query string) api.InboxJSON {
		t.Helper()
		tok, err := bench.DevToken(ctx, n.APIURL(), user, "web")
		if err != nil {
			t.Fatal(err)
		}
		status, body := get(t, n.APIURL()+"/api/v1/inbox"+query, tok)
		if status != http.StatusOK {
			t.Fatalf("%d %s", status, body)
		}
		var out api.InboxJSON
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	line := func(e api.InboxEntryJSON) string {
		s := fmt.Sprintf("%s%s %d/%d unread %d", e.Name, e.Peer, e.ReadSeq, e.LastSeq, e.Unread)
		if m := e.LastMessage; m != nil && m.Body != nil {
			s += fmt.Sprintf(" last %s: %s", m.Sender, *m.Body)
		} else if m != nil {
			s += fmt.Sprintf(" last %s: system", m.Sender)
		}
		return s
	}
	for _, tc := range []struct {
		user string
		want []string
	}{
		{"alice", []string{"hikers 3/3 unread 0 last alice: system", "carol 0/1 unread 1 last carol: hi alice", "bob 3/3 unread 0 last alice: hi bob 3"}},
		{"bob", []string{"hikers 2/3 unread 1 last alice: system", "alice 2/3 unread 1 last alice: hi bob 3"}},
		{"carol", []string{"hikers 2/3 unread 1 last alice: system", "alice 1/1 unread 0 last carol: hi alice"}},
	} {
		in := inbox(tc.user, "")
		var got []string
		for _, e := range in.Conversations {
			got = append(got, line(e))
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) || in.NextCursor != "" {
			t.Fatalf("%s's inbox:\n%q\nwant\n%q (next %q)", tc.user, got, tc.want, in.NextCursor)
		}
	}
	if e := inbox("alice", "").Conversations[0]; e.Kind != "group" || e.MemberCount != 3 || e.ConvID != fmt.Sprint(g) || e.LastMessage.Kind != uint64(wire.KindSystem) {
		t.Fatalf("group entry %+v", e)
	}

	// Pages of one, in the same order, until the cursor runs out.
	var paged []string
	for cursor := ""; ; {
		in := inbox("alice", "?limit=1&cursor="+cursor)
		if len(in.Conversations) != 1 {
			t.Fatalf("page of %d", len(in.Conversations))
		}
		paged = append(paged, line(in.Conversations[0]))
		if cursor = in.NextCursor; cursor == "" {
			break
		}
	}
	if len(paged) != 3 || paged[2] != "bob 3/3 unread 0 last alice: hi bob 3" {
		t.Fatalf("paged inbox %q", paged)
	}
	if in := inbox("dave", ""); len(in.Conversations) != 0 || in.Conversations == nil {
		t.Fatalf("a stranger's inbox %+v, want an empty list", in)
	}

	// Carol reads the group on her phone: the store gets her read pointer
	// only after the write-behind window, but her inbox (any device) shows
	// it read as soon as the fanout has counted the receipt.
	carol.send(receiptFrame(g, wire.ReceiptRead, 3))
	for i := 0; ; i++ {
		if e := inbox("carol", "").Conversations[0]; e.Unread == 0 && e.ReadSeq == 3 {
			break
		} else if i == 500 {
			t.Fatalf("carol's group entry after her read: %s", line(e))
		}
		time.Sleep(10 * time.Millisecond)
	}

	tokA, err := bench.DevToken(ctx, n.APIURL(), "alice", "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query, tok string
		status     int
		code       wire.Code
	}{
		{"", "", http.StatusUnauthorized, wire.CodeTokenInvalid},
		{"", "garbage", http.StatusUnauthorized, wire.CodeTokenInvalid},
		{"?limit=0", tokA, http.StatusBadRequest, wire.CodeInvalidArgument},
		{"?limit=201", tokA, http.StatusBadRequest, wire.CodeInvalidArgument},
		{"?limit=x", tokA, http.StatusBadRequest, wire.CodeInvalidArgument},
		{"?cursor=12", tokA, http.StatusBadRequest, wire.CodeInvalidArgument},
		{"?cursor=a.b", tokA, http.StatusBadRequest, wire.CodeInvalidArgument},
	} {
		status, body := get(t, n.APIURL()+"/api/v1/inbox"+tc.query, tc.tok)
		wantError(t, status, body, tc.status, tc.code)
	}
}

// TestHTTPPresencePrivacy: each visibility setting, for a viewer who shares
// a group (not a direct conversation) and for a stranger; the settings
// endpoints and their errors.
func TestHTTPPresencePrivacy(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := context.Background()
	token := func(user string) string {
		tok, err := bench.DevToken(ctx, n.APIURL(), user, "web")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tokA, tokB, tokS := token("alice"), token("bob"), token("stranger")
	alice := connect(t, n, "alice", "phone")
	alice.send((&wire.CreateGroup{ReqID: 1, Name: []byte("g"), Members: [][]byte{[]byte("bob")}}).Append(nil, 0))
	alice.expect(wire.TypeConv, wire.TypeMsg)

	see := func(tok string) api.PresenceJSON {
		t.Helper()
		status, body := get(t, n.APIURL()+"/api/v1/presence?user=alice", tok)
		if status != http.StatusOK {
			t.Fatalf("%d %s", status, body)
		}
		var out struct {
			Presence []api.PresenceJSON `json:"presence"`
		}
		if err := json.Unmarshal(body, &out); err != nil || len(out.Presence) != 1 {
			t.Fatalf("body %s: %v", body, err)
		}
		return out.Presence[0]
	}
	set := func(body string) (int, []byte) {
		t.Helper()
		return do(t, http.MethodPut, n.APIURL()+"/api/v1/settings", tokA, body)
	}
	exact := func(p api.PresenceJSON) bool { return !p.Hidden && p.Online && p.LastSeenMS > 0 && p.Approx == "" }

	// Default (contacts): a group in common is enough.
	if status, body := get(t, n.APIURL()+"/api/v1/settings", tokA); status != http.StatusOK || strings.TrimSpace(string(body)) != `{"presence_visibility":"contacts"}` {
		t.Fatalf("default settings: %d %s", status, body)
	}
	if p := see(tokB); !exact(p) {
		t.Fatalf("contacts, group member: %+v", p)
	}
	if p := see(tokS); p != (api.PresenceJSON{User: "alice", Hidden: true}) {
		t.Fatalf("contacts, stranger: %+v", p)
	}
	// Nobody: the group member gets "recently" (online now is not told);
	// the stranger still nothing; alice herself everything.
	if status, body := set(`{"presence_visibility":"nobody"}`); status != http.StatusOK || strings.TrimSpace(string(body)) != `{"presence_visibility":"nobody"}` {
		t.Fatalf("set nobody: %d %s", status, body)
	}
	if p := see(tokB); p != (api.PresenceJSON{User: "alice", Approx: "recently"}) {
		t.Fatalf("nobody, group member: %+v", p)
	}
	if p := see(tokS); !p.Hidden {
		t.Fatalf("nobody, stranger: %+v", p)
	}
	if p := see(tokA); !exact(p) {
		t.Fatalf("nobody, self: %+v", p)
	}
	// Everyone: strangers too.
	if status, body := set(`{"presence_visibility":"everyone"}`); status != http.StatusOK {
		t.Fatalf("set everyone: %d %s", status, body)
	}
	if p := see(tokS); !exact(p) {
		t.Fatalf("everyone, stranger: %+v", p)
	}
	// Bad bodies change nothing.
	for _, body := range []string{`{"presence_visibility":"friends"}`, `{"presence_visibility":1}`, `{"colour":"red"}`, `not json`, `{"presence_visibility":"` + strings.Repeat("x", 5000) + `"}`} {
		status, b := set(body)
		wantError(t, status, b, http.StatusBadRequest, wire.CodeInvalidArgument)
	}
	if status, body := get(t, n.APIURL()+"/api/v1/settings", tokA); status != http.StatusOK || !strings.Contains(string(body), `"everyone"`) {
		t.Fatalf("settings after bad writes: %d %s", status, body)
	}
	status, body := get(t, n.APIURL()+"/api/v1/settings", "")
	wantError(t, status, body, http.StatusUnauthorized, wire.CodeTokenInvalid)
	alice.conn.Close()
}

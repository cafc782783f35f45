// Package api is chatd's HTTP API: history paging, opening direct
// conversations, listing a user's conversations, presence and, in dev mode
// only, minting tokens. Every error is a 4xx/5xx with a JSON body
// {"error":{"code":N,"name":"...","message":"..."}} using the protocol's
// error codes (wire/codes.go).
package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/chatd-dev/chatd/core/auth"
	"github.com/chatd-dev/chatd/core/messages"
	"github.com/chatd-dev/chatd/core/routing"
	"github.com/chatd-dev/chatd/core/store"
	"github.com/chatd-dev/chatd/wire"
)

// Verifier checks a bearer token: code 0 and the user on success.
type Verifier interface {
	Authenticate(token []byte, now time.Time) (user string, code wire.Code)
}

// Minter mints tokens (dev mode).
type Minter interface {
	Mint(user, device string, ttl time.Duration) (string, error)
}

// Config configures the API. Zero values mean defaults.
type Config struct {
	// Dev enables POST /dev/token. Never enable it in production: it hands
	// anyone a token for any user.
	Dev    bool
	Logger *slog.Logger
	Now    func() time.Time
}

// Deps are the API's collaborators. Minter is required only with Dev.
type Deps struct {
	Store    store.Store
	Verifier Verifier
	Minter   Minter
	// Presence answers GET /api/v1/presence; nil answers it with 503.
	Presence routing.Presence
	// Receipts answers the receipt count and reader endpoints; nil
	// answers them with 503.
	Receipts routing.ReceiptCounter
}

// Handler returns the API's http.Handler.
func Handler(cfg Config, deps Deps) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &api{cfg: cfg, deps: deps}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/conversations/{id}/messages", a.authed(a.history))
	mux.HandleFunc("GET /api/v1/conversations/{id}/members", a.authed(a.members))
	mux.HandleFunc("GET /api/v1/conversations", a.authed(a.list))
	mux.HandleFunc("GET /api/v1/inbox", a.authed(a.inbox))
	mux.HandleFunc("POST /api/v1/conversations/direct", a.authed(a.openDirect))
	mux.HandleFunc("GET /api/v1/presence", a.authed(a.presence))
	mux.HandleFunc("GET /api/v1/settings", a.authed(a.settings))
	mux.HandleFunc("PUT /api/v1/settings", a.authed(a.putSettings))
	mux.HandleFunc("GET /api/v1/conversations/{id}/receipts", a.authed(a.receiptCounts))
	mux.HandleFunc("GET /api/v1/conversations/{id}/receipts/{seq}/readers", a.authed(a.receiptReaders))
	if cfg.Dev {
		mux.HandleFunc("POST /dev/token", a.devToken)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, wire.CodeInvalidArgument, "no such endpoint")
	})
	return mux
}

type api struct {
	cfg  Config
	deps Deps
}

// maxBody bounds request bodies.
const maxBody = 4 << 10

func (a *api) authed(h func(w http.ResponseWriter, r *http.Request, user string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			writeError(w, http.StatusUnauthorized, wire.CodeTokenInvalid, "missing bearer token")
			return
		}
		user, code := a.deps.Verifier.Authenticate([]byte(tok), a.cfg.Now())
		if code != 0 {
			writeError(w, http.StatusUnauthorized, code, "token rejected")
			return
		}
		h(w, r, user)
	}
}

// MessageJSON is one message in API responses. 64-bit ids are decimal
// strings: JSON numbers lose precision above 2^53.
type MessageJSON struct {
	ConvID       string `json:"conversation_id"`
	MessageID    string `json:"message_id"`
	Seq          uint64 `json:"seq"`
	ServerTimeMS uint64 `json:"server_time_ms"`
	Sender       string `json:"sender"`
	SenderDevice string `json:"sender_device"`
	ClientMsgID  string `json:"client_msg_id"`
	Kind         uint64 `json:"kind"`
	// Body is set for text messages; BodyBase64 for every other kind.
	Body       *string `json:"body,omitempty"`
	BodyBase64 *string `json:"body_base64,omitempty"`
}

// HistoryJSON is the history endpoint's response.
type HistoryJSON struct {
	ConvID   string        `json:"conversation_id"`
	Messages []MessageJSON `json:"messages"` // ascending seq
	HasMore  bool          `json:"has_more"`
	// NextBefore is the before= value for the next older page (0: none).
	NextBefore uint64 `json:"next_before"`
}

func (a *api) history(w http.ResponseWriter, r *http.Request, user string) {
	conv, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || conv == 0 {
		writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "bad conversation id")
		return
	}
	q := r.URL.Query()
	var before, limit uint64
	if v := q.Get("before"); v != "" {
		if before, err = strconv.ParseUint(v, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "bad before")
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.ParseUint(v, 10, 64); err != nil || limit == 0 || limit > wire.MaxHistoryLimit {
			writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "limit must be 1..200")
			return
		}
	}
	if _, ok := a.memberOf(w, r, conv, user); !ok {
		return
	}
	msgs, more, err := a.deps.Store.MessagesBefore(r.Context(), conv, before, messages.ClampLimit(limit))
	if err != nil {
		a.internal(w, err)
		return
	}
	out := HistoryJSON{ConvID: strconv.FormatUint(conv, 10), Messages: make([]MessageJSON, len(msgs)), HasMore: more}
	for i := range msgs {
		out.Messages[i] = toJSON(&msgs[i])
	}
	if more && len(msgs) > 0 {
		out.NextBefore = msgs[0].Seq
	}
	writeJSON(w, http.StatusOK, out)
}

// MaxMembersPage bounds one page of the members endpoint: a whole group at
// the default cap.
const MaxMembersPage = 1024

// MembersJSON is one page of a conversation's members, in id order.
type MembersJSON struct {
	ConvID  string       `json:"conversation_id"`
	Total   int          `json:"total"`
	Members []MemberJSON `json:"members"`
	// Next is the "after" of the next page; empty on the last page.
	Next string `json:"next,omitempty"`
}

// MemberJSON is one member and its role ("admin" or "member").
type MemberJSON struct {
	User string `json:"user"`
	Role string `json:"role"`
}

// members answers GET /api/v1/conversations/{id}/members?after=u&limit=n:
// up to limit (default 256, at most 1024) members with ids above after, in
// id order, with their roles. A CONV frame lists at most 512 members; this
// is how a client reads the rest. Members only.
func (a *api) members(w http.ResponseWriter, r *http.Request, user string) {
	conv, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || conv == 0 {
		writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "bad conversation id")
		return
	}
	q := r.URL.Query()
	limit := uint64(256)
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.ParseUint(v, 10, 64); err != nil || limit == 0 || limit > MaxMembersPage {
			writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "limit must be 1..1024")
			return
		}
	}
	after := q.Get("after")
	if after != "" && !auth.ValidUserID(after) {
		writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "bad after")
		return
	}
	c, ok := a.memberOf(w, r, conv, user)
	if !ok {
		return
	}
	i, _ := slices.BinarySearch(c.Members, after)
	if i < len(c.Members) && c.Members[i] == after {
		i++
	}
	page := c.Members[i:min(len(c.Members), i+int(limit))]
	out := MembersJSON{ConvID: strconv.FormatUint(conv, 10), Total: len(c.Members), Members: make([]MemberJSON, len(page))}
	for j, m := range page {
		role := "member"
		if _, admin := slices.BinarySearch(c.Admins, m); admin {
			role = "admin"
		}
		out.Members[j] = MemberJSON{User: m, Role: role}
	}
	if i+len(page) < len(c.Members) {
		out.Next = page[len(page)-1]
	}
	writeJSON(w, http.StatusOK, out)
}

// ConversationJSON describes a conversation.
type ConversationJSON struct {
	ConvID  string   `json:"conversation_id"`
	Kind    string   `json:"kind"`
	Members []string `json:"members"`
	LastSeq uint64   `json:"last_seq"`
	// Groups only.
	Name   string   `json:"name,omitempty"`
	Admins []string `json:"admins,omitempty"`
}

func (a *api) list(w http.ResponseWriter, r *http.Request, user string) {
	ids, err := a.deps.Store.UserConversations(r.Context(), user)
	if err != nil {
		a.internal(w, err)
		return
	}
	out := struct {
		Conversations []ConversationJSON `json:"conversations"`
	}{Conversations: make([]ConversationJSON, 0, len(ids))}
	for _, id := range ids {
		c, err := a.deps.Store.Conversation(r.Context(), id)
		if err != nil {
			a.internal(w, err)
			return
		}
		last, err := a.deps.Store.LastSeq(r.Context(), id)
		if err != nil {
			a.internal(w, err)
			return
		}
		out.Conversations = append(out.Conversations, convJSON(&c, last))
	}
	writeJSON(w, http.StatusOK, out)
}

// Inbox page sizes: limit= defaults to DefaultInboxLimit, at most
// MaxInboxLimit.
const (
	DefaultInboxLimit = 50
	MaxInboxLimit     = 200
)

// InboxEntryJSON is one conversation of the inbox.
type InboxEntryJSON struct {
	ConvID string `json:"conversation_id"`
	Kind   string `json:"kind"`
	// Name is a group's name; Peer a direct conversation's other member.
	Name        string `json:"name,omitempty"`
	Peer        string `json:"peer,omitempty"`
	MemberCount int    `json:"member_count"`
	LastSeq     uint64 `json:"last_seq"`
	// ReadSeq is the caller's read pointer; Unread is LastSeq - ReadSeq
	// (the caller's own messages move its read pointer, so they never
	// count).
	ReadSeq        uint64       `json:"read_seq"`
	Unread         uint64       `json:"unread"`
	LastActivityMS uint64       `json:"last_activity_ms"`
	LastMessage    *MessageJSON `json:"last_message,omitempty"`
}

// InboxJSON is the inbox endpoint's response.
type InboxJSON struct {
	Conversations []InboxEntryJSON `json:"conversations"`
	// NextCursor is the cursor= value of the next page ("": this page is
	// the last).
	NextCursor string `json:"next_cursor"`
}

// inbox answers GET /api/v1/inbox?limit=N&cursor=C: the caller's
// conversations, most recent activity first, each with its last message
// and the caller's unread count. cursor is a previous page's next_cursor:
// "<last_activity_ms>.<conversation_id>" of the page's last entry.
func (a *api) inbox(w http.ResponseWriter, r *http.Request, user string) {
	q := r.URL.Query()
	limit := DefaultInboxLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxInboxLimit {
			writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "limit must be 1..200")
			return
		}
		limit = n
	}
	var afterMS, afterConv uint64
	cursor := q.Get("cursor")
	if cursor != "" {
		ms, conv, ok := strings.Cut(cursor, ".")
		var err1, err2 error
		afterMS, err1 = strconv.ParseUint(ms, 10, 64)
		afterConv, err2 = strconv.ParseUint(conv, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "bad cursor: pass a next_cursor back as it was")
			return
		}
	}
	all, err := messages.Inbox(r.Context(), a.deps.Store, a.deps.Receipts, user)
	if err != nil {
		a.internal(w, err)
		return
	}
	if cursor != "" {
		i := slices.IndexFunc(all, func(e messages.InboxEntry) bool { return messages.InboxAfter(&e, afterMS, afterConv) })
		if i < 0 {
			i = len(all)
		}
		all = all[i:]
	}
	out := InboxJSON{Conversations: make([]InboxEntryJSON, 0, min(limit, len(all)))}
	for i := range all[:min(limit, len(all))] {
		e := &all[i]
		j := InboxEntryJSON{
			ConvID: strconv.FormatUint(e.Conv.ID, 10), Kind: "direct", MemberCount: len(e.Conv.Members),
			LastSeq: e.LastSeq, ReadSeq: e.ReadSeq, Unread: e.Unread, LastActivityMS: e.ActivityMS,
		}
		if e.Conv.Kind == wire.ConvGroup {
			j.Kind, j.Name = "group", e.Conv.Name
		} else {
			for _, m := range e.Conv.Members {
				if m != user {
					j.Peer = m
				}
			}
		}
		if e.Last != nil {
			m := toJSON(e.Last)
			j.LastMessage = &m
		}
		out.Conversations = append(out.Conversations, j)
	}
	if len(all) > limit {
		last := &all[limit-1]
		out.NextCursor = strconv.FormatUint(last.ActivityMS, 10) + "." + strconv.FormatUint(last.Conv.ID, 10)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) openDirect(w http.ResponseWriter, r *http.Request, user string) {
	var req struct {
		Peer string `json:"peer"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "body must be {\"peer\":\"...\"}")
		return
	}
	if !auth.ValidUserID(req.Peer) || req.Peer == user {
		writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "bad peer")
		return
	}
	c, err := messages.EnsureDirect(r.Context(), a.deps.Store, user, req.Peer, uint64(a.cfg.Now().UnixMilli()))
	if err != nil {
		a.internal(w, err)
		return
	}
	last, err := a.deps.Store.LastSeq(r.Context(), c.ID)
	if err != nil {
		a.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, convJSON(&c, last))
}

// MaxPresenceUsers bounds the users one presence request may name.
const MaxPresenceUsers = 100

// PresenceJSON is one user's presence as the caller may see it (see
// messages.ViewPresence): exact (Online, LastSeenMS), coarse (Approx), or
// nothing (Hidden).
type PresenceJSON struct {
	User   string `json:"user"`
	Hidden bool   `json:"hidden,omitempty"`
	Online bool   `json:"online"`
	// LastSeenMS is when the user was last seen online (Unix ms); 0 when
	// never seen, hidden, coarse, or not within the retention.
	LastSeenMS int64 `json:"last_seen_ms"`
	// Approx is "recently", "within_week", "within_month" or "long_ago"
	// when the user shows the caller only a coarse answer.
	Approx string `json:"approx,omitempty"`
}

// presence answers GET /api/v1/presence?user=a&user=b: each named user's
// online state and last seen, in the order named, as each user's privacy
// setting lets the caller see it (messages.ViewPresence). A user hidden
// from the caller is answered the same whether or not it exists, so the
// endpoint tells nothing about strangers.
func (a *api) presence(w http.ResponseWriter, r *http.Request, user string) {
	if a.deps.Presence == nil {
		writeError(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "presence is not served here")
		return
	}
	users := r.URL.Query()["user"]
	if len(users) == 0 || len(users) > MaxPresenceUsers {
		writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "name 1 to 100 users: ?user=a&user=b")
		return
	}
	for _, u := range users {
		if !auth.ValidUserID(u) {
			writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "bad user id")
			return
		}
	}
	mine, err := a.deps.Store.UserConversations(r.Context(), user)
	if err != nil {
		a.internal(w, err)
		return
	}
	type rule struct {
		vis    store.Visibility
		shares bool
	}
	rules := make([]rule, len(users))
	for i, u := range users {
		set, err := a.deps.Store.UserSettings(r.Context(), u)
		if err != nil {
			a.internal(w, err)
			return
		}
		rules[i].vis = set.PresenceVisibility
		if set.PresenceVisibility != store.VisibilityEveryone {
			if rules[i].shares, err = messages.SharesConversation(r.Context(), a.deps.Store, user, u, mine); err != nil {
				a.internal(w, err)
				return
			}
		}
	}
	st, err := a.deps.Presence.Presence(r.Context(), users, nil)
	if err != nil {
		a.cfg.Logger.Warn("api: presence", "err", err)
		writeError(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "presence unavailable")
		return
	}
	now := a.cfg.Now()
	out := make([]PresenceJSON, len(users))
	for i, s := range st {
		v := messages.ViewPresence(s, rules[i].vis, users[i] == user, rules[i].shares, now)
		out[i] = PresenceJSON{User: users[i], Hidden: v.Hidden, Online: v.Online, LastSeenMS: v.LastSeenMS, Approx: v.Approx}
	}
	writeJSON(w, http.StatusOK, struct {
		Presence []PresenceJSON `json:"presence"`
	}{out})
}

// SettingsJSON is a user's settings in the API.
type SettingsJSON struct {
	// PresenceVisibility is who sees the user's exact online state and
	// last seen: "contacts" (users who share a conversation; the default),
	// "everyone", or "nobody" (those who share a conversation get a coarse
	// answer).
	PresenceVisibility string `json:"presence_visibility"`
}

var visibilityNames = map[store.Visibility]string{
	store.VisibilityContacts: "contacts",
	store.VisibilityEveryone: "everyone",
	store.VisibilityNobody:   "nobody",
}

// settings answers GET /api/v1/settings: the caller's settings.
func (a *api) settings(w http.ResponseWriter, r *http.Request, user string) {
	set, err := a.deps.Store.UserSettings(r.Context(), user)
	if err != nil {
		a.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, SettingsJSON{PresenceVisibility: visibilityNames[set.PresenceVisibility]})
}

// putSettings answers PUT /api/v1/settings with a SettingsJSON body: it
// replaces the caller's settings and answers them as stored. A field left
// out keeps its stored value.
func (a *api) putSettings(w http.ResponseWriter, r *http.Request, user string) {
	var req struct {
		PresenceVisibility *string `json:"presence_visibility"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, `body must be {"presence_visibility":"contacts|everyone|nobody"}`)
		return
	}
	set, err := a.deps.Store.UserSettings(r.Context(), user)
	if err != nil {
		a.internal(w, err)
		return
	}
	if v := req.PresenceVisibility; v != nil {
		found := false
		for vis, name := range visibilityNames {
			if name == *v {
				set.PresenceVisibility, found = vis, true
			}
		}
		if !found {
			writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "presence_visibility must be contacts, everyone or nobody")
			return
		}
	}
	if err := a.deps.Store.SetUserSettings(r.Context(), user, set); err != nil {
		a.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, SettingsJSON{PresenceVisibility: visibilityNames[set.PresenceVisibility]})
}

// memberOf reads conversation conv and checks that user is a member; on any
// failure it writes the error response and reports false.
func (a *api) memberOf(w http.ResponseWriter, r *http.Request, conv uint64, user string) (store.Conversation, bool) {
	c, err := a.deps.Store.Conversation(r.Context(), conv)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, wire.CodeConvNotFound, "no such conversation")
		return c, false
	}
	if err != nil {
		a.internal(w, err)
		return c, false
	}
	if !member(c.Members, user) {
		writeError(w, http.StatusForbidden, wire.CodeNotMember, "not a member")
		return c, false
	}
	return c, true
}

// MaxReceiptSeqs bounds the seqs one receipt count request may name.
const MaxReceiptSeqs = 100

// ReceiptsJSON is the receipt count endpoint's response.
type ReceiptsJSON struct {
	ConvID string `json:"conversation_id"`
	// Others is the number of members besides the caller: the "of 800".
	Others   int                `json:"others"`
	Receipts []ReceiptCountJSON `json:"receipts"` // in the order asked
}

// ReceiptCountJSON is how many members besides the caller have delivered
// and read message Seq.
type ReceiptCountJSON struct {
	Seq       uint64 `json:"seq"`
	Delivered int    `json:"delivered"`
	Read      int    `json:"read"`
}

// receiptCounts answers GET /api/v1/conversations/{id}/receipts?seq=1&seq=2:
// for each seq, how many members other than the caller have delivered and
// read it. Asked by a message's sender, that is the "read by 640 of 800"
// under it. Members only.
func (a *api) receiptCounts(w http.ResponseWriter, r *http.Request, user string) {
	conv, ok := a.receiptsConv(w, r)
	if !ok {
		return
	}
	qs := r.URL.Query()["seq"]
	if len(qs) == 0 || len(qs) > MaxReceiptSeqs {
		writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "name 1 to 100 seqs: ?seq=1&seq=2")
		return
	}
	seqs := make([]uint64, len(qs))
	for i, v := range qs {
		seq, err := strconv.ParseUint(v, 10, 64)
		if err != nil || seq == 0 || seq > routing.MaxReceiptSeq {
			writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "bad seq")
			return
		}
		seqs[i] = seq
	}
	c, ok := a.memberOf(w, r, conv, user)
	if !ok {
		return
	}
	counts, err := a.deps.Receipts.ReceiptCounts(r.Context(), conv, user, seqs, nil)
	if err != nil {
		a.cfg.Logger.Warn("api: receipt counts", "err", err)
		writeError(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "receipt counts unavailable")
		return
	}
	out := ReceiptsJSON{ConvID: strconv.FormatUint(conv, 10), Others: len(c.Members) - 1, Receipts: make([]ReceiptCountJSON, len(seqs))}
	for i, n := range counts {
		out.Receipts[i] = ReceiptCountJSON{Seq: seqs[i], Delivered: n.Delivered, Read: n.Read}
	}
	writeJSON(w, http.StatusOK, out)
}

// MaxReaders bounds the reader list: wire.MaxMembers.
const MaxReaders = wire.MaxMembers

// receiptReaders answers GET /api/v1/conversations/{id}/receipts/{seq}/readers?limit=N:
// the members other than the caller who have read message seq, sorted, at
// most limit (default and maximum MaxReaders). Members only.
func (a *api) receiptReaders(w http.ResponseWriter, r *http.Request, user string) {
	conv, ok := a.receiptsConv(w, r)
	if !ok {
		return
	}
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 || seq > routing.MaxReceiptSeq {
		writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "bad seq")
		return
	}
	limit := uint64(MaxReaders)
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.ParseUint(v, 10, 64); err != nil || limit == 0 || limit > MaxReaders {
			writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "limit must be 1..1024")
			return
		}
	}
	if _, ok := a.memberOf(w, r, conv, user); !ok {
		return
	}
	readers, err := a.deps.Receipts.ReceiptReaders(r.Context(), conv, user, seq, int(limit), nil)
	if err != nil {
		a.cfg.Logger.Warn("api: receipt readers", "err", err)
		writeError(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "receipt readers unavailable")
		return
	}
	if readers == nil {
		readers = []string{}
	}
	writeJSON(w, http.StatusOK, struct {
		ConvID  string   `json:"conversation_id"`
		Seq     uint64   `json:"seq"`
		Readers []string `json:"readers"`
	}{strconv.FormatUint(conv, 10), seq, readers})
}

// receiptsConv checks that receipts are served here and parses the
// conversation id; on failure it writes the error response.
func (a *api) receiptsConv(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	if a.deps.Receipts == nil {
		writeError(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "receipt counts are not served here")
		return 0, false
	}
	conv, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || conv == 0 {
		writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "bad conversation id")
		return 0, false
	}
	return conv, true
}

func (a *api) devToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		User   string `json:"user"`
		Device string `json:"device"`
		TTL    string `json:"ttl"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "body must be {\"user\":\"...\"}")
		return
	}
	ttl := 24 * time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 30*24*time.Hour {
			writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "ttl must be a duration up to 720h")
			return
		}
		ttl = d
	}
	if !auth.ValidUserID(req.User) {
		writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "bad user id")
		return
	}
	tok, err := a.deps.Minter.Mint(req.User, req.Device, ttl)
	if err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeInvalidArgument, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": tok})
}

func (a *api) internal(w http.ResponseWriter, err error) {
	a.cfg.Logger.Error("api", "err", err)
	writeError(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "temporarily unavailable")
}

func toJSON(m *store.Message) MessageJSON {
	j := MessageJSON{
		ConvID:       strconv.FormatUint(m.ConvID, 10),
		MessageID:    strconv.FormatUint(m.MessageID, 10),
		Seq:          m.Seq,
		ServerTimeMS: m.ServerTimeMS,
		Sender:       m.Sender,
		SenderDevice: m.SenderDevice,
		ClientMsgID:  m.ClientMsgID,
		Kind:         uint64(m.Kind),
	}
	if m.Kind == wire.KindText && utf8.Valid(m.Body) {
		s := string(m.Body)
		j.Body = &s
	} else {
		s := base64.StdEncoding.EncodeToString(m.Body)
		j.BodyBase64 = &s
	}
	return j
}

func convJSON(c *store.Conversation, last uint64) ConversationJSON {
	kind := "direct"
	if c.Kind == wire.ConvGroup {
		kind = "group"
	}
	return ConversationJSON{ConvID: strconv.FormatUint(c.ID, 10), Kind: kind, Members: c.Members, LastSeq: last, Name: c.Name, Admins: c.Admins}
}

func member(members []string, user string) bool {
	for _, m := range members {
		if m == user {
			return true
		}
	}
	return false
}

// ErrorJSON is the body of every error response.
type ErrorJSON struct {
	Error struct {
		Code    uint64 `json:"code"`
		Name    string `json:"name"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code wire.Code, msg string) {
	var e ErrorJSON
	e.Error.Code, e.Error.Name, e.Error.Message = uint64(code), code.String(), msg
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

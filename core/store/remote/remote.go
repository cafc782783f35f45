// Package remote serves a store.Store over HTTP and implements store.Store
// as a client of such a server.
//
// Why it exists: the embedded store (Pebble) is a library that one process
// opens. Several core processes on one machine (the local cluster, the
// failover tests) must share one store, or a partition that moves from one
// core to another would find none of its conversations and reuse seqs. A
// `chatd --roles store` process opens Pebble and serves it with Handler;
// each core talks to it with Dial. In production the shared store is
// ScyllaDB and this package is not used.
//
// Protocol (version 1): POST /store/v1/<method> with a JSON request body,
// answered 200 with a JSON result, or with an error status and
// {"error": code, "message": text}: 404 not_found (store.ErrNotFound),
// 503 closed (store.ErrClosed), 400 invalid_batch (store.ErrInvalid),
// 409 seq_conflict (store.ErrSeqConflict),
// 400 bad_request (undecodable request), 500 internal. Bodies are
// base64 in JSON. The listener has no authentication: bind it to loopback
// or a private network only.
//
// Requests and results are the store package's types (store.Batch,
// store.Conversation, ...) in encoding/json's default form, keyed by Go
// field name, so a field added there (Conversation.Name and Admins,
// Batch.GroupUpdates) travels with no code here. The flip side: a server
// built before a field existed drops it without an error (a Commit's
// GroupUpdates would be lost while its messages land), so the store
// process and the cores must run the same build.
package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/core/store"
)

// Path is the prefix of every endpoint.
const Path = "/store/v1/"

// maxRequest bounds a request body. A Commit batch of the core is at most a
// few hundred messages of at most 64 KiB each; 64 MiB leaves room and still
// stops a runaway client from exhausting the server.
const maxRequest = 64 << 20

// Error codes in the error body.
const (
	codeNotFound    = "not_found"
	codeClosed      = "closed"
	codeBadRequest  = "bad_request"
	codeInvalid     = "invalid_batch"
	codeSeqConflict = "seq_conflict"
	codeInternal    = "internal"
)

type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

type (
	convReq struct {
		ID uint64 `json:"id"`
	}
	userReq struct {
		User string `json:"user"`
	}
	lookupReq struct {
		Conv        uint64 `json:"conv"`
		Sender      string `json:"sender"`
		ClientMsgID string `json:"client_msg_id"`
	}
	lookupResp struct {
		Message store.Message `json:"message"`
		Found   bool          `json:"found"`
	}
	lookupsReq struct {
		Keys []lookupReq `json:"keys"`
	}
	lookupsResp struct {
		Results []lookupsResult `json:"results"`
	}
	// lookupsResult leaves the message out of a miss (most lookups: each
	// new SEND's), which would otherwise carry every field of a zero one.
	lookupsResult struct {
		Found   bool           `json:"found"`
		Message *store.Message `json:"message,omitempty"`
	}
	pageReq struct {
		Conv  uint64 `json:"conv"`
		Seq   uint64 `json:"seq"` // after or before
		Limit int    `json:"limit"`
	}
	pageResp struct {
		Messages []store.Message `json:"messages"`
		More     bool            `json:"more"`
	}
	pointersReq struct {
		Conv uint64 `json:"conv"`
		User string `json:"user"`
	}
	settingsReq struct {
		User     string         `json:"user"`
		Settings store.Settings `json:"settings"`
	}
	commitResp struct {
		// Advanced[i] is Batch.Pointers[i].Advanced after the commit.
		Advanced []bool `json:"advanced"`
	}
)

// Handler serves s. It does not close s.
func Handler(s store.Store) http.Handler {
	mux := http.NewServeMux()
	route := func(method string, h func(ctx context.Context, body []byte) (any, error)) {
		mux.HandleFunc("POST "+Path+method, func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
			if err != nil {
				writeError(w, http.StatusBadRequest, codeBadRequest, "read body: "+err.Error())
				return
			}
			out, err := h(r.Context(), body)
			if err != nil {
				var bad badRequest
				switch {
				case errors.As(err, &bad):
					writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
				case errors.Is(err, store.ErrInvalid):
					writeError(w, http.StatusBadRequest, codeInvalid, err.Error())
				case errors.Is(err, store.ErrSeqConflict):
					writeError(w, http.StatusConflict, codeSeqConflict, err.Error())
				case errors.Is(err, store.ErrNotFound):
					writeError(w, http.StatusNotFound, codeNotFound, err.Error())
				case errors.Is(err, store.ErrClosed):
					writeError(w, http.StatusServiceUnavailable, codeClosed, err.Error())
				default:
					writeError(w, http.StatusInternalServerError, codeInternal, err.Error())
				}
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(out)
		})
	}
	route("ensure_conversation", func(ctx context.Context, b []byte) (any, error) {
		var c store.Conversation
		if err := decode(b, &c); err != nil {
			return nil, err
		}
		return s.EnsureConversation(ctx, c)
	})
	route("conversation", func(ctx context.Context, b []byte) (any, error) {
		var r convReq
		if err := decode(b, &r); err != nil {
			return nil, err
		}
		return s.Conversation(ctx, r.ID)
	})
	route("user_conversations", func(ctx context.Context, b []byte) (any, error) {
		var r userReq
		if err := decode(b, &r); err != nil {
			return nil, err
		}
		ids, err := s.UserConversations(ctx, r.User)
		if ids == nil {
			ids = []uint64{}
		}
		return ids, err
	})
	route("last_seq", func(ctx context.Context, b []byte) (any, error) {
		var r convReq
		if err := decode(b, &r); err != nil {
			return nil, err
		}
		return s.LastSeq(ctx, r.ID)
	})
	route("commit", func(ctx context.Context, b []byte) (any, error) {
		var batch store.Batch
		if err := decode(b, &batch); err != nil {
			return nil, err
		}
		if err := s.Commit(ctx, &batch); err != nil {
			return nil, err
		}
		resp := commitResp{Advanced: make([]bool, len(batch.Pointers))}
		for i := range batch.Pointers {
			resp.Advanced[i] = batch.Pointers[i].Advanced
		}
		return resp, nil
	})
	route("lookup_client_msg", func(ctx context.Context, b []byte) (any, error) {
		var r lookupReq
		if err := decode(b, &r); err != nil {
			return nil, err
		}
		m, ok, err := s.LookupClientMsg(ctx, r.Conv, r.Sender, r.ClientMsgID)
		return lookupResp{Message: m, Found: ok}, err
	})
	route("lookup_client_msgs", func(ctx context.Context, b []byte) (any, error) {
		var r lookupsReq
		if err := decode(b, &r); err != nil {
			return nil, err
		}
		keys := make([]store.ClientMsgKey, len(r.Keys))
		for i, k := range r.Keys {
			keys[i] = store.ClientMsgKey{ConvID: k.Conv, Sender: k.Sender, ClientMsgID: k.ClientMsgID}
		}
		res, err := s.LookupClientMsgs(ctx, keys)
		if err != nil {
			return nil, err
		}
		out := lookupsResp{Results: make([]lookupsResult, len(res))}
		for i := range res {
			out.Results[i].Found = res[i].Found
			if res[i].Found {
				out.Results[i].Message = &res[i].Message
			}
		}
		return out, nil
	})
	route("messages_after", func(ctx context.Context, b []byte) (any, error) {
		var r pageReq
		if err := decode(b, &r); err != nil {
			return nil, err
		}
		ms, err := s.MessagesAfter(ctx, r.Conv, r.Seq, r.Limit)
		return pageResp{Messages: ms}, err
	})
	route("messages_before", func(ctx context.Context, b []byte) (any, error) {
		var r pageReq
		if err := decode(b, &r); err != nil {
			return nil, err
		}
		ms, more, err := s.MessagesBefore(ctx, r.Conv, r.Seq, r.Limit)
		return pageResp{Messages: ms, More: more}, err
	})
	route("pointers", func(ctx context.Context, b []byte) (any, error) {
		var r pointersReq
		if err := decode(b, &r); err != nil {
			return nil, err
		}
		return s.Pointers(ctx, r.Conv, r.User)
	})
	route("user_settings", func(ctx context.Context, b []byte) (any, error) {
		var r settingsReq
		if err := decode(b, &r); err != nil {
			return nil, err
		}
		return s.UserSettings(ctx, r.User)
	})
	route("set_user_settings", func(ctx context.Context, b []byte) (any, error) {
		var r settingsReq
		if err := decode(b, &r); err != nil {
			return nil, err
		}
		return struct{}{}, s.SetUserSettings(ctx, r.User, r.Settings)
	})
	return mux
}

type badRequest struct{ err error }

func (b badRequest) Error() string { return b.err.Error() }

func decode(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return badRequest{fmt.Errorf("decode request: %w", err)}
	}
	return nil
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: code, Message: msg})
}

// ClientOptions tunes a Client. Zero values mean defaults.
type ClientOptions struct {
	// Timeout bounds one call when ctx has no earlier deadline (default
	// 10s): a store that stopped answering fails the call instead of
	// holding a consumer forever.
	Timeout time.Duration
	// MaxConns bounds the connections to the server (default 64).
	MaxConns int
}

// Client is a store.Store served by a remote Handler.
//
// Calls are not retried: a failed Commit may or may not have been written
// (never partly), as store.Store allows, and its caller retries it.
type Client struct {
	base    string
	hc      *http.Client
	tr      *http.Transport
	timeout time.Duration

	// mu is held shared by every call in progress and exclusively by
	// Close, so that Close waits for them.
	mu     sync.RWMutex
	closed bool
}

var _ store.Store = (*Client)(nil)

// Dial returns a client of the server at addr (host:port or an http:// URL).
// It does not connect until the first call.
func Dial(addr string, o ClientOptions) (*Client, error) {
	base := strings.TrimSuffix(addr, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	if !strings.HasPrefix(base, "http://") {
		return nil, fmt.Errorf("remote store: unsupported address %q (want host:port or http://host:port)", addr)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 64
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        o.MaxConns,
		MaxIdleConnsPerHost: o.MaxConns,
		MaxConnsPerHost:     o.MaxConns,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Client{base: base + Path, hc: &http.Client{Transport: tr}, tr: tr, timeout: o.Timeout}, nil
}

// call POSTs in to method and decodes the result into out.
func (c *Client) call(ctx context.Context, method string, in, out any) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return store.ErrClosed
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("remote store: %s: %w", method, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+method, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("remote store: %s: %w", method, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("remote store: %s: %w", method, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&eb)
		switch eb.Error {
		case codeNotFound:
			return fmt.Errorf("remote store: %s: %w", method, store.ErrNotFound)
		case codeClosed:
			return fmt.Errorf("remote store: %s: server: %w", method, store.ErrClosed)
		case codeInvalid:
			return fmt.Errorf("remote store: %s: %w (%s)", method, store.ErrInvalid, eb.Message)
		case codeSeqConflict:
			return fmt.Errorf("remote store: %s: %w (%s)", method, store.ErrSeqConflict, eb.Message)
		}
		return fmt.Errorf("remote store: %s: %s (%s): %s", method, resp.Status, eb.Error, eb.Message)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("remote store: %s: decode: %w", method, err)
	}
	return nil
}

func (c *Client) EnsureConversation(ctx context.Context, conv store.Conversation) (store.Conversation, error) {
	var out store.Conversation
	err := c.call(ctx, "ensure_conversation", conv, &out)
	return out, err
}

func (c *Client) Conversation(ctx context.Context, id uint64) (store.Conversation, error) {
	var out store.Conversation
	err := c.call(ctx, "conversation", convReq{ID: id}, &out)
	return out, err
}

func (c *Client) UserConversations(ctx context.Context, user string) ([]uint64, error) {
	var out []uint64
	err := c.call(ctx, "user_conversations", userReq{User: user}, &out)
	return out, err
}

func (c *Client) LastSeq(ctx context.Context, conv uint64) (uint64, error) {
	var out uint64
	err := c.call(ctx, "last_seq", convReq{ID: conv}, &out)
	return out, err
}

func (c *Client) Commit(ctx context.Context, b *store.Batch) error {
	for i := range b.Pointers {
		b.Pointers[i].Advanced = false
	}
	var out commitResp
	if err := c.call(ctx, "commit", b, &out); err != nil {
		return err
	}
	if len(out.Advanced) != len(b.Pointers) {
		return fmt.Errorf("remote store: commit: %d pointer results for %d updates", len(out.Advanced), len(b.Pointers))
	}
	for i := range b.Pointers {
		b.Pointers[i].Advanced = out.Advanced[i]
	}
	return nil
}

func (c *Client) LookupClientMsg(ctx context.Context, conv uint64, sender, clientMsgID string) (store.Message, bool, error) {
	var out lookupResp
	err := c.call(ctx, "lookup_client_msg", lookupReq{Conv: conv, Sender: sender, ClientMsgID: clientMsgID}, &out)
	return out.Message, out.Found, err
}

func (c *Client) LookupClientMsgs(ctx context.Context, keys []store.ClientMsgKey) ([]store.ClientMsgResult, error) {
	req := lookupsReq{Keys: make([]lookupReq, len(keys))}
	for i, k := range keys {
		req.Keys[i] = lookupReq{Conv: k.ConvID, Sender: k.Sender, ClientMsgID: k.ClientMsgID}
	}
	var out lookupsResp
	if err := c.call(ctx, "lookup_client_msgs", req, &out); err != nil {
		return nil, err
	}
	if len(out.Results) != len(keys) {
		return nil, fmt.Errorf("remote store: lookup client msgs: %d results for %d keys", len(out.Results), len(keys))
	}
	res := make([]store.ClientMsgResult, len(keys))
	for i, x := range out.Results {
		if x.Found != (x.Message != nil) {
			return nil, fmt.Errorf("remote store: lookup client msgs: result %d: found %v with message %v", i, x.Found, x.Message != nil)
		}
		if x.Found {
			res[i] = store.ClientMsgResult{Message: *x.Message, Found: true}
		}
	}
	return res, nil
}

func (c *Client) MessagesAfter(ctx context.Context, conv, after uint64, limit int) ([]store.Message, error) {
	var out pageResp
	err := c.call(ctx, "messages_after", pageReq{Conv: conv, Seq: after, Limit: limit}, &out)
	return out.Messages, err
}

func (c *Client) MessagesBefore(ctx context.Context, conv, before uint64, limit int) ([]store.Message, bool, error) {
	var out pageResp
	err := c.call(ctx, "messages_before", pageReq{Conv: conv, Seq: before, Limit: limit}, &out)
	return out.Messages, out.More, err
}

func (c *Client) Pointers(ctx context.Context, conv uint64, user string) (store.Pointers, error) {
	var out store.Pointers
	err := c.call(ctx, "pointers", pointersReq{Conv: conv, User: user}, &out)
	return out, err
}

func (c *Client) UserSettings(ctx context.Context, user string) (store.Settings, error) {
	var out store.Settings
	err := c.call(ctx, "user_settings", settingsReq{User: user}, &out)
	return out, err
}

func (c *Client) SetUserSettings(ctx context.Context, user string, st store.Settings) error {
	var out struct{}
	return c.call(ctx, "set_user_settings", settingsReq{User: user, Settings: st}, &out)
}

// Close waits for calls in progress, then makes every later call return
// store.ErrClosed. It does not close the server's store. Idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		c.tr.CloseIdleConnections()
	}
	return nil
}

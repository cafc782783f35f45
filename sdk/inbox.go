package sdk

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/wire"
)

// InboxEntry is one conversation of the user's inbox.
type InboxEntry struct {
	Conv  uint64
	Group bool
	// Name is a group's name; Peer a direct conversation's other member.
	Name        string
	Peer        string
	MemberCount int
	// LastSeq is the conversation's latest seq, ReadSeq the user's read
	// pointer (moved by any of the user's devices), Unread the difference:
	// the user's own messages never count.
	LastSeq, ReadSeq, Unread uint64
	LastActivity             time.Time
	// Last is the latest message; nil when the conversation has none.
	Last *Message
}

// InboxPage is one page of the inbox.
type InboxPage struct {
	Entries []InboxEntry // most recent activity first
	// Next is the cursor of the following page; "" when this is the last.
	Next string
}

// Inbox returns a page of the user's conversations, most recent activity
// first, each with its last message and unread count: up to limit entries
// (1..200; 0 means 50) after cursor ("" for the first page, else a previous
// page's Next). It is an HTTP call to Config.APIURL, independent of the
// WebSocket connection, so it works while offline from the gateway.
//
// The page is a snapshot. To keep a list up to date, apply the events: a
// Message raises LastSeq (and Unread, unless it is the user's own), and a
// read Receipt of the user's own (from another device) lowers Unread to
// LastSeq - UpToSeq.
func (c *Client) Inbox(ctx context.Context, cursor string, limit int) (InboxPage, error) {
	if c.cfg.APIURL == "" {
		return InboxPage{}, errors.New("sdk: Inbox: Config.APIURL is not set")
	}
	if limit < 0 || limit > 200 {
		return InboxPage{}, errors.New("sdk: Inbox: limit must be 0..200")
	}
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	u := strings.TrimRight(c.cfg.APIURL, "/") + "/api/v1/inbox?" + q.Encode()
	c.mu.Lock()
	tok := c.apiToken
	c.mu.Unlock()
	var body []byte
	for attempt := 0; ; attempt++ {
		if tok == "" {
			t, err := c.cfg.Token(ctx)
			if err != nil {
				return InboxPage{}, fmt.Errorf("sdk: Inbox: getting a token: %w", err)
			}
			tok = t
		}
		status, b, err := apiGet(ctx, u, tok)
		if err != nil {
			return InboxPage{}, err
		}
		if status == http.StatusUnauthorized && attempt == 0 {
			tok = "" // expired or revoked: ask Config.Token once more
			continue
		}
		if status != http.StatusOK {
			return InboxPage{}, apiError(status, b)
		}
		body = b
		break
	}
	c.mu.Lock()
	c.apiToken = tok
	c.mu.Unlock()
	return decodeInbox(body)
}

func apiGet(ctx context.Context, u, token string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("sdk: GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	// An inbox page of 200 entries with 64 KiB bodies is the worst case.
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("sdk: GET %s: %w", u, err)
	}
	return resp.StatusCode, b, nil
}

// apiError maps an API error response to a *ServerError.
func apiError(status int, body []byte) error {
	var e struct {
		Error struct {
			Code    uint64 `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Code == 0 {
		return fmt.Errorf("sdk: HTTP %d: %s", status, bytes.TrimSpace(body))
	}
	return &ServerError{Code: wire.Code(e.Error.Code), Message: e.Error.Message}
}

type inboxJSON struct {
	Conversations []struct {
		ConvID         string       `json:"conversation_id"`
		Kind           string       `json:"kind"`
		Name           string       `json:"name"`
		Peer           string       `json:"peer"`
		MemberCount    int          `json:"member_count"`
		LastSeq        uint64       `json:"last_seq"`
		ReadSeq        uint64       `json:"read_seq"`
		Unread         uint64       `json:"unread"`
		LastActivityMS int64        `json:"last_activity_ms"`
		LastMessage    *messageJSON `json:"last_message"`
	} `json:"conversations"`
	NextCursor string `json:"next_cursor"`
}

type messageJSON struct {
	ConvID       string  `json:"conversation_id"`
	MessageID    string  `json:"message_id"`
	Seq          uint64  `json:"seq"`
	ServerTimeMS int64   `json:"server_time_ms"`
	Sender       string  `json:"sender"`
	SenderDevice string  `json:"sender_device"`
	ClientMsgID  string  `json:"client_msg_id"`
	Kind         uint64  `json:"kind"`
	Body         *string `json:"body"`
	BodyBase64   *string `json:"body_base64"`
}

func decodeInbox(b []byte) (InboxPage, error) {
	var in inboxJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return InboxPage{}, fmt.Errorf("sdk: Inbox: bad response: %w", err)
	}
	out := InboxPage{Entries: make([]InboxEntry, 0, len(in.Conversations)), Next: in.NextCursor}
	for _, j := range in.Conversations {
		conv, err := strconv.ParseUint(j.ConvID, 10, 64)
		if err != nil {
			return InboxPage{}, fmt.Errorf("sdk: Inbox: bad conversation id %q", j.ConvID)
		}
		e := InboxEntry{
			Conv: conv, Group: j.Kind == "group", Name: j.Name, Peer: j.Peer, MemberCount: j.MemberCount,
			LastSeq: j.LastSeq, ReadSeq: j.ReadSeq, Unread: j.Unread, LastActivity: time.UnixMilli(j.LastActivityMS),
		}
		if m := j.LastMessage; m != nil {
			id, err := strconv.ParseUint(m.MessageID, 10, 64)
			if err != nil {
				return InboxPage{}, fmt.Errorf("sdk: Inbox: bad message id %q", m.MessageID)
			}
			msg := Message{
				Conv: conv, ID: id, Seq: m.Seq, Sender: m.Sender, SenderDevice: m.SenderDevice,
				ClientMsgID: m.ClientMsgID, Kind: wire.MsgKind(m.Kind), ServerTime: time.UnixMilli(m.ServerTimeMS), Replay: true,
			}
			switch {
			case m.Body != nil:
				msg.Body = []byte(*m.Body)
			case m.BodyBase64 != nil:
				if msg.Body, err = base64.StdEncoding.DecodeString(*m.BodyBase64); err != nil {
					return InboxPage{}, fmt.Errorf("sdk: Inbox: bad body: %w", err)
				}
			}
			e.Last = &msg
		}
		out.Entries = append(out.Entries, e)
	}
	return out, nil
}

package sdk

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/chatd-dev/chatd/wire"
)

// Config configures a Client. URL, Token and DeviceID are required; every
// other field has a default.
type Config struct {
	// URL of the WebSocket endpoint, e.g. "wss://chat.example.com/chat/v1/ws".
	URL string

	// Token returns the token to put in HELLO. The Client calls it before
	// its first connection and again after the server rejected the token
	// (token_invalid, token_expired); otherwise the token is reused across
	// reconnects. It is called from the connection goroutine; ctx ends with
	// the handshake timeout or Close.
	Token func(ctx context.Context) (string, error)

	// APIURL is the base URL of the server's HTTP API, e.g.
	// "https://chat.example.com". Only Inbox needs it; without it Inbox
	// returns an error. Requests carry the token Token returned.
	APIURL string

	// DeviceID identifies this installation (1..64 bytes). Keep it stable:
	// the server uses it to tell a user's devices apart, and it tells this
	// Client which replayed messages are its own.
	DeviceID string

	// Compression offers zstd frame compression (CapZstd) to the server.
	Compression bool

	// Cursors persists the per-conversation cursors (see the package
	// documentation) so that a restarted app resumes where it stopped.
	// nil keeps them in memory only: a new Client then starts from the
	// beginning of every conversation.
	Cursors CursorStore

	// BackoffMin and BackoffMax bound the reconnect delay: the n-th
	// consecutive failed attempt (from 0) waits a random duration in
	// [0, min(BackoffMax, BackoffMin*2^n)] ("full jitter"). The count
	// restarts after each successful handshake. Defaults 250ms and 30s.
	// Retries of sends refused with a retryable error use the same policy.
	BackoffMin, BackoffMax time.Duration

	// ReceiptInterval is the minimum time between two RECEIPT frames for
	// the same conversation and kind. Default 1s.
	ReceiptInterval time.Duration

	// AckTimeout: a SEND not acknowledged within this time is written again
	// on the same connection (with the same client_msg_id). Default 10s.
	AckTimeout time.Duration

	// DisableAutoDelivered turns off the automatic "delivered" receipt for
	// every message handed to the app. By default it is on.
	DisableAutoDelivered bool

	// HandshakeTimeout bounds one connection attempt: Token, dial,
	// WebSocket upgrade and HELLO/WELCOME. Default 10s.
	HandshakeTimeout time.Duration

	// EventBuffer is the capacity of the Events channel. Default 256. The
	// Client never blocks on the app: events beyond it queue in memory
	// (see Events).
	EventBuffer int

	// Logger receives diagnostics. nil discards them.
	Logger *slog.Logger

	// Dial, if set, opens the transport connection to addr ("host:port");
	// the Client then performs TLS (for wss://) and the WebSocket handshake
	// over it. Use it for proxies, custom resolvers or tests. nil uses a
	// plain net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

const (
	defaultBackoffMin       = 250 * time.Millisecond
	defaultBackoffMax       = 30 * time.Second
	defaultReceiptInterval  = time.Second
	defaultAckTimeout       = 10 * time.Second
	defaultHandshakeTimeout = 10 * time.Second
	defaultEventBuffer      = 256
	defaultHeartbeat        = 30 * time.Second
)

// withDefaults validates c and fills in defaults.
func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		return c, errors.New("sdk: Config.URL is required")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return c, errors.New("sdk: Config.URL: " + err.Error())
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return c, errors.New("sdk: Config.URL must be a ws:// or wss:// URL")
	}
	if c.Token == nil {
		return c, errors.New("sdk: Config.Token is required")
	}
	if c.APIURL != "" {
		if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			return c, errors.New("sdk: Config.APIURL must be an http:// or https:// URL")
		}
	}
	if len(c.DeviceID) == 0 || len(c.DeviceID) > wire.MaxIDLen {
		return c, errors.New("sdk: Config.DeviceID must be 1..64 bytes")
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = defaultBackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = defaultBackoffMax
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.ReceiptInterval <= 0 {
		c.ReceiptInterval = defaultReceiptInterval
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = defaultAckTimeout
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = defaultHandshakeTimeout
	}
	if c.EventBuffer <= 0 {
		c.EventBuffer = defaultEventBuffer
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/sdk/internal/wsconn"
	"github.com/chatd-dev/chatd/wire"
	"github.com/gobwas/ws"
)

// session is one WebSocket connection past the handshake. Its reader
// goroutine decodes frames and hands them to the Client under c.mu; its
// writer goroutine owns all writes, fed by an unbounded queue so that
// enqueueing never blocks the Client's lock.
type session struct {
	c    *Client
	conn net.Conn
	rd   *wsconn.Reader
	dec  wire.Decoder // used by the reader goroutine only

	userID     string
	zstd       bool
	heartbeat  time.Duration
	serverTime time.Time

	qmu  sync.Mutex
	q    [][]byte // encoded WebSocket frames
	wake chan struct{}

	done chan struct{}
	once sync.Once
	err  error // why the session ended; set before done is closed
	wg   sync.WaitGroup
}

// connect dials, says HELLO and waits for WELCOME.
func (c *Client) connect(ctx context.Context, token *string) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	if *token == "" {
		t, err := c.cfg.Token(ctx)
		if err != nil {
			return nil, fmt.Errorf("sdk: getting a token: %w", err)
		}
		*token = t
		c.mu.Lock()
		c.apiToken = t
		c.mu.Unlock()
	}
	d := ws.Dialer{NetDial: c.cfg.Dial}
	conn, br, _, err := d.Dial(ctx, c.cfg.URL)
	if err != nil {
		return nil, err
	}
	s := &session{c: c, conn: conn, wake: make(chan struct{}, 1), done: make(chan struct{})}
	var src io.Reader = conn
	if br != nil {
		src = br // bytes the server sent right after the upgrade
	}
	s.rd = wsconn.NewReader(src, ws.StateClientSide, wire.MaxFrameSize, s.sendRaw)

	// Bound the handshake by ctx: deadline and cancellation.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	w, err := s.handshake(*token)
	if !stop() || err != nil {
		conn.Close()
		if err == nil || ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return nil, err
	}
	conn.SetDeadline(time.Time{})

	s.userID = string(w.UserID)
	s.zstd = c.cfg.Compression && w.Caps&wire.CapZstd != 0
	s.serverTime = millisTime(w.ServerTimeMS)
	s.heartbeat = time.Duration(w.HeartbeatMS) * time.Millisecond
	if s.heartbeat <= 0 {
		s.heartbeat = defaultHeartbeat
	}
	if idle := time.Duration(w.IdleTimeoutMS) * time.Millisecond; idle > 0 && s.heartbeat >= idle {
		s.heartbeat = idle / 2
	}
	return s, nil
}

func (s *session) handshake(token string) (*wire.Welcome, error) {
	h := wire.Hello{
		MinVersion: wire.Version, MaxVersion: wire.Version,
		Token: []byte(token), DeviceID: []byte(s.c.cfg.DeviceID),
	}
	if s.c.cfg.Compression {
		h.Caps |= wire.CapZstd
	}
	if _, err := s.conn.Write(wsconn.Encode(ws.OpBinary, h.Append(nil, 0), true)); err != nil {
		return nil, err
	}
	for {
		data, err := s.rd.Next()
		if err != nil {
			return nil, err
		}
		t, _, err := s.dec.Decode(data)
		if err != nil {
			return nil, fmt.Errorf("sdk: handshake: %w", err)
		}
		switch t {
		case wire.TypeWelcome:
			w := &s.dec.Welcome
			if w.Version != wire.Version {
				return nil, fmt.Errorf("sdk: server chose protocol version %d, want %d", w.Version, wire.Version)
			}
			return w, nil
		case wire.TypeError:
			e := &s.dec.Error
			return nil, &ServerError{Code: e.Code, RefType: e.RefType, Message: string(e.Message)}
		case wire.TypeGoaway:
			g := &s.dec.Goaway
			return nil, &GoawayError{
				Code: g.Code, ReconnectAfter: time.Duration(g.ReconnectAfterMS) * time.Millisecond,
				Message: string(g.Message),
			}
		case wire.TypePong:
			// harmless
		default:
			return nil, fmt.Errorf("sdk: handshake: unexpected %s before WELCOME", t)
		}
	}
}

// start launches the reader, writer and heartbeat goroutines.
func (s *session) start() {
	s.wg.Add(3)
	go s.readLoop()
	go s.writeLoop()
	go s.heartbeatLoop()
}

// fail ends the session with err (the first reason wins).
func (s *session) fail(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
		s.conn.Close()
	})
}

// send queues a protocol frame, compressing it when negotiated.
func (s *session) send(frame []byte) {
	if s.zstd {
		frame = wire.Compress(nil, frame)
	}
	s.sendRaw(wsconn.Encode(ws.OpBinary, frame, true))
}

// sendRaw queues an encoded WebSocket frame.
func (s *session) sendRaw(b []byte) {
	s.qmu.Lock()
	s.q = append(s.q, b)
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *session) writeLoop() {
	defer s.wg.Done()
	timeout := max(2*s.heartbeat, 10*time.Second)
	for {
		select {
		case <-s.done:
			return
		case <-s.wake:
		}
		s.qmu.Lock()
		q := s.q
		s.q = nil
		s.qmu.Unlock()
		for _, b := range q {
			s.conn.SetWriteDeadline(time.Now().Add(timeout))
			if _, err := s.conn.Write(b); err != nil {
				s.fail(err)
				return
			}
		}
	}
}

func (s *session) readLoop() {
	defer s.wg.Done()
	c := s.c
	for {
		s.conn.SetReadDeadline(time.Now().Add(2 * s.heartbeat))
		data, err := s.rd.Next()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = ErrHeartbeatTimeout
			}
			s.fail(err)
			return
		}
		t, f, err := s.dec.Decode(data)
		if err != nil {
			// Unknown types and frames we cannot parse are skipped: newer
			// servers may send what this version does not know.
			c.log.Debug("chatd: skipping frame", "type", t, "err", err)
			continue
		}
		c.mu.Lock()
		if c.sess == s {
			c.handleLocked(s, t, f)
		}
		c.mu.Unlock()
	}
}

func (s *session) heartbeatLoop() {
	defer s.wg.Done()
	c := s.c
	tick := time.NewTicker(s.heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
			c.mu.Lock()
			if c.sess == s {
				c.pingSeq++
				p := wire.Ping{Nonce: c.pingSeq}
				s.send(p.Append(nil, 0))
			}
			c.mu.Unlock()
		}
	}
}

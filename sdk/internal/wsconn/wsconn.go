// Package wsconn holds the small amount of WebSocket plumbing shared by the
// SDK and its fake server: reading whole binary messages while answering
// control frames, and encoding frames so that one goroutine can own all
// writes to a connection.
package wsconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// ErrNotBinary is returned by Reader.Next for a text message: chatd only
// speaks binary messages.
var ErrNotBinary = errors.New("wsconn: text message on a binary-only connection")

// ClosedError reports a close frame from the peer.
type ClosedError struct {
	Code   ws.StatusCode
	Reason string
}

func (e *ClosedError) Error() string {
	return fmt.Sprintf("websocket closed by peer: %d %s", e.Code, e.Reason)
}

// Reader reads whole data messages from one side of a connection.
type Reader struct {
	rd     *wsutil.Reader
	masked bool               // whether frames we produce are masked (client side)
	reply  func(frame []byte) // writes an encoded control reply
}

// NewReader returns a Reader of src for the given side (ws.StateClientSide
// or ws.StateServerSide). Messages larger than maxMessage bytes fail the
// read. reply is called, from the reading goroutine, with encoded control
// frames (PONG answers, the echo of a close frame) that must be written to
// the peer; it must not block for long.
func NewReader(src io.Reader, side ws.State, maxMessage int64, reply func(frame []byte)) *Reader {
	r := &Reader{masked: side.ClientSide(), reply: reply}
	r.rd = &wsutil.Reader{
		Source:         src,
		State:          side,
		MaxFrameSize:   maxMessage,
		MaxMessageSize: maxMessage,
	}
	r.rd.OnIntermediate = r.control
	return r
}

// Next returns the payload of the next binary message, answering control
// frames in between. The payload is freshly allocated.
func (r *Reader) Next() ([]byte, error) {
	for {
		hdr, err := r.rd.NextFrame()
		if err != nil {
			return nil, err
		}
		if hdr.OpCode.IsControl() {
			if err := r.control(hdr, r.rd); err != nil {
				return nil, err
			}
			continue
		}
		// Grow as bytes arrive: never trust the declared length for
		// allocation beyond a small hint.
		var buf bytes.Buffer
		buf.Grow(int(min(hdr.Length, 4096)))
		if _, err := buf.ReadFrom(r.rd); err != nil {
			return nil, err
		}
		if hdr.OpCode == ws.OpText {
			return nil, ErrNotBinary
		}
		return buf.Bytes(), nil
	}
}

func (r *Reader) control(hdr ws.Header, body io.Reader) error {
	p, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	switch hdr.OpCode {
	case ws.OpPing:
		r.reply(Encode(ws.OpPong, p, r.masked))
	case ws.OpClose:
		code, reason := ws.StatusNoStatusRcvd, ""
		if len(p) >= 2 {
			code = ws.StatusCode(binary.BigEndian.Uint16(p))
			reason = string(p[2:])
		}
		echo := []byte(nil)
		if len(p) >= 2 {
			echo = p[:2]
		}
		r.reply(Encode(ws.OpClose, echo, r.masked))
		return &ClosedError{Code: code, Reason: reason}
	}
	return nil
}

// Encode returns one complete, unfragmented WebSocket frame carrying
// payload. A client must mask its frames (masked=true); payload itself is
// never modified.
func Encode(op ws.OpCode, payload []byte, masked bool) []byte {
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(payload))}
	if masked {
		h.Masked = true
		h.Mask = ws.NewMask()
	}
	var buf bytes.Buffer
	buf.Grow(ws.HeaderSize(h) + len(payload))
	_ = ws.WriteHeader(&buf, h) // writes to a bytes.Buffer do not fail
	start := buf.Len()
	buf.Write(payload)
	out := buf.Bytes()
	if masked {
		ws.Cipher(out[start:], h.Mask, 0)
	}
	return out
}

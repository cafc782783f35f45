// Package bench is chatd's capacity harness: it drives real WebSocket
// clients speaking the binary protocol against a chatd process and measures
// what users would see. cmd/chatbench is its command line.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/chatd-dev/chatd/wire"
)

// Conn is a minimal protocol client for load generation: no retries, no
// ordering logic; the scenario owns what it measures.
type Conn struct {
	nc   net.Conn
	rw   io.ReadWriter
	wmu  sync.Mutex // guards writes (ours and wsutil's control replies)
	wbuf []byte     // scratch for Write, under wmu
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Dial connects, sends HELLO and waits for WELCOME.
func Dial(ctx context.Context, url, token, device string) (*Conn, error) {
	nc, br, _, err := ws.Dial(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c := &Conn{nc: nc}
	var r io.Reader = nc
	if br != nil {
		r = io.MultiReader(br, nc)
	}
	c.rw = struct {
		io.Reader
		io.Writer
	}{bufio.NewReaderSize(r, 4096), lockedWriter{&c.wmu, nc}}
	h := wire.Hello{MinVersion: wire.Version, MaxVersion: wire.Version, Token: []byte(token), DeviceID: []byte(device)}
	if err := c.Write(h.Append(nil, 0)); err != nil {
		nc.Close()
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetReadDeadline(dl)
	}
	f, err := c.Read()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	_ = nc.SetReadDeadline(time.Time{})
	t, _, _, err := wire.ParseHeader(f)
	if err != nil || t != wire.TypeWelcome {
		nc.Close()
		var d wire.Decoder
		if _, _, err := d.Decode(f); err == nil && t == wire.TypeError {
			return nil, fmt.Errorf("hello refused: %s", d.Error.Code)
		}
		return nil, fmt.Errorf("hello: expected WELCOME, got %v", t)
	}
	return c, nil
}

// Write sends one frame in one write: header and masked payload together,
// as the SDK does. wsutil.WriteClientBinary writes the header and the
// payload separately (two system calls and, with TCP_NODELAY, two
// segments per frame) and copies the payload to mask it.
func (c *Conn) Write(frame []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := ws.Header{Fin: true, OpCode: ws.OpBinary, Length: int64(len(frame)), Masked: true, Mask: ws.NewMask()}
	b := bytes.NewBuffer(c.wbuf[:0])
	_ = ws.WriteHeader(b, h) // a bytes.Buffer does not fail
	start := b.Len()
	b.Write(frame)
	out := b.Bytes()
	ws.Cipher(out[start:], h.Mask, 0)
	c.wbuf = out[:0]
	_, err := c.nc.Write(out)
	return err
}

// Read returns the next frame. The slice is valid until the next Read.
func (c *Conn) Read() ([]byte, error) {
	for {
		b, op, err := wsutil.ReadServerData(c.rw)
		if err != nil {
			return nil, err
		}
		if op == ws.OpBinary {
			return b, nil
		}
	}
}

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

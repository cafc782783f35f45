package bus

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
)

// chunkConn returns data in the chunk sizes of sizes (cycled), then EOF.
type chunkConn struct {
	net.Conn
	data  []byte
	sizes []byte
	i     int
}

func (c *chunkConn) Read(b []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := 1
	if len(c.sizes) > 0 {
		k = int(c.sizes[c.i%len(c.sizes)]) + 1
		c.i++
	}
	k = min(k, len(b), len(c.data))
	n := copy(b, c.data[:k])
	c.data = c.data[n:]
	return n, nil
}

func (c *chunkConn) Close() error         { return nil }
func (c *chunkConn) RemoteAddr() net.Addr { return &net.TCPAddr{} }

// badPrefixEnd returns the index just past the first size prefix over the
// limit in a stream of length-prefixed requests, or -1.
func badPrefixEnd(data []byte) int {
	for i := 0; i+4 <= len(data); {
		size := binary.BigEndian.Uint32(data[i:])
		if size > maxRequestBytes {
			return i + 4
		}
		i += 4 + int(size)
	}
	return -1
}

// Whatever the stream and however it is chunked, guardConn passes a prefix
// of it: all of it when every size is within the limit, and otherwise
// everything before the first oversized size prefix is complete, never that
// prefix whole.
func FuzzGuardConn(f *testing.F) {
	frame := func(body string) []byte {
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
	}
	f.Add(append(frame("hello"), frame("world")...), []byte{0, 3, 1})
	f.Add([]byte("GET /healthz HTTP/1.1\r\n\r\n"), []byte{2})
	f.Add(append(frame("ok"), []byte("GET / HTTP/1.1\r\n")...), []byte{5, 0})
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		g := &guardConn{Conn: &chunkConn{data: data, sizes: sizes}, log: slog.New(slog.DiscardHandler)}
		var out bytes.Buffer
		buf := make([]byte, 7)
		var rerr error
		for {
			n, err := g.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				rerr = err
				break
			}
		}
		if !bytes.HasPrefix(data, out.Bytes()) {
			t.Fatalf("output is not a prefix of the input")
		}
		end := badPrefixEnd(data)
		switch {
		case end < 0 && (!errors.Is(rerr, io.EOF) || out.Len() != len(data)):
			t.Fatalf("valid stream: passed %d of %d bytes, %v", out.Len(), len(data), rerr)
		case end >= 0 && out.Len() >= end:
			t.Fatalf("oversized request: passed %d bytes, its size prefix ends at %d", out.Len(), end)
		case end >= 0 && out.Len() < end-4:
			t.Fatalf("oversized request: passed only %d bytes, %d came before its size prefix", out.Len(), end-4)
		}
	})
}

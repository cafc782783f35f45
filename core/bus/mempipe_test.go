package bus

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// memPipe passes the net.Conn conformance suite: basic I/O, ping-pong,
// racy reads and writes, close semantics, and read/write deadlines moved
// while blocked, for past and future times.
func TestMemPipeConformance(t *testing.T) {
	nettest.TestConn(t, func() (net.Conn, net.Conn, func(), error) {
		a, b := memPipe(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9092})
		return a, b, func() { _ = a.Close(); _ = b.Close() }, nil
	})
}

// A write larger than the buffer completes as the reader drains it, and a
// writer facing a full buffer and a deadline times out without losing
// what it already wrote.
func TestMemPipeBackpressure(t *testing.T) {
	a, b := memPipe(&net.TCPAddr{})
	defer a.Close()
	defer b.Close()
	big := bytes.Repeat([]byte("0123456789abcdef"), 3*memPipeBuffer/16)
	got := make(chan []byte, 1)
	go func() {
		buf, _ := io.ReadAll(io.LimitReader(b, int64(len(big))))
		got <- buf
	}()
	if n, err := a.Write(big); err != nil || n != len(big) {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if !bytes.Equal(<-got, big) {
		t.Fatal("the reader got different bytes")
	}

	_ = a.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := a.Write(big) // nobody reads
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != memPipeBuffer {
		t.Fatalf("Write into a full buffer: %d, %v; want %d, deadline exceeded", n, err, memPipeBuffer)
	}
	head := make([]byte, 16)
	if _, err := io.ReadFull(b, head); err != nil || !bytes.Equal(head, big[:16]) {
		t.Fatalf("after the timeout the reader got %q, %v", head, err)
	}
}

// Closing one end: the peer reads what was written before, then EOF, and
// its writes fail.
func TestMemPipeCloseDrainsThenEOF(t *testing.T) {
	a, b := memPipe(&net.TCPAddr{})
	defer b.Close()
	if _, err := a.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	buf, err := io.ReadAll(b)
	if err != nil || string(buf) != "last words" {
		t.Fatalf("peer read %q, %v", buf, err)
	}
	if _, err := b.Write([]byte("x")); err == nil {
		t.Fatal("write to a closed peer succeeded")
	}
}

// Concurrent Writes of one end never interleave, even when each is larger
// than the buffer and goes out in pieces: every frame arrives whole.
func TestMemPipeWritesAreAtomic(t *testing.T) {
	a, b := memPipe(&net.TCPAddr{})
	defer a.Close()
	defer b.Close()
	const writers, frames = 4, 8
	size := memPipeBuffer + memPipeBuffer/3
	done := make(chan error, writers)
	for w := range writers {
		go func() {
			frame := bytes.Repeat([]byte{byte('a' + w)}, size)
			for range frames {
				if _, err := a.Write(frame); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	buf := make([]byte, size)
	for i := range writers * frames {
		if _, err := io.ReadFull(b, buf); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if n := bytes.Count(buf, buf[:1]); n != size {
			t.Fatalf("frame %d is torn: %d of %d bytes are %q", i, n, size, buf[0])
		}
	}
	for range writers {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

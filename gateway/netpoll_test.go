package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/cloudwego/netpoll"
)

// TestNetpollBlockingRead covers the read side of the netpoll patch
// (third_party/netpoll: trigger channels made on the first wait), which the
// gateway itself never uses: an OnRequest that blocks in Reader.Next for
// bytes not yet sent is woken when they arrive, a read deadline still
// fires, and a peer's close wakes a waiting reader with an error.
func TestNetpollBlockingRead(t *testing.T) {
	if err := ConfigureNetpoll(DefaultNetpollBuffers); err != nil && !errors.Is(err, errNetpollConfigured) {
		t.Fatal(err)
	}
	results := make(chan error, 8)
	onRequest := func(_ context.Context, c netpoll.Connection) error {
		r := c.Reader()
		p, err := r.Next(10) // the client sends these 10 bytes in two writes
		if err != nil {
			results <- err
			return err
		}
		out := append([]byte(nil), p...)
		_ = r.Release()
		if _, err := c.Writer().WriteBinary(out); err != nil {
			results <- err
			return err
		}
		err = c.Writer().Flush()
		results <- err
		return err
	}
	ln, err := listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	evl, err := netpoll.NewEventLoop(onRequest, netpoll.WithReadTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = evl.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = evl.Shutdown(ctx)
	})
	addr := ln.Addr().String()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	waitResult := func() error {
		select {
		case err := <-results:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("OnRequest never finished: a waiting reader was not woken")
			return nil
		}
	}

	// Woken by the second half.
	c := dial()
	_, _ = c.Write([]byte("hello"))
	time.Sleep(50 * time.Millisecond) // OnRequest is waiting in Next(10) by now
	_, _ = c.Write([]byte("world"))
	if err := waitResult(); err != nil {
		t.Fatalf("blocking read: %v", err)
	}
	got := make([]byte, 10)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "helloworld" {
		t.Fatalf("echo %q, %v", got, err)
	}

	// Half a request and silence: the read timeout ends the wait.
	c = dial()
	_, _ = c.Write([]byte("half"))
	if err := waitResult(); err == nil {
		t.Fatal("a read with too few bytes and a deadline returned no error")
	}

	// Half a request and a close: the wait ends with an error.
	c = dial()
	_, _ = c.Write([]byte("half"))
	time.Sleep(50 * time.Millisecond)
	c.Close()
	if err := waitResult(); err == nil {
		t.Fatal("a read waiting on a closed connection returned no error")
	}
}

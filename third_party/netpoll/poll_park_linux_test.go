//go:build linux

package netpoll

import (
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// chatd patch tests: Wait parks in the runtime's poller, and falls back to
// upstream's blocking wait when it cannot (third_party/README.md, change 3).
// Each mode must deliver every event and end on Close.
func TestWaitModes(t *testing.T) {
	var released atomic.Bool // the failing mode's fd was given up
	modes := []struct {
		name     string
		parkable func(*defaultPoll) (syscall.RawConn, func())
		fellBack bool
	}{
		{"parked in the runtime poller", (*defaultPoll).parkable, false},
		{"no parkable fd: blocking wait from the start", func(*defaultPoll) (syscall.RawConn, func()) {
			return nil, func() {}
		}, false},
		{"parking fails: blocking wait from then on", func(*defaultPoll) (syscall.RawConn, func()) {
			// /dev/null cannot join an epoll set, so the runtime does not
			// poll it and RawConn.Read fails once check returns false.
			f, err := os.Open(os.DevNull)
			if err != nil {
				panic(err)
			}
			rc, err := f.SyscallConn()
			if err != nil {
				panic(err)
			}
			return rc, func() { released.Store(true); _ = f.Close() }
		}, true},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			parkableFn = m.parkable
			defer func() { parkableFn = (*defaultPoll).parkable }()
			released.Store(false)
			testWaitDelivers(t, func() {
				// Before Close: only the fallback releases the fd early.
				if released.Load() != m.fellBack {
					t.Errorf("fell back: %v, want %v", released.Load(), m.fellBack)
				}
			})
		})
	}
}

func testWaitDelivers(t *testing.T, beforeClose func()) {
	p, err := openDefaultPoll()
	if err != nil {
		t.Fatal(err)
	}
	waitDone := make(chan error, 1)
	go func() { waitDone <- p.Wait() }()

	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[1])
	got := make(chan byte, 64)
	var reads atomic.Int64
	op := &FDOperator{FD: fds[0], OnRead: func(Poll) error {
		var b [64]byte
		for {
			n, err := syscall.Read(fds[0], b[:])
			if n <= 0 || err != nil {
				return nil
			}
			reads.Add(1)
			for _, c := range b[:n] {
				got <- c
			}
		}
	}}
	if err := p.Control(op, PollReadable); err != nil {
		t.Fatal(err)
	}
	// Events one at a time, each after the loop went back to waiting for
	// the previous one to be read, so every round waits in the mode
	// under test (and the failing mode falls back on the first).
	const rounds = 20
	for i := 0; i < rounds; i++ {
		if _, err := syscall.Write(fds[1], []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		select {
		case c := <-got:
			if c != byte(i) {
				t.Fatalf("round %d: read %d", i, c)
			}
		case <-time.After(30 * time.Second): // a bound for a hang, not a timing
			t.Fatalf("round %d: the event was never delivered", i)
		}
	}
	if err := p.Control(op, PollDetach); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fds[0])
	beforeClose()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waitDone:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
	if reads.Load() < rounds {
		t.Fatalf("%d reads for %d events", reads.Load(), rounds)
	}
}

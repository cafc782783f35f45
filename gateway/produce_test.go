package gateway

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/wire"
)

func decodeEnvelope(t *testing.T, v []byte) wire.Envelope {
	t.Helper()
	var env wire.Envelope
	if err := env.Decode(v); err != nil {
		t.Fatalf("envelope: %v", err)
	}
	return env
}

func TestSendProducesEnvelope(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := dial(t, e.url)
	c.hello("alice", "phone", wire.CapZstd)
	conn := e.connID(t, "alice", "phone")
	f := (&wire.Send{ConvID: 77, ClientMsgID: []byte("c-1"), Kind: wire.KindText, Body: []byte("hello")}).Append(nil, 0)
	c.sendRaw(f)
	rs := e.prod.waitRecords(t, 1)
	if want := wire.ConvKey(nil, 77); !bytes.Equal(rs[0].key, want) {
		t.Errorf("key %x, want %x", rs[0].key, want)
	}
	env := decodeEnvelope(t, rs[0].value)
	switch {
	case string(env.Gateway) != e.g.ID():
		t.Errorf("gateway %q", env.Gateway)
	case env.Conn != conn:
		t.Errorf("conn %d, want %d", env.Conn, conn)
	case string(env.User) != "alice" || string(env.Device) != "phone":
		t.Errorf("user %q device %q", env.User, env.Device)
	case env.Caps != wire.CapZstd:
		t.Errorf("caps %d", env.Caps)
	case env.ReceivedMS == 0:
		t.Errorf("received_ms 0")
	case !bytes.Equal(env.Frame, f):
		t.Errorf("frame %x, want %x", env.Frame, f)
	}
}

func TestRequestKeys(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	frames := []struct {
		f   wire.Frame
		key []byte
	}{
		{&wire.Receipt{ConvID: 5, Kind: wire.ReceiptDelivered, UpToSeq: 9}, wire.ConvKey(nil, 5)},
		{&wire.History{ReqID: 1, ConvID: 6, Limit: 50}, wire.ConvKey(nil, 6)},
		{&wire.Resume{ReqID: 2, Cursors: []wire.Cursor{{ConvID: 5, LastSeq: 3}}}, wire.UserKey(nil, []byte("alice"))},
		{&wire.OpenDirect{ReqID: 3, Peer: []byte("bob")}, wire.UserKey(nil, []byte("alice"))},
		{&wire.CreateGroup{ReqID: 4, Name: []byte("hikers"), Members: [][]byte{[]byte("bob")}}, wire.UserKey(nil, []byte("alice"))},
		{&wire.GroupChange{ReqID: 5, ConvID: 7, Op: wire.GroupLeave}, wire.ConvKey(nil, 7)},
	}
	for _, fr := range frames {
		c.send(fr.f)
	}
	c.ping(1) // all processed
	rs := e.prod.waitRecords(t, len(frames))
	for i, fr := range frames {
		if !bytes.Equal(rs[i].key, fr.key) {
			t.Errorf("%v: key %q, want %q", fr.f.Type(), rs[i].key, fr.key)
		}
		if env := decodeEnvelope(t, rs[i].value); !bytes.Equal(env.Frame, fr.f.Append(nil, 0)) {
			t.Errorf("%v: frame differs", fr.f.Type())
		}
	}
}

func TestProduceFailureIsUnavailable(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	e.prod.fail.Store(true)
	c.send(&wire.Send{ConvID: 12, ClientMsgID: []byte("retry-me"), Kind: wire.KindText, Body: []byte("x")})
	got := c.expectError(wire.CodeUnavailable)
	if got.RefType != wire.TypeSend || got.ConvID != 12 || string(got.ClientMsgID) != "retry-me" {
		t.Fatalf("refs %v conv %d cmid %q", got.RefType, got.ConvID, got.ClientMsgID)
	}
	if !got.Code.Retryable() {
		t.Fatal("unavailable must be retryable")
	}
	c.ping(1)
	eventually(t, "produce error metric", func() bool { return e.metric("chatd_gateway_produce_errors_total", "", "") == 1 })
}

// Every record handed to the producer is timed until the producer is done
// with it, acknowledged or failed.
func TestProduceSecondsObserved(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	c.send(&wire.Send{ConvID: 12, ClientMsgID: []byte("ok"), Kind: wire.KindText, Body: []byte("x")})
	e.prod.waitRecords(t, 1)
	eventually(t, "the acknowledged record timed", func() bool { return e.metric("chatd_gateway_produce_seconds", "", "") == 1 })
	e.prod.fail.Store(true)
	c.send(&wire.Send{ConvID: 12, ClientMsgID: []byte("fails"), Kind: wire.KindText, Body: []byte("x")})
	c.expectError(wire.CodeUnavailable)
	eventually(t, "the failed record timed", func() bool { return e.metric("chatd_gateway_produce_seconds", "", "") == 2 })
	if n := e.metric("chatd_gateway_produced_total", "", ""); n != 2 {
		t.Fatalf("produced %v records, want 2", n)
	}
}

func TestCompressedSendProducedDecompressed(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := dial(t, e.url)
	c.hello("alice", "phone", wire.CapZstd)
	plain := (&wire.Send{ConvID: 9, ClientMsgID: []byte("z1"), Kind: wire.KindText, Body: bytes.Repeat([]byte("compress me "), 200)}).Append(nil, 0)
	z := wire.Compress(nil, plain)
	if wire.Flags(z[1])&wire.FlagCompressed == 0 || len(z) >= len(plain) {
		t.Fatal("test frame did not compress")
	}
	c.sendRaw(z)
	rs := e.prod.waitRecords(t, 1)
	if env := decodeEnvelope(t, rs[0].value); !bytes.Equal(env.Frame, plain) {
		t.Fatalf("produced %d bytes (flags %#x), want the %d-byte plain frame", len(env.Frame), env.Frame[1], len(plain))
	}
}

// A bad frame between good ones changes nothing about the good ones.
func TestBadFrameDoesNotDisturbOthers(t *testing.T) {
	t.Parallel()
	e := startGateway(t, nil)
	c := login(t, e, "alice", "phone")
	good1 := (&wire.Send{ConvID: 1, ClientMsgID: []byte("a"), Kind: wire.KindText, Body: []byte("first")}).Append(nil, 0)
	good2 := (&wire.Send{ConvID: 1, ClientMsgID: []byte("b"), Kind: wire.KindText, Body: []byte("second")}).Append(nil, 0)
	var burst []byte
	burst = append(burst, maskedFrame(t, 2, good1)...)
	burst = append(burst, maskedFrame(t, 2, []byte{byte(wire.TypeSend), 0, 0x80})...)
	burst = append(burst, maskedFrame(t, 2, good2)...)
	if _, err := c.conn.Write(burst); err != nil {
		t.Fatal(err)
	}
	c.expectError(wire.CodeMalformedFrame)
	rs := e.prod.waitRecords(t, 2)
	if f := decodeEnvelope(t, rs[0].value).Frame; !bytes.Equal(f, good1) {
		t.Error("first SEND corrupted")
	}
	if f := decodeEnvelope(t, rs[1].value).Frame; !bytes.Equal(f, good2) {
		t.Error("second SEND corrupted")
	}
}

// holdProducer keeps the slices it is given, uncopied, and completes
// nothing until release: the gateway must not touch a value before done.
type holdProducer struct {
	mu    sync.Mutex
	vals  [][]byte
	dones []func(error)
}

func (p *holdProducer) Produce(_ context.Context, _, value []byte, done func(error)) {
	p.mu.Lock()
	p.vals = append(p.vals, value)
	p.dones = append(p.dones, done)
	p.mu.Unlock()
}

func (p *holdProducer) n() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.vals) }

func TestProducedValueStableUntilDone(t *testing.T) {
	t.Parallel()
	hp := &holdProducer{}
	e := startGateway(t, func(_ *Config, d *Deps) { d.Producer = hp })
	c := login(t, e, "alice", "phone")
	const n = 40
	var frames [][]byte
	for round := 0; round < 2; round++ {
		for i := 0; i < n; i++ {
			f := (&wire.Send{ConvID: 3, ClientMsgID: []byte(fmt.Sprintf("r%d-%d", round, i)), Kind: wire.KindText,
				Body: bytes.Repeat([]byte{byte(i)}, 100+i*50)}).Append(nil, 0)
			frames = append(frames, f)
			c.sendRaw(f)
			if i%10 == 0 {
				time.Sleep(60 * time.Millisecond) // keep under the rate limit
			}
		}
		eventually(t, "produces", func() bool { return hp.n() == n })
		hp.mu.Lock()
		for i, v := range hp.vals {
			if env := decodeEnvelope(t, v); !bytes.Equal(env.Frame, frames[i]) {
				t.Fatalf("value %d changed before its done callback", i)
			}
		}
		if round == 0 {
			for _, d := range hp.dones {
				d(nil)
			}
			hp.vals, hp.dones, frames = nil, nil, nil
		}
		hp.mu.Unlock()
	}
}

package wire

import (
	"bytes"
	"encoding/hex"
	"testing"
)

func envelopeSamples() []Envelope {
	send := (&Send{ConvID: 42, ClientMsgID: []byte("c-0001"), Kind: KindText, Body: []byte("hi")}).Append(nil, 0)
	big := make([]byte, MaxFrameSize)
	big[0] = byte(TypeSend)
	return []Envelope{
		{Gateway: []byte("gw-1"), Conn: 981, User: []byte("alice"), Device: []byte("ios-7f3a"), Caps: CapZstd, ReceivedMS: 1767225600123, Frame: send},
		{Frame: []byte{byte(TypePing), 0}},
		{Gateway: rep('g', MaxGatewayIDLen), Conn: maxU, User: rep('u', MaxIDLen), Device: rep('d', MaxIDLen), Caps: maxU, ReceivedMS: maxU, Frame: big},
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	for i, e := range envelopeSamples() {
		b := e.Append([]byte("x"))[1:]
		var got Envelope
		if err := got.Decode(b); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !sameFields(&got, &e) {
			t.Fatalf("%d: got %v", i, fieldsOf(&got))
		}
		if &got.Frame[0] != &b[len(b)-len(e.Frame)] || cap(got.Frame) != len(got.Frame) {
			t.Fatalf("%d: Frame does not alias the record", i)
		}
		// Truncation anywhere before the frame's second byte fails.
		for n := range len(b) - len(e.Frame) + HeaderLen {
			if err := got.Decode(b[:n]); err == nil {
				t.Fatalf("%d: truncated to %d decoded", i, n)
			} else {
				wantCode(t, err, CodeMalformedFrame, "truncated envelope")
			}
		}
	}
}

func TestEnvelopeRejections(t *testing.T) {
	ok := Envelope{Gateway: []byte("gw"), User: []byte("u"), Device: []byte("d"), Frame: []byte{byte(TypePing), 0, 1}}
	tests := map[string]func(b []byte, e *Envelope) []byte{
		"envelope: version unknown":             func(b []byte, _ *Envelope) []byte { b[0] = 2; return b },
		"envelope: gateway too long":            func(_ []byte, e *Envelope) []byte { e.Gateway = rep('g', MaxGatewayIDLen+1); return e.Append(nil) },
		"envelope: user too long":               func(_ []byte, e *Envelope) []byte { e.User = rep('u', MaxIDLen+1); return e.Append(nil) },
		"envelope: device too long":             func(_ []byte, e *Envelope) []byte { e.Device = rep('d', MaxIDLen+1); return e.Append(nil) },
		"envelope: frame too large":             func(_ []byte, e *Envelope) []byte { e.Frame = make([]byte, MaxFrameSize+1); return e.Append(nil) },
		"envelope: frame shorter than a header": func(_ []byte, e *Envelope) []byte { e.Frame = e.Frame[:1]; return e.Append(nil) },
	}
	for reason, mutate := range tests {
		e := ok
		b := mutate(ok.Append(nil), &e)
		var got Envelope
		err := got.Decode(b)
		wantCode(t, err, CodeMalformedFrame, reason)
		if r := err.(*ProtoError).Reason; r != reason {
			t.Errorf("reason %q, want %q", r, reason)
		}
	}
}

func TestBatch(t *testing.T) {
	frame := msgFrame([]byte("hello"), 0)
	for _, conns := range [][]uint64{nil, {1}, {1, 2, 3, maxU, 0}} {
		b := AppendBatch(nil, conns, frame)
		scratch := make([]uint64, 7, 16)
		got, f, err := DecodeBatch(b, scratch)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(conns) || (len(conns) > 0 && &got[0] != &scratch[0]) {
			t.Fatalf("conns %v (scratch not reused?)", got)
		}
		for i := range conns {
			if got[i] != conns[i] {
				t.Fatalf("conns %v, want %v", got, conns)
			}
		}
		if !bytes.Equal(f, frame) || &f[0] != &b[len(b)-len(frame)] {
			t.Fatal("frame differs or does not alias")
		}
		for n := range len(b) - len(frame) + HeaderLen {
			if _, _, err := DecodeBatch(b[:n], nil); err == nil {
				t.Fatalf("batch truncated to %d decoded", n)
			}
		}
	}
	for name, b := range map[string][]byte{
		"count past end":    {200, 1, 2, byte(TypePing), 0},
		"count overflow":    {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, byte(TypePing), 0},
		"frame too large":   append([]byte{0}, make([]byte, MaxFrameSize+1)...),
		"frame too short":   {1, 5, byte(TypePing)},
		"conn id truncated": {1, 0x80},
	} {
		_, _, err := DecodeBatch(b, nil)
		wantCode(t, err, CodeMalformedFrame, name)
	}
}

func TestKafkaKeys(t *testing.T) {
	if got := hex.EncodeToString(ConvKey([]byte{0xAA}, 0x0102030405060708)); got != "aa0102030405060708" {
		t.Errorf("ConvKey = %s", got)
	}
	if got := hex.EncodeToString(ConvKey(nil, 42)); got != "000000000000002a" {
		t.Errorf("ConvKey(42) = %s", got)
	}
	if got := string(UserKey([]byte("k="), []byte("alice"))); got != "k=u:alice" {
		t.Errorf("UserKey = %q", got)
	}
}

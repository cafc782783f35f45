package wire

import (
	"testing"
)

// The hot paths are allocation-free once warm: the gateway decodes every
// client frame and encodes every delivery, so an allocation here is an
// allocation per message per connection.

func assertNoAllocs(t *testing.T, name string, f func()) {
	t.Helper()
	f() // warm up: grow reused slices and pools
	if n := testing.AllocsPerRun(200, f); n != 0 {
		t.Errorf("%s: %v allocs per run, want 0", name, n)
	}
}

func TestAllocsMsg(t *testing.T) {
	m := &Msg{ConvID: 42, MessageID: 7263518230475964417, Seq: 17, ServerTimeMS: 1767225600123,
		Sender: []byte("alice"), SenderDevice: []byte("ios-7f3a"), ClientMsgID: []byte("c-0001"),
		Kind: KindText, Body: textBody(300)}
	buf := make([]byte, 0, 1024)
	assertNoAllocs(t, "Msg.Append", func() { buf = m.Append(buf[:0], FlagReplay) })

	frame := m.Append(nil, 0)
	var got Msg
	assertNoAllocs(t, "Msg.Decode", func() {
		if err := got.Decode(frame[HeaderLen:]); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAllocsDecoder(t *testing.T) {
	cursors := make([]Cursor, 64)
	for i := range cursors {
		cursors[i] = Cursor{ConvID: uint64(1000 + i), LastSeq: uint64(i * 37)}
	}
	frames := map[string][]byte{
		"SEND":           (&Send{ConvID: 42, ClientMsgID: []byte("c-0001"), Kind: KindText, Body: []byte("hello")}).Append(nil, 0),
		"MSG":            msgFrame(textBody(200), FlagReplay),
		"RESUME":         (&Resume{ReqID: 9, Cursors: cursors}).Append(nil, 0),
		"RECEIPT":        (&Receipt{ConvID: 42, Kind: ReceiptRead, UpToSeq: 17}).Append(nil, 0),
		"PING":           (&Ping{Nonce: 12345}).Append(nil, 0),
		"CONV":           (&Conv{ReqID: 1, ConvID: 2, Kind: ConvGroup, Members: [][]byte{[]byte("a"), []byte("b")}}).Append(nil, 0),
		"compressed MSG": Compress(nil, msgFrame(textBody(4<<10), 0)),
	}
	if Flags(frames["compressed MSG"][1])&FlagCompressed == 0 {
		t.Fatal("test frame did not compress")
	}
	for name, frame := range frames {
		var d Decoder
		assertNoAllocs(t, "Decoder.Decode "+name, func() {
			if _, _, err := d.Decode(frame); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAllocsAppendAll(t *testing.T) {
	buf := make([]byte, 0, MaxFrameSize)
	for _, s := range samples() {
		assertNoAllocs(t, s.name+" Append", func() { buf = s.f.Append(buf[:0], s.flags) })
	}
}

func TestAllocsCompress(t *testing.T) {
	plain := msgFrame(textBody(4<<10), 0)
	buf := make([]byte, 0, 2*len(plain))
	assertNoAllocs(t, "Compress", func() { buf = Compress(buf[:0], plain) })
	c := Compress(nil, plain)
	out := make([]byte, 0, MaxFrameSize)
	assertNoAllocs(t, "Decompress", func() {
		var err error
		if out, err = Decompress(out[:0], c); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAllocsEnvelope(t *testing.T) {
	e := envelopeSamples()[0]
	buf := make([]byte, 0, 256)
	var got Envelope
	assertNoAllocs(t, "Envelope round trip", func() {
		buf = e.Append(buf[:0])
		if err := got.Decode(buf); err != nil {
			t.Fatal(err)
		}
	})
	conns := make([]uint64, 0, 8)
	assertNoAllocs(t, "Batch round trip", func() {
		buf = AppendBatch(buf[:0], []uint64{1, 2, 3}, e.Frame)
		var err error
		if conns, _, err = DecodeBatch(buf, conns); err != nil {
			t.Fatal(err)
		}
	})
}

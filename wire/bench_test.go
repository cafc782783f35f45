package wire

import "testing"

// Benchmarks for the per-message paths. Run with:
//
//	go test ./wire -run XXX -bench . -benchmem

// benchMsg is a typical chat message: ids of realistic size and a 200-byte
// text body.
var benchMsg = Msg{ConvID: 1 << 40, MessageID: 7263518230475964417, Seq: 123456, ServerTimeMS: 1767225600123,
	Sender: []byte("user-0123456789"), SenderDevice: []byte("ios-7f3a9c"), ClientMsgID: []byte("01J9Z8Q4W6X3C2V1B0N9M8K7J6"),
	Kind: KindText, Body: textBody(200)}

func BenchmarkMsgAppend(b *testing.B) {
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = benchMsg.Append(buf[:0], 0)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkMsgDecode(b *testing.B) {
	frame := benchMsg.Append(nil, 0)
	var m Msg
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if err := m.Decode(frame[HeaderLen:]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecoderSend(b *testing.B) {
	frame := (&Send{ConvID: 1 << 40, ClientMsgID: []byte("01J9Z8Q4W6X3C2V1B0N9M8K7J6"), Kind: KindText, Body: textBody(200)}).Append(nil, 0)
	var d Decoder
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if _, _, err := d.Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecoderResume64(b *testing.B) {
	r := Resume{ReqID: 7, Cursors: make([]Cursor, 64)}
	for i := range r.Cursors {
		r.Cursors[i] = Cursor{ConvID: 1<<40 + uint64(i)*7919, LastSeq: uint64(i) * 1013}
	}
	frame := r.Append(nil, 0)
	var d Decoder
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if _, _, err := d.Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// A MSG with a 4 KiB text body, the size where compression starts to pay.
func bench4K() []byte {
	m := benchMsg
	m.Body = textBody(4 << 10)
	return m.Append(nil, 0)
}

func BenchmarkCompress4K(b *testing.B) {
	plain := bench4K()
	buf := make([]byte, 0, len(plain))
	b.ReportAllocs()
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		buf = Compress(buf[:0], plain)
	}
	b.ReportMetric(float64(len(buf))/float64(len(plain)), "ratio")
}

func BenchmarkDecompress4K(b *testing.B) {
	plain := bench4K()
	c := Compress(nil, plain)
	buf := make([]byte, 0, MaxFrameSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		var err error
		if buf, err = Decompress(buf[:0], c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompress4KParallel shows Compress scales across goroutines (the
// package encoder pools one state per P).
func BenchmarkCompress4KParallel(b *testing.B) {
	plain := bench4K()
	b.ReportAllocs()
	b.SetBytes(int64(len(plain)))
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, len(plain))
		for pb.Next() {
			buf = Compress(buf[:0], plain)
		}
	})
}

func BenchmarkEnvelopeRoundTrip(b *testing.B) {
	e := Envelope{Gateway: []byte("gw-eu-1a-07"), Conn: 1 << 33, User: []byte("user-0123456789"),
		Device: []byte("ios-7f3a9c"), Caps: CapZstd, ReceivedMS: 1767225600123,
		Frame: (&Send{ConvID: 1 << 40, ClientMsgID: []byte("01J9Z8Q4W6X3C2V1B0N9M8K7J6"), Kind: KindText, Body: textBody(200)}).Append(nil, 0)}
	buf := make([]byte, 0, 512)
	var got Envelope
	b.ReportAllocs()
	for b.Loop() {
		buf = e.Append(buf[:0])
		if err := got.Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}

package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

// Fuzz targets. Run each with, e.g.:
//
//	go test ./wire -run XXX -fuzz FuzzDecoder -fuzztime 20s
//
// Seeds come from testdata/vectors.json and the samples; crashers found
// are kept as regression seeds in testdata/fuzz/<target>/.

// knownErrorCodes are the only codes decoding may produce.
var knownErrorCodes = map[Code]bool{
	CodeMalformedFrame: true, CodeFrameTooLarge: true, CodeUnknownType: true, CodeBadCompression: true,
}

func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	var pe *ProtoError
	if !errors.As(err, &pe) || !knownErrorCodes[pe.Code] || pe.Reason == "" {
		t.Fatalf("unexpected error %T %v", err, err)
	}
}

func seedFrames(f *testing.F) [][]byte {
	frames := vectorFrames(f)
	for _, s := range samples() {
		if b := s.f.Append(nil, s.flags); len(b) < 4096 {
			frames = append(frames, b)
		}
	}
	return frames
}

// FuzzDecoder: arbitrary bytes never panic the Decoder, errors are
// *ProtoError with a decoding code, and whatever decodes re-encodes to a
// frame that decodes to the same fields (plainly and compressed), with a
// canonical encoding that is a fixed point of decode+encode.
func FuzzDecoder(f *testing.F) {
	for _, b := range seedFrames(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var d Decoder
		typ, flags, err := d.Decode(frame)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		x := d.Frame(typ)
		if x == nil || x.Type() != typ {
			t.Fatalf("Decode accepted type %v", typ)
		}
		plainFlags := flags &^ FlagCompressed
		re := x.Append(nil, plainFlags)
		if len(re) > MaxFrameSize {
			t.Fatalf("re-encoding grew past MaxFrameSize: %d", len(re))
		}

		var d2 Decoder
		typ2, flags2, err := d2.Decode(re)
		if err != nil {
			t.Fatalf("re-encoded %v does not decode: %v", typ, err)
		}
		if typ2 != typ || flags2 != plainFlags {
			t.Fatalf("re-encoded header %v %v, want %v %v", typ2, flags2, typ, plainFlags)
		}
		if !sameFields(d2.Frame(typ), x) {
			t.Fatalf("re-decoded %v\nfirst     %v", fieldsOf(d2.Frame(typ)), fieldsOf(x))
		}
		if again := d2.Frame(typ).Append(nil, plainFlags); string(again) != string(re) {
			t.Fatalf("encoding is not canonical:\n% x\n% x", re, again)
		}

		c := Compress(nil, re)
		if _, _, err := d2.Decode(c); err != nil {
			t.Fatalf("compressed re-encoding does not decode: %v", err)
		}
		if !sameFields(d2.Frame(typ), x) {
			t.Fatal("compressed re-encoding decodes differently")
		}
		if back, err := Decompress(nil, c); err != nil || string(back) != string(re) {
			t.Fatalf("Decompress(Compress(frame)) != frame: %v", err)
		}
	})
}

// chunkReader reassembles frames from a byte stream that arrives in
// arbitrary chunks, each frame prefixed with its uvarint length: the
// framing a client would use to carry chatd frames over a plain byte
// stream. It exists to check that the codec has no hidden dependency on
// buffer boundaries (every decoded field aliases exactly its frame).
type chunkReader struct {
	buf   []byte
	start int // first unconsumed byte
}

var (
	errStreamVarint   = errors.New("length prefix overflows")
	errStreamTooLarge = errors.New("length prefix above MaxFrameSize")
)

// write adds a chunk. Frames returned by next before it are invalidated.
func (r *chunkReader) write(p []byte) {
	if r.start > 0 {
		n := copy(r.buf, r.buf[r.start:])
		r.buf, r.start = r.buf[:n], 0
	}
	r.buf = append(r.buf, p...)
}

// next returns the next complete frame, nil if more bytes are needed, or
// an error if the stream cannot be framed.
func (r *chunkReader) next() ([]byte, error) {
	avail := r.buf[r.start:]
	n, k := binary.Uvarint(avail)
	switch {
	case k < 0:
		return nil, errStreamVarint
	case k == 0:
		return nil, nil
	case n > MaxFrameSize:
		return nil, errStreamTooLarge
	case uint64(len(avail)-k) < n:
		return nil, nil
	}
	frame := avail[k : k+int(n) : k+int(n)]
	r.start += k + int(n)
	return frame, nil
}

// pending reports whether bytes of an incomplete frame remain.
func (r *chunkReader) pending() bool { return r.start < len(r.buf) }

// describe decodes one frame and renders the outcome for comparison: the
// error code, or the canonical re-encoding of the decoded fields (which
// FuzzDecoder shows to be a faithful, cheap stand-in for the fields).
func describe(d *Decoder, frame []byte) string {
	typ, flags, err := d.Decode(frame)
	if err != nil {
		return fmt.Sprintf("%v %v error %d", typ, flags, CodeOf(err))
	}
	return string(d.Frame(typ).Append(nil, flags))
}

// splitWhole frames a complete stream in one pass, without chunkReader.
func splitWhole(stream []byte) (out []string, end string) {
	var d Decoder
	for len(stream) > 0 {
		n, k := binary.Uvarint(stream)
		switch {
		case k < 0:
			return out, errStreamVarint.Error()
		case k == 0:
			return out, "incomplete"
		case n > MaxFrameSize:
			return out, errStreamTooLarge.Error()
		case uint64(len(stream)-k) < n:
			return out, "incomplete"
		}
		out = append(out, describe(&d, stream[k:k+int(n)]))
		stream = stream[k+int(n):]
	}
	return out, "clean"
}

// FuzzChunked: a stream of length-prefixed frames split into arbitrary
// chunks (sizes taken from the second input, cycled) decodes to the same
// frames, errors and end state as the unsplit stream.
func FuzzChunked(f *testing.F) {
	// Seeds stay small: the fuzzer minimizes every input that finds new
	// coverage, running the target over the whole stream for each byte it
	// tries to drop, so a long seed stream stalls a short fuzzing run.
	var stream []byte
	for _, b := range vectorFrames(f) {
		if len(b) > 64 {
			continue
		}
		stream = binary.AppendUvarint(stream, uint64(len(b)))
		stream = append(stream, b...)
	}
	f.Add(stream, []byte{0})
	f.Add(stream, []byte{1, 7, 250, 3})
	f.Add(stream, []byte{})
	f.Add([]byte{0x05, 0x0B, 0x00, 0x01}, []byte{0, 0, 0})             // incomplete
	f.Add([]byte{0x81, 0x80, 0x04, 0x0B, 0x00}, []byte{1})             // 65537: too large
	f.Add([]byte{0x02, 0x0B, 0x00, 0x02, 0x0C, 0x00}, []byte{2, 0, 5}) // PING, PONG
	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		want, wantEnd := splitWhole(stream)

		var d Decoder
		var r chunkReader
		var got []string
		gotEnd := ""
		for i, off := 0, 0; off < len(stream) && gotEnd == ""; i++ {
			size := len(stream) - off
			if len(sizes) > 0 {
				size = min(size, int(sizes[i%len(sizes)])+1)
			}
			r.write(stream[off : off+size])
			off += size
			for gotEnd == "" {
				frame, err := r.next()
				if err != nil {
					gotEnd = err.Error()
				} else if frame == nil {
					break
				} else {
					got = append(got, describe(&d, frame))
				}
			}
		}
		if gotEnd == "" {
			gotEnd = "clean"
			if r.pending() {
				gotEnd = "incomplete"
			}
		}

		if len(got) != len(want) {
			t.Fatalf("chunked: %d frames, whole: %d", len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("frame %d: chunked %s\nwhole %s", i, got[i], want[i])
			}
		}
		if gotEnd != wantEnd {
			t.Fatalf("chunked ended %q, whole %q", gotEnd, wantEnd)
		}
	})
}

// FuzzEnvelope: arbitrary bytes never panic Envelope.Decode or
// DecodeBatch, and whatever decodes round-trips.
func FuzzEnvelope(f *testing.F) {
	for _, b := range vectorFrames(f, "ENVELOPE", "BATCH") {
		f.Add(b)
	}
	for _, e := range envelopeSamples()[:2] {
		f.Add(e.Append(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Envelope
		if err := e.Decode(b); err != nil {
			if CodeOf(err) != CodeMalformedFrame {
				t.Fatalf("Envelope.Decode: %v", err)
			}
		} else {
			var e2 Envelope
			if err := e2.Decode(e.Append(nil)); err != nil {
				t.Fatalf("re-encoded envelope: %v", err)
			}
			if !sameFields(&e, &e2) {
				t.Fatal("envelope round trip differs")
			}
		}

		conns, frame, err := DecodeBatch(b, nil)
		if err != nil {
			if CodeOf(err) != CodeMalformedFrame {
				t.Fatalf("DecodeBatch: %v", err)
			}
			return
		}
		conns2, frame2, err := DecodeBatch(AppendBatch(nil, conns, frame), nil)
		if err != nil {
			t.Fatalf("re-encoded batch: %v", err)
		}
		if fmt.Sprint(conns) != fmt.Sprint(conns2) || string(frame) != string(frame2) {
			t.Fatal("batch round trip differs")
		}
	})
}

// FuzzGroupEvent: arbitrary bodies never panic GroupEvent.Decode, errors
// are coded, and whatever decodes re-encodes to bytes that decode to the
// same event.
func FuzzGroupEvent(f *testing.F) {
	for _, e := range groupEventSamples() {
		f.Add(e.Append(nil))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		var e, again GroupEvent
		if err := e.Decode(body); err != nil {
			checkDecodeError(t, err)
			return
		}
		if err := again.Decode(e.Append(nil)); err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
		if fmt.Sprint(e) != fmt.Sprint(again) {
			t.Fatalf("re-decoded %v, first %v", again, e)
		}
	})
}

package wire

import (
	"bytes"
	"crypto/rand"
	"runtime"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// textBody returns n bytes of compressible, text-like content.
func textBody(n int) []byte {
	const words = "the quick brown fox jumps over the lazy dog and then some more chat text "
	b := make([]byte, 0, n+len(words))
	for i := 0; len(b) < n; i++ {
		b = append(b, words[i%7:]...)
	}
	return b[:n]
}

func msgFrame(body []byte, flags Flags) []byte {
	m := Msg{ConvID: 42, MessageID: 7263518230475964417, Seq: 17, ServerTimeMS: 1767225600123,
		Sender: []byte("alice"), SenderDevice: []byte("ios-7f3a"), ClientMsgID: []byte("c-0001"),
		Kind: KindText, Body: body}
	return m.Append(nil, flags)
}

func TestCompressRoundTrip(t *testing.T) {
	var d Decoder
	for _, n := range []int{CompressMinBytes, 4 << 10, MaxBodySize} {
		for _, flags := range []Flags{0, FlagReplay} {
			plain := msgFrame(textBody(n), flags)
			prefix := []byte{0xAA}
			c := Compress(bytes.Clone(prefix), plain)
			if c[0] != 0xAA {
				t.Fatal("Compress clobbered dst")
			}
			c = c[1:]
			if c[0] != byte(TypeMsg) || Flags(c[1]) != flags|FlagCompressed {
				t.Fatalf("n=%d: header % x", n, c[:2])
			}
			if len(c) >= len(plain) {
				t.Fatalf("n=%d: compressed %d >= plain %d", n, len(c), len(plain))
			}
			typ, f, err := d.Decode(c)
			if err != nil || typ != TypeMsg || f != flags|FlagCompressed {
				t.Fatalf("n=%d: Decode = %v %v %v", n, typ, f, err)
			}
			var want Msg
			if err := want.Decode(plain[HeaderLen:]); err != nil {
				t.Fatal(err)
			}
			if !sameFields(&d.Msg, &want) {
				t.Fatalf("n=%d: decoded compressed frame differs", n)
			}
			out, err := Decompress([]byte{0xBB}, c)
			if err != nil || out[0] != 0xBB || !bytes.Equal(out[1:], plain) {
				t.Fatalf("n=%d: Decompress: %v", n, err)
			}
		}
	}
}

func TestCompressLeavesUnchanged(t *testing.T) {
	random := make([]byte, 4096)
	rand.Read(random)
	tiny := msgFrame(nil, 0)
	short := (&Send{ConvID: 1, Body: textBody(CompressMinBytes - 10)}).Append(nil, 0) // payload < 512
	for name, frame := range map[string][]byte{
		"empty":          nil,
		"one byte":       {byte(TypePing)},
		"tiny":           tiny,
		"below min":      short,
		"incompressible": msgFrame(random, 0),
		"already":        Compress(nil, msgFrame(textBody(4096), 0)),
	} {
		if got := Compress(nil, frame); !bytes.Equal(got, frame) {
			t.Errorf("%s: Compress changed the frame", name)
		}
	}
	// Decompress passes plain frames through.
	for _, s := range samples()[:10] {
		frame := s.f.Append(nil, s.flags)
		out, err := Decompress(nil, frame)
		if err != nil || !bytes.Equal(out, frame) {
			t.Errorf("%s: Decompress of a plain frame: %v", s.name, err)
		}
	}
}

func compressedFrame(t Type, flags Flags, zpayload []byte) []byte {
	return append([]byte{byte(t), byte(flags | FlagCompressed)}, zpayload...)
}

func TestBadCompression(t *testing.T) {
	valid := Compress(nil, msgFrame(textBody(4096), 0))
	corrupt := bytes.Clone(valid)
	corrupt[len(corrupt)/2] ^= 0xFF
	tests := map[string][]byte{
		"empty payload":   compressedFrame(TypeSend, 0, nil),
		"not zstd":        compressedFrame(TypeSend, 0, []byte("hello, this is not zstd at all")),
		"bad magic":       compressedFrame(TypeSend, 0, []byte{0x28, 0xB5, 0x2F, 0xFE, 0, 0, 0}),
		"truncated":       valid[:len(valid)-5],
		"corrupt":         corrupt,
		"only the header": compressedFrame(TypeSend, 0, valid[2:8]),
	}
	var d Decoder
	for name, frame := range tests {
		_, _, err := d.Decode(frame)
		wantCode(t, err, CodeBadCompression, name)
		out, err := Decompress([]byte{1, 2}, frame)
		wantCode(t, err, CodeBadCompression, name)
		if !bytes.Equal(out, []byte{1, 2}) {
			t.Errorf("%s: Decompress changed dst on error: % x", name, out)
		}
	}
	// A compressed payload that decompresses to a malformed one.
	_, _, err := d.Decode(compressedFrame(TypeSend, 0, zenc.EncodeAll([]byte{0x80}, nil)))
	wantCode(t, err, CodeMalformedFrame, "compressed truncated payload")
	// Header errors come first.
	_, err = Decompress(nil, []byte{byte(TypeSend), 0x06})
	wantCode(t, err, CodeMalformedFrame, "Decompress with unknown flags")
}

// A small compressed payload that expands past MaxFrameSize must be refused
// without allocating anything near its expanded size.
func TestDecompressionBomb(t *testing.T) {
	var d Decoder
	limit := MaxFrameSize - HeaderLen

	// Exactly at the limit: a PING whose nonce is followed by trailing
	// bytes (ignored), decompressing to 65534 bytes.
	atLimit := make([]byte, limit)
	atLimit[0] = 7
	if _, _, err := d.Decode(compressedFrame(TypePing, 0, zenc.EncodeAll(atLimit, nil))); err != nil || d.Ping.Nonce != 7 {
		t.Fatalf("payload of exactly %d bytes: %v", limit, err)
	}

	for _, n := range []int{limit + 1, MaxFrameSize, MaxFrameSize + 1, 1 << 20, 64 << 20} {
		zeros := make([]byte, n)
		bomb := compressedFrame(TypePing, 0, zenc.EncodeAll(zeros, nil))
		zeros = nil
		runtime.GC()

		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _, err := d.Decode(bomb)
		runtime.ReadMemStats(&after)
		wantCode(t, err, CodeBadCompression, "bomb")
		if grown := after.TotalAlloc - before.TotalAlloc; grown > 1<<20 {
			t.Errorf("bomb of %d bytes (%d compressed) allocated %d bytes", n, len(bomb), grown)
		}
		_, err = Decompress(nil, bomb)
		wantCode(t, err, CodeBadCompression, "bomb via Decompress")
	}

	// Without a content size in the zstd header the bound still holds
	// (streaming encoders omit it).
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, 1<<20))
	w.Close()
	_, _, err = d.Decode(compressedFrame(TypePing, 0, buf.Bytes()))
	wantCode(t, err, CodeBadCompression, "streamed bomb")
}

// Frames from other encoders: a zstd frame without single-segment mode
// declaring a 64 KiB window is accepted (what one-shot encoders may emit
// for payloads between 32 and 64 KiB); a larger window is refused, even if
// the content is small.
func TestForeignZstdFrames(t *testing.T) {
	plain := msgFrame(textBody(40<<10), 0)
	e, err := zstd.NewWriter(nil, zstd.WithSingleSegment(false), zstd.WithEncoderCRC(false))
	if err != nil {
		t.Fatal(err)
	}
	var d Decoder
	if _, _, err := d.Decode(compressedFrame(TypeMsg, 0, e.EncodeAll(plain[HeaderLen:], nil))); err != nil {
		t.Fatalf("64 KiB window: %v", err)
	}
	if string(d.Msg.Body) != string(textBody(40<<10)) {
		t.Fatal("64 KiB window: wrong body")
	}

	// Hand-made frames: magic, descriptor 0x00 (no content size, not
	// single-segment, no checksum), window descriptor (exponent<<3: window
	// 2^(10+exponent)), one raw last block of 5 bytes: PING nonce 7 and 4
	// trailing bytes.
	handMade := func(exponent byte) []byte {
		z := []byte{0x28, 0xB5, 0x2F, 0xFD, 0x00, exponent << 3, 5<<3 | 1, 0, 0, 7, 1, 2, 3, 4}
		return compressedFrame(TypePing, 0, z)
	}
	if _, _, err := d.Decode(handMade(6)); err != nil || d.Ping.Nonce != 7 {
		t.Fatalf("hand-made 64 KiB window: %v", err)
	}
	_, _, err = d.Decode(handMade(7))
	wantCode(t, err, CodeBadCompression, "128 KiB window")
	_, _, err = d.Decode(handMade(10))
	wantCode(t, err, CodeBadCompression, "1 MiB window")
}

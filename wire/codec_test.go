package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var d Decoder
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			frame := s.f.Append(nil, s.flags)
			if len(frame) > MaxFrameSize {
				t.Fatalf("sample is %d bytes, over MaxFrameSize", len(frame))
			}
			if Type(frame[0]) != s.f.Type() || Flags(frame[1]) != s.flags {
				t.Fatalf("header % x, want %02x %02x", frame[:2], byte(s.f.Type()), byte(s.flags))
			}

			// Through the Decoder.
			typ, flags, err := d.Decode(frame)
			if err != nil {
				t.Fatalf("Decoder.Decode: %v", err)
			}
			if typ != s.f.Type() || flags != s.flags {
				t.Fatalf("Decoder.Decode = %v %v, want %v %v", typ, flags, s.f.Type(), s.flags)
			}
			if got := d.Frame(typ); !sameFields(got, s.f) {
				t.Fatalf("decoded %v\nwant    %v", fieldsOf(got), fieldsOf(s.f))
			}

			// Directly, into a fresh struct.
			x := newOf(s.f)
			if err := x.Decode(frame[HeaderLen:]); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !sameFields(x, s.f) {
				t.Fatalf("decoded %v\nwant    %v", fieldsOf(x), fieldsOf(s.f))
			}

			// Appending keeps what dst held.
			prefix := []byte("prefix")
			got := s.f.Append(bytes.Clone(prefix), s.flags)
			if !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], frame) {
				t.Fatal("Append to a non-empty dst differs")
			}
		})
	}
}

// Decode must overwrite every field, including with empty values, and
// slice fields must shrink.
func TestDecodeOverwrites(t *testing.T) {
	for _, s := range samples() {
		if !strings.HasSuffix(s.name, "/max") && !strings.HasSuffix(s.name, "/max_members") {
			continue
		}
		x := newOf(s.f)
		if err := x.Decode(s.f.Append(nil, 0)[HeaderLen:]); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		// The smallest valid frame of the same type.
		small := newOf(s.f)
		if h, ok := small.(*Hello); ok {
			h.DeviceID = []byte("d")
		}
		if c, ok := small.(*Receipt); ok {
			c.Kind = ReceiptRead
		}
		if c, ok := small.(*Conv); ok {
			c.Kind = ConvDirect
		}
		if c, ok := small.(*CreateGroup); ok {
			c.Name = []byte("g")
		}
		if c, ok := small.(*GroupChange); ok {
			c.Op = GroupLeave
		}
		if c, ok := small.(*Typing); ok {
			c.State = TypingStarted
		}
		if err := x.Decode(small.Append(nil, 0)[HeaderLen:]); err != nil {
			t.Fatalf("%s small: %v", s.name, err)
		}
		if !sameFields(x, small) {
			t.Errorf("%s: after decoding a small frame over a large one got %v, want %v", s.name, fieldsOf(x), fieldsOf(small))
		}
	}
}

// Decoded byte strings must alias the payload (no copies) with their
// capacity clipped, so appending to one cannot corrupt the next field.
func TestDecodeAliasesPayload(t *testing.T) {
	frame := (&Msg{Sender: []byte("alice"), SenderDevice: []byte("dev"), ClientMsgID: []byte("c1"), Body: []byte("body")}).Append(nil, 0)
	var m Msg
	if err := m.Decode(frame[HeaderLen:]); err != nil {
		t.Fatal(err)
	}
	if i := bytes.Index(frame, []byte("alice")); &frame[i] != &m.Sender[0] {
		t.Fatal("Sender does not alias the payload")
	}
	if cap(m.Sender) != len(m.Sender) {
		t.Fatalf("cap(Sender) = %d, want %d", cap(m.Sender), len(m.Sender))
	}
	_ = append(m.Sender, "XXXX"...)
	if string(m.SenderDevice) != "dev" {
		t.Fatal("appending to Sender overwrote SenderDevice")
	}
}

// Every strict prefix of a valid payload is truncated and must fail
// with CodeMalformedFrame (every layout ends in a field that needs at least
// one byte), and the whole frame cut at every position must fail too. The
// one exception: a CONV cut right after its members is a valid
// revision-1.0 CONV.
func TestTruncatedEveryPosition(t *testing.T) {
	var d Decoder
	for _, s := range samples() {
		frame := s.f.Append(nil, s.flags)
		payload := frame[HeaderLen:]
		x := newOf(s.f)
		legacyEnd := -1
		if c, ok := s.f.(*Conv); ok {
			rev := appendBytes(nil, c.Name)
			rev = ub(rev, max(c.MemberTotal, uint64(len(c.Members))))
			rev = appendBytes(rev, make([]byte, len(c.Members)))
			legacyEnd = len(payload) - len(rev)
		}
		for i := range payload {
			if i == legacyEnd {
				if err := x.Decode(payload[:i]); err != nil {
					t.Fatalf("%s: revision-1.0 prefix: %v", s.name, err)
				}
				continue
			}
			if err := x.Decode(payload[:i]); err == nil {
				t.Fatalf("%s: payload truncated to %d of %d bytes decoded", s.name, i, len(payload))
			} else {
				wantCode(t, err, CodeMalformedFrame, s.name)
			}
		}
		for i := range HeaderLen + 1 {
			_, _, err := d.Decode(frame[:i])
			wantCode(t, err, CodeMalformedFrame, fmt.Sprintf("%s cut to %d", s.name, i))
		}
	}
}

// Bytes after the last known field are ignored (minor revisions append
// fields).
func TestTrailingBytesIgnored(t *testing.T) {
	var d Decoder
	for _, s := range samples() {
		frame := s.f.Append(nil, s.flags)
		if len(frame)+4 > MaxFrameSize {
			continue
		}
		frame = append(frame, 0xFF, 0x00, 0x80, 0x01)
		if _, _, err := d.Decode(frame); err != nil {
			t.Fatalf("%s with trailing bytes: %v", s.name, err)
		}
		if got := d.Frame(s.f.Type()); !sameFields(got, s.f) {
			t.Fatalf("%s with trailing bytes decoded %v", s.name, fieldsOf(got))
		}
	}
}

func TestUvarintLimits(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want uint64
		err  string // substring of the reason, "" for success
	}{
		{"zero", []byte{0x00}, 0, ""},
		{"127", []byte{0x7F}, 127, ""},
		{"128", []byte{0x80, 0x01}, 128, ""},
		{"300", []byte{0xAC, 0x02}, 300, ""},
		{"max", []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, maxU, ""},
		{"non-minimal zero", []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 0, ""},
		{"empty", nil, 0, "nonce truncated"},
		{"unterminated", []byte{0x80}, 0, "nonce truncated"},
		{"overflow 10th byte", []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02}, 0, "nonce overflows 64 bits"},
		{"11 bytes", []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 0, "nonce longer than 10 bytes"},
	}
	for _, tt := range tests {
		var p Ping
		err := p.Decode(tt.in)
		if tt.err == "" {
			if err != nil || p.Nonce != tt.want {
				t.Errorf("%s: got %d, %v; want %d", tt.name, p.Nonce, err, tt.want)
			}
			continue
		}
		wantCode(t, err, CodeMalformedFrame, tt.name)
		if !strings.Contains(err.(*ProtoError).Reason, tt.err) {
			t.Errorf("%s: reason %q, want it to contain %q", tt.name, err.(*ProtoError).Reason, tt.err)
		}
	}
}

// payloadOf builds a payload from uvarints (int, uint64), raw bytes
// ([]byte: written as is) and strings (written as byte strings).
func payloadOf(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case int:
			b = ub(b, uint64(v))
		case uint64:
			b = ub(b, v)
		case []byte:
			b = append(b, v...)
		case string:
			b = appendBytes(b, []byte(v))
		default:
			panic(fmt.Sprintf("payloadOf: %T", p))
		}
	}
	return b
}

func TestRejections(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	raw := func(b ...byte) []byte { return b }
	cursors := func(n int) []byte {
		var b []byte
		for range n {
			b = append(b, 1, 1)
		}
		return b
	}
	members := func(n int) []byte {
		var b []byte
		for range n {
			b = appendBytes(b, []byte("m"))
		}
		return b
	}
	tests := []struct {
		f       Frame
		payload []byte
		reason  string
	}{
		{&Hello{}, payloadOf(1, 1, long(MaxTokenLen+1), "d", 0), "hello: token too long"},
		{&Hello{}, payloadOf(1, 1, "t", long(MaxIDLen+1), 0), "hello: device_id too long"},
		{&Hello{}, payloadOf(1, 1, "t", "", 0), "hello: device_id empty"},
		{&Welcome{}, payloadOf(1, 0, 1, 1, 1, 1, long(MaxIDLen+1), "d"), "welcome: user_id too long"},
		{&Welcome{}, payloadOf(1, 0, 1, 1, 1, 1, "u", long(MaxIDLen+1)), "welcome: device_id too long"},
		{&Send{}, payloadOf(1, long(MaxIDLen+1), 1, "b"), "send: client_msg_id too long"},
		{&Send{}, payloadOf(1, "c", 1, long(MaxBodySize+1)), "send: body too long"},
		{&Send{}, payloadOf(1, "c", 1, 5, raw('a', 'b', 'c')), "send: body truncated"},
		{&Send{}, payloadOf(1, "c", 1, uint64(maxU)), "send: body too long"},
		{&Send{}, payloadOf(1, "c", 1, raw(0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F)), "send: body overflows 64 bits"},
		{&Ack{}, payloadOf(long(MaxIDLen+1), 1, 1, 1, 1), "ack: client_msg_id too long"},
		{&Msg{}, payloadOf(1, 1, 1, 1, long(MaxIDLen+1), "d", "c", 1, "b"), "msg: sender too long"},
		{&Msg{}, payloadOf(1, 1, 1, 1, "s", long(MaxIDLen+1), "c", 1, "b"), "msg: sender_device too long"},
		{&Msg{}, payloadOf(1, 1, 1, 1, "s", "d", long(MaxIDLen+1), 1, "b"), "msg: client_msg_id too long"},
		{&Msg{}, payloadOf(1, 1, 1, 1, "s", "d", "c", 1, long(MaxBodySize+1)), "msg: body too long"},
		{&Receipt{}, payloadOf(1, raw(0), 1, ""), "receipt: kind out of range"},
		{&Receipt{}, payloadOf(1, raw(3), 1, ""), "receipt: kind out of range"},
		{&Receipt{}, payloadOf(1, raw(1), 1, long(MaxIDLen+1)), "receipt: user too long"},
		{&Resume{}, payloadOf(1, MaxResumeConvs+1, cursors(MaxResumeConvs+1)), "resume: count too large"},
		{&Resume{}, payloadOf(1, 3, cursors(2)), "resume: count exceeds payload"},
		{&Resume{}, payloadOf(1, 2, cursors(1), raw(1, 0x80)), "resume: last_seq truncated"},
		{&Resumed{}, payloadOf(1, 1, 1, raw(2)), "resumed: truncated not 0 or 1"},
		{&Resumed{}, payloadOf(1, 1, 1, raw(0xFF)), "resumed: truncated not 0 or 1"},
		{&Resumed{}, payloadOf(1, 1, 1), "resumed: truncated truncated"},
		{&HistoryEnd{}, payloadOf(1, 1, 1, raw(2)), "history_end: has_more not 0 or 1"},
		{&Error{}, payloadOf(1001, raw(3), 0, 0, long(MaxIDLen+1), "m"), "error: client_msg_id too long"},
		{&Error{}, payloadOf(1001, raw(3), 0, 0, "", long(MaxTextLen+1)), "error: message too long"},
		{&Goaway{}, payloadOf(4004, 0, long(MaxTextLen+1)), "goaway: message too long"},
		{&OpenDirect{}, payloadOf(1, long(MaxIDLen+1)), "open_direct: peer too long"},
		{&Conv{}, payloadOf(1, 1, raw(0), 1, 0), "conv: kind out of range"},
		{&Conv{}, payloadOf(1, 1, raw(3), 1, 0), "conv: kind out of range"},
		{&Conv{}, payloadOf(1, 1, raw(2), 1, MaxMembers+1, members(MaxMembers+1)), "conv: count too large"},
		{&Conv{}, payloadOf(1, 1, raw(2), 1, 2, "a", long(MaxIDLen+1)), "conv: member too long"},
		{&Conv{}, payloadOf(1, 1, raw(2), 1, 2, "a", 3, raw('b')), "conv: member truncated"},
	}
	for _, tt := range tests {
		err := tt.f.Decode(tt.payload)
		wantCode(t, err, CodeMalformedFrame, tt.reason)
		if got := err.(*ProtoError).Reason; got != tt.reason {
			t.Errorf("reason %q, want %q", got, tt.reason)
		}
	}
}

// The limits themselves are accepted (the samples cover the maxima of
// every field; this covers the exact boundaries the samples do not).
func TestLimitsInclusive(t *testing.T) {
	var h Hello
	if err := h.Decode(payloadOf(1, 1, strings.Repeat("t", MaxTokenLen), strings.Repeat("d", MaxIDLen), 0)); err != nil {
		t.Fatal(err)
	}
	var c Conv
	if err := c.Decode(payloadOf(1, 1, raw1(2), 1, 0)); err != nil || len(c.Members) != 0 {
		t.Fatal(err)
	}
}

func raw1(b byte) []byte { return []byte{b} }

func TestParseHeader(t *testing.T) {
	big := make([]byte, MaxFrameSize+1)
	big[0] = byte(TypeSend)
	tests := []struct {
		name  string
		frame []byte
		code  Code
	}{
		{"empty", nil, CodeMalformedFrame},
		{"one byte", []byte{byte(TypePing)}, CodeMalformedFrame},
		{"header only", []byte{byte(TypePing), 0}, 0},
		{"unknown type is not checked", []byte{0x7F, 0}, 0},
		{"too large", big, CodeFrameTooLarge},
		{"max size", big[:MaxFrameSize], 0},
		{"unknown flag 0x04", []byte{byte(TypeSend), 0x04}, CodeMalformedFrame},
		{"unknown flag 0x80", []byte{byte(TypeMsg), 0x80}, CodeMalformedFrame},
		{"replay on SEND", []byte{byte(TypeSend), byte(FlagReplay)}, CodeMalformedFrame},
		{"replay on MSG", []byte{byte(TypeMsg), byte(FlagReplay)}, 0},
		{"replay+compressed on MSG", []byte{byte(TypeMsg), byte(FlagReplay | FlagCompressed)}, 0},
		{"compressed on SEND", []byte{byte(TypeSend), byte(FlagCompressed)}, 0},
	}
	for _, tt := range tests {
		typ, flags, payload, err := ParseHeader(tt.frame)
		if tt.code == 0 {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			} else if typ != Type(tt.frame[0]) || flags != Flags(tt.frame[1]) || len(payload) != len(tt.frame)-HeaderLen {
				t.Errorf("%s: got %v %v %d bytes", tt.name, typ, flags, len(payload))
			}
			continue
		}
		wantCode(t, err, tt.code, tt.name)
		if len(tt.frame) >= HeaderLen && (typ != Type(tt.frame[0]) || flags != Flags(tt.frame[1])) {
			t.Errorf("%s: header not returned with the error", tt.name)
		}
	}
}

func TestDecoderUnknownType(t *testing.T) {
	var d Decoder
	for _, b := range []byte{0x00, byte(LastType) + 1, 0x7F, 0xFF} {
		typ, _, err := d.Decode([]byte{b, 0, 1, 2, 3})
		wantCode(t, err, CodeUnknownType, fmt.Sprintf("type %#x", b))
		if typ != Type(b) {
			t.Errorf("type %#x: returned type %v", b, typ)
		}
	}
	// Header errors come before the type check.
	_, _, err := d.Decode([]byte{0x7F, 0x04})
	wantCode(t, err, CodeMalformedFrame, "unknown type with unknown flags")
	// And the type check before decompression.
	_, _, err = d.Decode([]byte{0x7F, byte(FlagCompressed), 0xFF})
	wantCode(t, err, CodeUnknownType, "unknown compressed type")
}

func TestTypeMetadata(t *testing.T) {
	names := map[Type]string{
		TypeHello: "HELLO", TypeWelcome: "WELCOME", TypeSend: "SEND", TypeAck: "ACK",
		TypeMsg: "MSG", TypeReceipt: "RECEIPT", TypeResume: "RESUME", TypeResumed: "RESUMED",
		TypeHistory: "HISTORY", TypeHistoryEnd: "HISTORY_END", TypePing: "PING", TypePong: "PONG",
		TypeError: "ERROR", TypeGoaway: "GOAWAY", TypeOpenDirect: "OPEN_DIRECT", TypeConv: "CONV",
		TypeCreateGroup: "CREATE_GROUP", TypeGroupChange: "GROUP_CHANGE", TypeTyping: "TYPING", TypeFocus: "FOCUS", TypePresence: "PRESENCE",
	}
	client := map[Type]bool{
		TypeHello: true, TypeSend: true, TypeReceipt: true, TypeResume: true,
		TypeHistory: true, TypePing: true, TypeOpenDirect: true,
		TypeCreateGroup: true, TypeGroupChange: true, TypeTyping: true, TypeFocus: true,
	}
	var d Decoder
	for i := range 256 {
		typ := Type(i)
		name, known := names[typ]
		if KnownType(typ) != known {
			t.Errorf("KnownType(%#x) = %v", i, !known)
		}
		if ClientType(typ) != client[typ] {
			t.Errorf("ClientType(%v) = %v", typ, !client[typ])
		}
		if !known {
			name = fmt.Sprintf("TYPE_0x%02X", i)
		}
		if got := typ.String(); got != name {
			t.Errorf("Type(%#x).String() = %q, want %q", i, got, name)
		}
		f := d.Frame(typ)
		if (f != nil) != known || known && f.Type() != typ {
			t.Errorf("Decoder.Frame(%v) = %T", typ, f)
		}
	}
}

func TestCodeOf(t *testing.T) {
	pe := &ProtoError{Code: CodeBadCompression, Reason: "x"}
	for _, tt := range []struct {
		err  error
		want Code
	}{
		{nil, 0},
		{pe, CodeBadCompression},
		{fmt.Errorf("conn 7: %w", pe), CodeBadCompression},
		{errors.Join(io.EOF, pe), CodeBadCompression},
		{io.EOF, CodeInternal},
	} {
		if got := CodeOf(tt.err); got != tt.want {
			t.Errorf("CodeOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	if got := pe.Error(); got != "wire: bad_compression: x" {
		t.Errorf("Error() = %q", got)
	}
	// A successful decode returns a nil interface, not a typed nil.
	var p Ping
	if err := p.Decode([]byte{1}); err != nil {
		t.Fatalf("typed nil error: %#v", err)
	}
}

package wire

import "encoding/binary"

// This file holds what every frame shares: the header, type metadata and the
// primitive encodings (uvarint, byte string, byte, boolean). The per-frame
// Append/Decode methods are in frames.go.

// Frame is implemented by a pointer to every frame struct of this package.
type Frame interface {
	// Type is the frame's type byte.
	Type() Type
	// Append appends the whole frame (type, flags, payload) to dst and
	// returns the extended slice. It does not allocate when dst has enough
	// capacity and does not validate limits: a frame that breaks one is
	// rejected by the receiver's Decode.
	Append(dst []byte, flags Flags) []byte
	// Decode parses a payload (the frame minus its header) into the
	// receiver, overwriting every field. []byte fields alias payload.
	Decode(payload []byte) error
}

// ParseHeader splits a frame into its type, flags and payload. It rejects a
// frame shorter than HeaderLen (CodeMalformedFrame), longer than MaxFrameSize
// (CodeFrameTooLarge), with flag bits this version does not define, or with
// FlagReplay on a type other than TypeMsg (both CodeMalformedFrame). It does
// not check that t is a known type (see KnownType): the caller answers
// unknown types with CodeUnknownType and keeps the connection.
//
// When the header could be read, t and f are returned even with an error so
// the caller can name the failed frame (ERROR ref_type).
func ParseHeader(frame []byte) (t Type, f Flags, payload []byte, err error) {
	if len(frame) < HeaderLen {
		return 0, 0, nil, errShortFrame
	}
	t, f = Type(frame[0]), Flags(frame[1])
	switch {
	case len(frame) > MaxFrameSize:
		return t, f, nil, errFrameTooLarge
	case f&^knownFlags != 0:
		return t, f, nil, errUnknownFlags
	case f&FlagReplay != 0 && t != TypeMsg:
		return t, f, nil, errReplayNotMsg
	}
	return t, f, frame[HeaderLen:], nil
}

// KnownType reports whether t is a frame type of protocol version 1.
func KnownType(t Type) bool { return t >= TypeHello && t <= LastType }

// ClientType reports whether a client may send frames of type t. The server
// answers other known types from a client with CodeUnexpectedType.
func ClientType(t Type) bool {
	switch t {
	case TypeHello, TypeSend, TypeReceipt, TypeResume, TypeHistory, TypePing, TypeOpenDirect,
		TypeCreateGroup, TypeGroupChange, TypeTyping, TypeFocus:
		return true
	}
	return false
}

var typeNames = [...]string{
	TypeHello:       "HELLO",
	TypeWelcome:     "WELCOME",
	TypeSend:        "SEND",
	TypeAck:         "ACK",
	TypeMsg:         "MSG",
	TypeReceipt:     "RECEIPT",
	TypeResume:      "RESUME",
	TypeResumed:     "RESUMED",
	TypeHistory:     "HISTORY",
	TypeHistoryEnd:  "HISTORY_END",
	TypePing:        "PING",
	TypePong:        "PONG",
	TypeError:       "ERROR",
	TypeGoaway:      "GOAWAY",
	TypeOpenDirect:  "OPEN_DIRECT",
	TypeConv:        "CONV",
	TypeCreateGroup: "CREATE_GROUP",
	TypeGroupChange: "GROUP_CHANGE",
	TypeTyping:      "TYPING",
	TypeFocus:       "FOCUS",
	TypePresence:    "PRESENCE",
}

// String returns the type's name as used in docs/protocol.md ("SEND",
// "HISTORY_END", ...), or "TYPE_0x7F" for a type this version does not know.
func (t Type) String() string {
	if KnownType(t) {
		return typeNames[t]
	}
	const hex = "0123456789ABCDEF"
	return "TYPE_0x" + string([]byte{hex[t>>4], hex[t&0xF]})
}

// appendHeader starts a frame.
func appendHeader(dst []byte, t Type, f Flags) []byte {
	return append(dst, byte(t), byte(f))
}

// appendBytes appends a byte string: uvarint length, then the bytes.
func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// appendBool appends a boolean as one byte, 0 or 1.
func appendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, 1)
	}
	return append(dst, 0)
}

// reader decodes the fields of one payload in order. Its error is sticky:
// after the first failure every read returns a zero value and the first
// error is kept, so a Decode method reads all its fields unconditionally
// and checks r.err once at the end. This keeps the methods short and the
// happy path free of branches on errors.
type reader struct {
	b     []byte
	i     int    // next unread byte
	frame string // lower-case frame name, prefixes error reasons
	err   *ProtoError
}

// fail records the first error and makes every later read fail fast.
func (r *reader) fail(field, problem string) {
	if r.err == nil {
		r.err = malformed(r.frame + ": " + field + " " + problem)
	}
	r.i = len(r.b)
}

// result converts the sticky error into an error interface without
// creating a non-nil interface holding a nil pointer.
func (r *reader) result() error {
	if r.err != nil {
		return r.err
	}
	return nil
}

// uvarint reads an unsigned LEB128 integer of at most 10 bytes whose value
// fits in 64 bits. Non-minimal encodings (0x80 0x00 for 0) are accepted.
func (r *reader) uvarint(field string) uint64 {
	// Fast path: values below 128, the common case for kinds, counts and
	// short lengths.
	if r.i < len(r.b) && r.b[r.i] < 0x80 {
		v := uint64(r.b[r.i])
		r.i++
		return v
	}
	return r.uvarintSlow(field)
}

func (r *reader) uvarintSlow(field string) uint64 {
	b := r.b[r.i:]
	var v uint64
	for n, c := range b {
		if n == binary.MaxVarintLen64-1 && c > 1 {
			// The 10th byte may only contribute bit 63 and must end the
			// varint.
			if c >= 0x80 {
				r.fail(field, "longer than 10 bytes")
			} else {
				r.fail(field, "overflows 64 bits")
			}
			return 0
		}
		if c < 0x80 {
			r.i += n + 1
			return v | uint64(c)<<(7*n)
		}
		v |= uint64(c&0x7F) << (7 * n)
	}
	r.fail(field, "truncated")
	return 0
}

// bytes reads a byte string of at most max bytes. The result aliases the
// payload with its capacity clipped to its length, so appending to it can
// never overwrite the bytes that follow it in the frame.
func (r *reader) bytes(field string, max int) []byte {
	n := r.uvarint(field)
	if r.err != nil {
		return nil
	}
	if n > uint64(max) {
		r.fail(field, "too long")
		return nil
	}
	end := r.i + int(n)
	if end > len(r.b) {
		r.fail(field, "truncated")
		return nil
	}
	s := r.b[r.i:end:end]
	r.i = end
	return s
}

// byte1 reads one raw byte.
func (r *reader) byte1(field string) byte {
	if r.i >= len(r.b) {
		r.fail(field, "truncated")
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

// bool reads a boolean byte, which must be 0 or 1.
func (r *reader) bool(field string) bool {
	c := r.byte1(field)
	if c > 1 {
		r.fail(field, "not 0 or 1")
		return false
	}
	return c == 1
}

// kind reads a one-byte enumeration whose valid values are 1..max.
func (r *reader) kind(field string, max byte) byte {
	c := r.byte1(field)
	if r.err == nil && (c == 0 || c > max) {
		r.fail(field, "out of range")
		return 0
	}
	return c
}

// count reads a list length of at most max entries, each of which takes at
// least minEntry bytes, so a short payload cannot claim a long list.
func (r *reader) count(field string, max, minEntry int) int {
	n := r.uvarint(field)
	if r.err != nil {
		return 0
	}
	if n > uint64(max) {
		r.fail(field, "too large")
		return 0
	}
	if n*uint64(minEntry) > uint64(len(r.b)-r.i) {
		r.fail(field, "exceeds payload")
		return 0
	}
	return int(n)
}

package wire

import (
	"encoding/binary"
	"slices"
)

// Internal records. These never reach a client; they are documented in the
// "Internal records" section of docs/protocol.md because gateway and core
// may be deployed at different versions and must agree on them. They reuse
// the frame encodings (uvarint, byte string) and the same error type, with
// CodeMalformedFrame for a record that does not parse.

// EnvelopeVersion is the first byte of every Envelope.
const EnvelopeVersion = 1

// MaxGatewayIDLen bounds Envelope.Gateway, the id of the gateway instance
// that holds the connection.
const MaxGatewayIDLen = MaxIDLen

// Envelope is the record the gateway produces to the Kafka topic
// chat.inbound for every client frame core must handle: who sent it, over
// which connection, and the frame itself.
//
// Layout: version byte (=1), gateway bytes, conn uvarint, user bytes,
// device bytes, caps uvarint, received_ms uvarint, frame (all remaining
// bytes: one complete, uncompressed client frame).
//
// Frame runs to the end of the record, so unlike frames an Envelope cannot
// gain fields at its end; a new layout takes a new version byte.
type Envelope struct {
	Gateway    []byte // gateway instance id (<= MaxGatewayIDLen)
	Conn       uint64 // connection id, unique within Gateway
	User       []byte // authenticated user id (<= MaxIDLen)
	Device     []byte // device id from HELLO (<= MaxIDLen)
	Caps       uint64 // capabilities negotiated in WELCOME
	ReceivedMS uint64 // gateway clock, Unix milliseconds, when the frame arrived
	Frame      []byte // HeaderLen..MaxFrameSize bytes, FlagCompressed clear
}

// Append appends the encoded envelope to dst. It does not allocate when dst
// has capacity and does not validate.
func (e *Envelope) Append(dst []byte) []byte {
	dst = append(dst, EnvelopeVersion)
	dst = appendBytes(dst, e.Gateway)
	dst = binary.AppendUvarint(dst, e.Conn)
	dst = appendBytes(dst, e.User)
	dst = appendBytes(dst, e.Device)
	dst = binary.AppendUvarint(dst, e.Caps)
	dst = binary.AppendUvarint(dst, e.ReceivedMS)
	return append(dst, e.Frame...)
}

// Decode decodes b into e, overwriting every field; []byte fields alias b.
// It checks the version, the field limits and that Frame is between
// HeaderLen and MaxFrameSize bytes, but not the frame's contents.
func (e *Envelope) Decode(b []byte) error {
	r := reader{b: b, frame: "envelope"}
	if v := r.byte1("version"); r.err == nil && v != EnvelopeVersion {
		r.fail("version", "unknown")
	}
	e.Gateway = r.bytes("gateway", MaxGatewayIDLen)
	e.Conn = r.uvarint("conn")
	e.User = r.bytes("user", MaxIDLen)
	e.Device = r.bytes("device", MaxIDLen)
	e.Caps = r.uvarint("caps")
	e.ReceivedMS = r.uvarint("received_ms")
	e.Frame = nil
	if r.err == nil {
		switch rest := len(b) - r.i; {
		case rest < HeaderLen:
			r.fail("frame", "shorter than a header")
		case rest > MaxFrameSize:
			r.fail("frame", "too large")
		default:
			e.Frame = b[r.i:len(b):len(b)]
		}
	}
	return r.result()
}

// Batch is the unit core's router hands a gateway: one frame and the
// connections (on that gateway) to write it to, as is.
//
// Layout: count uvarint, count x conn uvarint, frame (all remaining bytes,
// a complete frame).

// AppendBatch appends a batch delivering frame to conns. It does not
// allocate when dst has capacity.
func AppendBatch(dst []byte, conns []uint64, frame []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(conns)))
	for _, c := range conns {
		dst = binary.AppendUvarint(dst, c)
	}
	return append(dst, frame...)
}

// DecodeBatch decodes a batch: it appends the connection ids to conns[:0]
// and returns them with the frame, which aliases b. The frame must be
// HeaderLen..MaxFrameSize bytes; its contents are not checked. The count
// may not exceed the bytes left (each id takes at least one), so a short
// record cannot make DecodeBatch allocate a large slice.
func DecodeBatch(b []byte, conns []uint64) ([]uint64, []byte, error) {
	r := reader{b: b, frame: "batch"}
	n := r.count("count", len(b), 1)
	conns = slices.Grow(conns[:0], n)
	for range n {
		c := r.uvarint("conn")
		if r.err != nil {
			break
		}
		conns = append(conns, c)
	}
	if r.err != nil {
		return conns, nil, r.err
	}
	switch rest := len(b) - r.i; {
	case rest < HeaderLen:
		return conns, nil, malformed("batch: frame shorter than a header")
	case rest > MaxFrameSize:
		return conns, nil, malformed("batch: frame too large")
	}
	return conns, b[r.i:len(b):len(b)], nil
}

// ConvKey appends the Kafka record key for a conversation: conv as 8 bytes
// big-endian, so all records of a conversation land on one partition in
// order.
func ConvKey(dst []byte, conv uint64) []byte {
	return binary.BigEndian.AppendUint64(dst, conv)
}

// UserKey appends the Kafka record key for a user: "u:" followed by the
// user id, so all records about a user land on one partition in order.
// The prefix makes the key's kind readable in tooling; it does not make
// every user key distinct from every 8-byte ConvKey ("u:" + a 6-byte id
// is 8 bytes), so do not mix both kinds of key where they must not collide.
func UserKey(dst []byte, user []byte) []byte {
	dst = append(dst, 'u', ':')
	return append(dst, user...)
}

// Package events is the record format of the chat.events topic: what
// core/messages emits after a durable commit and core/fanout delivers.
//
// Every record value starts with a kind byte:
//
//	KindMsg:     0x01, then one complete MSG frame (header included,
//	             uncompressed): the exact bytes fanout hands to gateways.
//	KindReceipt: 0x02, conv uvarint, kind byte, seq uvarint, user bytes,
//	             device bytes (the device that sent the receipt), then an
//	             optional flags byte (bit 0: the conversation is a group);
//	             a record without it is not a group's.
//	KindTyping:  0x03, a TYPING frame (S->C, user set) followed by the
//	             typing device: frame bytes, device bytes. Never stored.
//
// Record keys are wire.ConvKey(conv), so a conversation's events stay in
// order on one partition.
package events

import (
	"encoding/binary"
	"errors"

	"github.com/chatd-dev/chatd/wire"
)

// Record kinds.
const (
	KindMsg     byte = 0x01
	KindReceipt byte = 0x02
	KindTyping  byte = 0x03
)

// AppendTyping appends a KindTyping record: the S->C TYPING frame to relay
// and the device it came from (whose user's devices do not get it).
func AppendTyping(dst, frame, device []byte) []byte {
	dst = append(dst, KindTyping)
	dst = appendBytes(dst, frame)
	return appendBytes(dst, device)
}

// DecodeTyping splits a KindTyping record body (after the kind byte); both
// alias b.
func DecodeTyping(b []byte) (frame, device []byte, err error) {
	if frame, b, err = readBytes(b); err != nil {
		return nil, nil, err
	}
	device, _, err = readBytes(b)
	return frame, device, err
}

var errBad = errors.New("events: malformed record")

// AppendMsg appends a KindMsg record carrying frame.
func AppendMsg(dst, frame []byte) []byte {
	dst = append(dst, KindMsg)
	return append(dst, frame...)
}

// Receipt is a pointer that moved: User's Kind pointer in Conv is now Seq.
type Receipt struct {
	Conv   uint64
	Kind   wire.ReceiptKind
	Seq    uint64
	User   []byte
	Device []byte
	// Group says the conversation is a group: its receipts go to the
	// reader's own devices only (see core/fanout).
	Group bool
}

// Append appends r as a KindReceipt record.
func (r *Receipt) Append(dst []byte) []byte {
	dst = append(dst, KindReceipt)
	dst = binary.AppendUvarint(dst, r.Conv)
	dst = append(dst, byte(r.Kind))
	dst = binary.AppendUvarint(dst, r.Seq)
	dst = appendBytes(dst, r.User)
	dst = appendBytes(dst, r.Device)
	if r.Group {
		dst = append(dst, receiptGroup)
	}
	return dst
}

const receiptGroup byte = 0x01

// Decode decodes a KindReceipt record body (after the kind byte). User and
// Device alias b.
func (r *Receipt) Decode(b []byte) error {
	var n int
	if r.Conv, n = binary.Uvarint(b); n <= 0 {
		return errBad
	}
	b = b[n:]
	if len(b) < 1 {
		return errBad
	}
	r.Kind = wire.ReceiptKind(b[0])
	b = b[1:]
	if r.Seq, n = binary.Uvarint(b); n <= 0 {
		return errBad
	}
	b = b[n:]
	var err error
	if r.User, b, err = readBytes(b); err != nil {
		return err
	}
	if r.Device, b, err = readBytes(b); err != nil {
		return err
	}
	r.Group = len(b) > 0 && b[0]&receiptGroup != 0
	return nil
}

// Split returns a record's kind and body.
func Split(v []byte) (byte, []byte, error) {
	if len(v) < 1 {
		return 0, nil, errBad
	}
	return v[0], v[1:], nil
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func readBytes(b []byte) ([]byte, []byte, error) {
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return nil, nil, errBad
	}
	b = b[n:]
	return b[:l:l], b[l:], nil
}

package gateway

import (
	"encoding/binary"

	"github.com/gobwas/ws"

	"github.com/chatd-dev/chatd/wire"
)

// WebSocket framing (RFC 6455 section 5.2), on byte slices: the input path
// parses headers from bytes it has already received (it never blocks
// waiting for a header), and the output path writes complete frames whose
// unmasked server header is computed once per frame, not per connection.

// maxWSHeader is the largest client frame header: 2 bytes, 8 bytes of
// extended length, 4 bytes of mask (ws.MaxHeaderSize).
const maxWSHeader = ws.MaxHeaderSize

// maxServerHeader is the largest header of an (unmasked) server frame.
const maxServerHeader = 10

// parseHeader parses the frame header at the start of b. n is the header's
// length, or 0 if b does not hold all of it yet. The checks of ws.CheckHeader
// are left to the caller; only the 64-bit length's reserved top bit is
// rejected here because the length could not be represented otherwise.
func parseHeader(b []byte) (h ws.Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	n = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, nil
		}
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return h, 0, ws.ErrHeaderLengthMSB
		}
		h.Length = int64(u)
		n = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, nil
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	return h, n, nil
}

// serverHeaderLen is the length of an unmasked header for an n-byte payload.
func serverHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xFFFF:
		return 4
	default:
		return 10
	}
}

// appendServerHeader appends a final, unmasked frame header.
func appendServerHeader(dst []byte, op ws.OpCode, n int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n <= 0xFFFF:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// wsFrame returns payload as one complete, unmasked WebSocket frame.
func wsFrame(op ws.OpCode, payload []byte) []byte {
	b := make([]byte, 0, serverHeaderLen(len(payload))+len(payload))
	b = appendServerHeader(b, op, len(payload))
	return append(b, payload...)
}

// encodeFrame encodes a chatd frame as one complete binary WebSocket frame
// in a single allocation: the frame is appended after room for the longest
// header, and the header is then written right before it.
func encodeFrame(f wire.Frame) []byte {
	b := f.Append(make([]byte, maxServerHeader, maxServerHeader+48), 0)
	n := len(b) - maxServerHeader
	start := maxServerHeader - serverHeaderLen(n)
	appendServerHeader(b[start:start], ws.OpBinary, n)
	return b[start:]
}

// wsCloseFrame is a close frame carrying status.
func wsCloseFrame(status ws.StatusCode) []byte {
	return []byte{0x80 | byte(ws.OpClose), 2, byte(status >> 8), byte(status)}
}

package swarm

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"unsafe"

	"github.com/chatd-dev/chatd/wire"
)

// Client side of RFC 6455 on byte slices.

const (
	wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA

	keyLen    = 24 // base64 of 16 bytes
	acceptLen = 28 // base64 of a SHA-1

	// maxResponse bounds the upgrade response headers.
	maxResponse = 4096
	// maxMessage bounds a (reassembled) server message: a chatd frame is at
	// most wire.MaxFrameSize bytes.
	maxMessage = wire.MaxFrameSize
)

var crlfcrlf = []byte("\r\n\r\n")

// newKey fills key with a Sec-WebSocket-Key for 16 random bytes.
func newKey(key *[keyLen]byte, raw [16]byte) {
	base64.StdEncoding.Encode(key[:], raw[:])
}

// acceptFor computes the Sec-WebSocket-Accept the server must answer key with.
func acceptFor(key []byte) (out [acceptLen]byte) {
	var in [keyLen + len(wsGUID)]byte
	n := copy(in[:], key)
	copy(in[n:], wsGUID)
	sum := sha1.Sum(in[:n+len(wsGUID)])
	base64.StdEncoding.Encode(out[:], sum[:])
	return out
}

// upgradeResult is checkResponse's verdict.
type upgradeResult int

const (
	upgradeIncomplete upgradeResult = iota
	upgradeOK
	upgradeTooLarge
	upgradeBadStatus
	upgradeBadAccept
	upgradeMalformed
)

// checkResponse parses the HTTP response at the start of b: its length n
// (when complete), whether it accepts the upgrade for key, and for a
// refusal the status code.
func checkResponse(b, key []byte) (n int, res upgradeResult, status int) {
	end := bytes.Index(b, crlfcrlf)
	if end < 0 {
		if len(b) >= maxResponse {
			return 0, upgradeTooLarge, 0
		}
		return 0, upgradeIncomplete, 0
	}
	n = end + len(crlfcrlf)
	head := b[:end]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	// "HTTP/1.1 101 Switching Protocols"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return n, upgradeMalformed, 0
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return n, upgradeMalformed, 0
		}
		status = status*10 + int(c-'0')
	}
	if status != 101 {
		return n, upgradeBadStatus, status
	}
	want := acceptFor(key)
	var upgrade, connection, accept bool
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, val, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		val = bytes.TrimSpace(val)
		switch {
		case bytes.EqualFold(name, []byte("Upgrade")):
			upgrade = bytes.EqualFold(val, []byte("websocket"))
		case bytes.EqualFold(name, []byte("Connection")):
			connection = containsTokenFold(val, []byte("upgrade"))
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Accept")):
			accept = bytes.Equal(val, want[:])
		}
	}
	if !accept {
		return n, upgradeBadAccept, status
	}
	if !upgrade || !connection {
		return n, upgradeMalformed, status
	}
	return n, upgradeOK, status
}

// containsTokenFold reports whether the comma-separated list v holds tok.
func containsTokenFold(v, tok []byte) bool {
	for len(v) > 0 {
		var t []byte
		t, v, _ = bytes.Cut(v, []byte(","))
		if bytes.EqualFold(bytes.TrimSpace(t), tok) {
			return true
		}
	}
	return false
}

// appendClientFrame appends payload as one final, masked client frame.
func appendClientFrame(dst []byte, op byte, payload []byte, mask uint32) []byte {
	n := len(payload)
	switch {
	case n < 126:
		dst = append(dst, 0x80|op, 0x80|byte(n))
	case n <= 0xFFFF:
		dst = append(dst, 0x80|op, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|op, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	var m [4]byte
	binary.LittleEndian.PutUint32(m[:], mask)
	dst = append(dst, m[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	p := dst[start:]
	// Mask 8 bytes at a time, then the tail.
	m8 := uint64(mask) | uint64(mask)<<32
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^m8)
	}
	for ; i < len(p); i++ {
		p[i] ^= m[i&3]
	}
	return dst
}

// serverHeader is a parsed server frame header.
type serverHeader struct {
	fin    bool
	op     byte
	length int
	hlen   int // header length; 0: incomplete
}

// wsError is a WebSocket protocol violation by the server.
type wsError string

// parseServerHeader parses the frame header at the start of b. Server
// frames are never masked and have no reserved bits set.
func parseServerHeader(b []byte) (h serverHeader, err wsError) {
	if len(b) < 2 {
		return h, ""
	}
	h.fin = b[0]&0x80 != 0
	h.op = b[0] & 0x0F
	if b[0]&0x70 != 0 {
		return h, "rsv_bits"
	}
	if b[1]&0x80 != 0 {
		return h, "masked_server_frame"
	}
	hl := 2
	switch l := b[1] & 0x7F; l {
	case 126:
		if len(b) < 4 {
			return h, ""
		}
		h.length = int(binary.BigEndian.Uint16(b[2:4]))
		hl = 4
	case 127:
		if len(b) < 10 {
			return h, ""
		}
		u := binary.BigEndian.Uint64(b[2:10])
		if u > maxMessage {
			return h, "frame_too_large"
		}
		h.length = int(u)
		hl = 10
	default:
		h.length = int(l)
	}
	switch h.op {
	case opCont, opText, opBinary:
		if h.length > maxMessage {
			return h, "frame_too_large"
		}
	case opClose, opPing, opPong:
		if !h.fin || h.length > 125 {
			return h, "bad_control_frame"
		}
	default:
		return h, "reserved_opcode"
	}
	h.hlen = hl
	return h, ""
}

// sb views s as bytes without copying; the result must not be modified.
func sb(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

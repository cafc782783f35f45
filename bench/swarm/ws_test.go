package swarm

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gobwas/ws"

	"github.com/chatd-dev/chatd/wire"
)

// RFC 6455 section 1.3's example.
func TestAcceptFor(t *testing.T) {
	got := acceptFor([]byte("dGhlIHNhbXBsZSBub25jZQ=="))
	if string(got[:]) != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept %s", got)
	}
}

func TestCheckResponse(t *testing.T) {
	key := []byte("dGhlIHNhbXBsZSBub25jZQ==")
	ok := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
	for _, tc := range []struct {
		name   string
		resp   string
		n      int
		res    upgradeResult
		status int
	}{
		{"ok, frame pipelined after it", ok + "\x82\x02\x0c\x00", len(ok), upgradeOK, 101},
		{"incomplete", ok[:40], 0, upgradeIncomplete, 0},
		{"header case and lists", "HTTP/1.1 101 x\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n" +
			"sec-websocket-accept:s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", -1, upgradeOK, 101},
		{"refused", "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", -1, upgradeBadStatus, 404},
		{"bad accept", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: AAAA\r\n\r\n", -1, upgradeBadAccept, 101},
		{"no upgrade header", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", -1, upgradeMalformed, 101},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n", -1, upgradeMalformed, 0},
		{"too large", string(bytes.Repeat([]byte("x"), maxResponse)), 0, upgradeTooLarge, 0},
	} {
		n, res, status := checkResponse([]byte(tc.resp), key)
		want := tc.n
		if want < 0 {
			want = len(tc.resp)
		}
		if n != want || res != tc.res || status != tc.status {
			t.Errorf("%s: got (%d, %d, %d), want (%d, %d, %d)", tc.name, n, res, status, want, tc.res, tc.status)
		}
	}
}

// Client frames are masked correctly for every length encoding: gobwas/ws
// (the gateway's codec) reads them back.
func TestAppendClientFrame(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 125, 126, 1000, 0xFFFF, 0x10000, wire.MaxFrameSize} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		b := appendClientFrame([]byte("junk"), opBinary, payload, rand.Uint32())[4:]
		f, err := ws.ReadFrame(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		if !f.Header.Masked || !f.Header.Fin || f.Header.OpCode != ws.OpBinary {
			t.Fatalf("%d: header %+v", n, f.Header)
		}
		ws.Cipher(f.Payload, f.Header.Mask, 0)
		if !bytes.Equal(f.Payload, payload) {
			t.Fatalf("%d: payload differs", n)
		}
	}
}

func TestParseServerHeader(t *testing.T) {
	frame := func(op ws.OpCode, fin bool, n int) []byte {
		var buf bytes.Buffer
		_ = ws.WriteHeader(&buf, ws.Header{Fin: fin, OpCode: op, Length: int64(n)})
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name string
		b    []byte
		op   byte
		len  int
		hlen int
		err  wsError
	}{
		{"short binary", frame(ws.OpBinary, true, 5), opBinary, 5, 2, ""},
		{"16-bit length", frame(ws.OpBinary, true, 300), opBinary, 300, 4, ""},
		{"64-bit length", frame(ws.OpBinary, true, 0x10000), opBinary, 0x10000, 10, ""},
		{"incomplete", frame(ws.OpBinary, true, 300)[:3], 0, 0, 0, ""},
		{"too large", frame(ws.OpBinary, true, maxMessage+1), 0, 0, 0, "frame_too_large"},
		{"masked", []byte{0x82, 0x81, 1, 2, 3, 4, 0}, 0, 0, 0, "masked_server_frame"},
		{"rsv", []byte{0xC2, 0x00}, 0, 0, 0, "rsv_bits"},
		{"long ping", frame(ws.OpPing, true, 126), 0, 0, 0, "bad_control_frame"},
		{"reserved op", []byte{0x83, 0x00}, 0, 0, 0, "reserved_opcode"},
		{"close", frame(ws.OpClose, true, 2), opClose, 2, 2, ""},
	} {
		h, err := parseServerHeader(tc.b)
		if err != tc.err {
			t.Errorf("%s: err %q, want %q", tc.name, err, tc.err)
			continue
		}
		if err == "" && (h.hlen != tc.hlen || tc.hlen != 0 && (h.op != tc.op || h.length != tc.len)) {
			t.Errorf("%s: got %+v", tc.name, h)
		}
	}
}

// The timer heap keeps its order and every hidx through random schedules
// and removals.
func TestTimerHeap(t *testing.T) {
	const n = 2000
	r := &runner{conns: make([]conn, n)}
	for i := range r.conns {
		r.conns[i].hidx = -1
	}
	l := &loop{r: r}
	rng := rand.New(rand.NewPCG(1, 2))
	for step := 0; step < 50000; step++ {
		i := int32(rng.IntN(n))
		if rng.IntN(3) == 0 {
			l.unschedule(&r.conns[i])
		} else {
			l.schedule(i, rng.Int64N(1e6))
		}
	}
	for k, i := range l.heap {
		if r.conns[i].hidx != int32(k) {
			t.Fatalf("conn %d at %d has hidx %d", i, k, r.conns[i].hidx)
		}
	}
	var got []int64
	for len(l.heap) > 0 {
		c := &r.conns[l.heap[0]]
		got = append(got, c.when)
		l.unschedule(c)
		if c.hidx != -1 {
			t.Fatal("hidx not reset")
		}
	}
	if !slices.IsSorted(got) {
		t.Fatal("heap order broken")
	}
}

// Both client hot paths allocate nothing.
func BenchmarkAppendClientFrame(b *testing.B) {
	p := wire.Ping{Nonce: 12345}
	var f, w []byte
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		f = p.Append(f[:0], 0)
		w = appendClientFrame(w[:0], opBinary, f, uint32(i))
	}
}

func BenchmarkCheckResponse(b *testing.B) {
	key := []byte("dGhlIHNhbXBsZSBub25jZQ==")
	resp := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, res, _ := checkResponse(resp, key); res != upgradeOK {
			b.Fatal(res)
		}
	}
}

package store

import (
	"bytes"
	"testing"

	"github.com/chatd-dev/chatd/wire"
)

// FuzzMsgVal checks that message values round trip and that decoding
// arbitrary bytes fails cleanly instead of panicking.
func FuzzMsgVal(f *testing.F) {
	f.Add(uint64(1), uint64(2), uint64(1), "alice", "phone", "c1", []byte("hi"))
	f.Add(^uint64(0), uint64(0), uint64(3), "", "", "", []byte{})
	f.Add(uint64(0), ^uint64(0), ^uint64(0), "a\x00b", "d", "é", []byte{0, 0xff})
	f.Fuzz(func(t *testing.T, id, ts, kind uint64, sender, device, cmid string, body []byte) {
		in := Message{
			ConvID: 9, Seq: 4, MessageID: id, ServerTimeMS: ts, Kind: wire.MsgKind(kind),
			Sender: sender, SenderDevice: device, ClientMsgID: cmid, Body: body,
		}
		v := appendMsgVal(nil, &in)
		out := Message{ConvID: 9, Seq: 4}
		var d msgDecoder
		if err := d.decode(&out, v); err != nil {
			t.Fatalf("decode(encode(m)): %v", err)
		}
		if out.MessageID != id || out.ServerTimeMS != ts || out.Kind != in.Kind || out.Sender != sender ||
			out.SenderDevice != device || out.ClientMsgID != cmid || !bytes.Equal(out.Body, body) {
			t.Fatalf("round trip: got %+v, want %+v", out, in)
		}
		if len(out.Body) > 0 && &out.Body[0] == &v[len(v)-len(body)] {
			t.Fatal("decoded body aliases the value")
		}
		// Garbage: the value's tail, and the raw body, must not panic.
		for _, g := range [][]byte{v[len(v)/2:], body, v[:len(v)/2]} {
			_ = d.decode(&out, g)
			_, _ = decodeConvVal(g)
		}
	})
}

// FuzzConvVal round trips conversation values.
func FuzzConvVal(f *testing.F) {
	f.Add(uint8(1), uint64(123), "alice", "bob")
	f.Add(uint8(2), uint64(0), "", "")
	f.Fuzz(func(t *testing.T, kind uint8, created uint64, m1, m2 string) {
		in := Conversation{Kind: wire.ConvKind(kind), CreatedMS: created, Members: []string{m1, m2}}
		out, err := decodeConvVal(appendConvVal(nil, &in))
		if err != nil {
			t.Fatal(err)
		}
		if out.Kind != in.Kind || out.CreatedMS != created || len(out.Members) != 2 || out.Members[0] != m1 || out.Members[1] != m2 {
			t.Fatalf("round trip: got %+v, want %+v", out, in)
		}
	})
}

// TestKeysDoNotCollide checks the length prefixes: string boundaries are
// part of the key.
func TestKeysDoNotCollide(t *testing.T) {
	if bytes.Equal(appendDedupeKey(nil, 1, "ab", "c"), appendDedupeKey(nil, 1, "a", "bc")) {
		t.Error("dedupe keys collide")
	}
	if bytes.Equal(appendUserConvKey(nil, "a", 0x0162000000000000), appendUserConvKey(nil, "ab", 0)) {
		t.Error("user_convs keys collide")
	}
	// A user's prefix scan must not see a longer user id.
	p := appendUserConvPrefix(nil, "a")
	if k := appendUserConvKey(nil, "ab", 5); bytes.HasPrefix(k, p) {
		t.Error("user \"a\"'s prefix covers user \"ab\"")
	}
	// Messages sort by seq within a conversation, conversations by id.
	if bytes.Compare(appendMsgKey(nil, 1, 255), appendMsgKey(nil, 1, 256)) >= 0 ||
		bytes.Compare(appendMsgKey(nil, 1, ^uint64(0)), appendMsgKey(nil, 2, 0)) >= 0 {
		t.Error("message keys out of order")
	}
}

package store

import (
	"bytes"
	"slices"
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

// FuzzConvVal round trips conversation values, with and without the
// group fields, and checks that decoding a cut value fails cleanly.
func FuzzConvVal(f *testing.F) {
	f.Add(uint8(1), uint64(123), "alice", "bob", "", "")
	f.Add(uint8(2), uint64(0), "", "", "", "")
	f.Add(uint8(2), ^uint64(0), "alice", "bob", "The group \x00é", "alice")
	f.Add(uint8(2), uint64(7), "a", "b", "", "b") // admins without a name
	f.Fuzz(func(t *testing.T, kind uint8, created uint64, m1, m2, name, admin string) {
		in := Conversation{Kind: wire.ConvKind(kind), CreatedMS: created, Members: []string{m1, m2}, Name: name}
		if admin != "" {
			in.Admins = []string{admin, m1}
		}
		v := appendConvVal(nil, &in)
		out, err := decodeConvVal(v)
		if err != nil {
			t.Fatal(err)
		}
		if out.Kind != in.Kind || out.CreatedMS != created || !slices.Equal(out.Members, in.Members) ||
			out.Name != name || !slices.Equal(out.Admins, in.Admins) {
			t.Fatalf("round trip: got %+v, want %+v", out, in)
		}
		if want := name != "" || admin != ""; (v[0] == convFormatGroup) != want {
			t.Fatalf("format byte %d for name %q admins %q", v[0], name, in.Admins)
		}
		for n := range len(v) {
			if _, err := decodeConvVal(v[:n]); err == nil {
				t.Fatalf("decode of the value cut at %d of %d bytes succeeded", n, len(v))
			}
		}
	})
}

// TestConvValLayouts pins both conversation value layouts byte for byte:
// format 1 (what stores before groups wrote, and still what a conversation
// without name and admins is written as) decodes with an empty name and no
// admins; format 2 appends the name and the admins.
func TestConvValLayouts(t *testing.T) {
	v1 := []byte{
		0x01,       // format 1
		0x01,       // kind: direct
		0xe8, 0x07, // created_ms 1000
		0x02,                      // 2 members
		0x01, 'a', 0x02, 'b', 'c', // "a", "bc"
	}
	v2 := []byte{
		0x02,       // format 2
		0x02,       // kind: group
		0xe8, 0x07, // created_ms 1000
		0x02,                      // 2 members
		0x01, 'a', 0x02, 'b', 'c', // "a", "bc"
		0x03, 'f', 'u', 'n', // name "fun"
		0x01,           // 1 admin
		0x02, 'b', 'c', // "bc"
	}
	for _, tc := range []struct {
		name string
		v    []byte
		want Conversation
	}{
		{"format 1", v1, Conversation{Kind: wire.ConvDirect, CreatedMS: 1000, Members: []string{"a", "bc"}}},
		{"format 2", v2, Conversation{Kind: wire.ConvGroup, CreatedMS: 1000, Members: []string{"a", "bc"}, Name: "fun", Admins: []string{"bc"}}},
	} {
		got, err := decodeConvVal(tc.v)
		if err != nil {
			t.Fatalf("%s: decode: %v", tc.name, err)
		}
		if got.Kind != tc.want.Kind || got.CreatedMS != tc.want.CreatedMS || !slices.Equal(got.Members, tc.want.Members) ||
			got.Name != tc.want.Name || !slices.Equal(got.Admins, tc.want.Admins) {
			t.Errorf("%s: decode = %+v, want %+v", tc.name, got, tc.want)
		}
		if enc := appendConvVal(nil, &tc.want); !bytes.Equal(enc, tc.v) {
			t.Errorf("%s: encode = % x, want % x", tc.name, enc, tc.v)
		}
	}
	// A group created before groups had names (or one whose name and
	// admins were cleared) is written in format 1 too.
	plain := Conversation{Kind: wire.ConvGroup, CreatedMS: 5, Members: []string{"a"}}
	if v := appendConvVal(nil, &plain); v[0] != valueFormat {
		t.Errorf("conversation without name and admins written in format %d, want 1", v[0])
	}
	for _, bad := range [][]byte{
		{0x03, 0x01, 0x00, 0x00},                   // unknown format
		append(slices.Clone(v1), 0x00),             // format 1 with trailing bytes
		{0x02, 0x02, 0x00, 0x00, 0x00, 0x05, 'x'},  // name longer than the value
		{0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x09}, // more admins than bytes
		{0x02, 0x02, 0x00, 0x00, 0x00},             // format 2 without the group fields
	} {
		if c, err := decodeConvVal(bad); err == nil {
			t.Errorf("decode(% x) = %+v, want an error", bad, c)
		}
	}
}

// TestBatchConvsHoldsGroups: the set a Commit holds includes the groups it
// updates, so Commits updating one group run one at a time.
func TestBatchConvsHoldsGroups(t *testing.T) {
	b := &Batch{
		Messages:      []Message{{ConvID: 5, Seq: 1}},
		Pointers:      []PointerUpdate{{ConvID: 3}},
		Conversations: []Conversation{{ID: 5}},
		GroupUpdates:  []GroupUpdate{{Conv: Conversation{ID: 9}}, {Conv: Conversation{ID: 1}}, {Conv: Conversation{ID: 9}}},
	}
	if got := batchConvs(nil, b); !slices.Equal(got, []uint64{1, 3, 5, 9}) {
		t.Errorf("batchConvs = %v, want [1 3 5 9]", got)
	}
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

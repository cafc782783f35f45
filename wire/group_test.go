package wire

import (
	"fmt"
	"testing"
)

func groupEventSamples() []GroupEvent {
	users := make([][]byte, MaxGroupChange)
	for i := range users {
		users[i] = rep(byte('a'+i%26), MaxIDLen)
	}
	return []GroupEvent{
		{Op: GroupCreated, Actor: []byte("alice"), Name: []byte("hikers"), Users: [][]byte{[]byte("bob"), []byte("carol")}},
		{Op: GroupLeave, Actor: []byte("alice"), Users: [][]byte{[]byte("bob")}},
		{Op: GroupRename, Actor: []byte("bob"), Name: []byte("hikers 2026")},
		{Op: GroupDemote, Actor: rep('x', MaxIDLen), Name: rep('n', MaxGroupNameLen), Users: users},
	}
}

func TestGroupEventRoundTrip(t *testing.T) {
	var d GroupEvent
	for _, e := range groupEventSamples() {
		if err := d.Decode(e.Append(nil)); err != nil {
			t.Fatalf("%v: %v", e.Op, err)
		}
		if fmt.Sprint(d) != fmt.Sprint(e) {
			t.Fatalf("decoded %v, want %v", d, e)
		}
	}
	// Users shrink when a shorter event is decoded into the same struct.
	if err := d.Decode((&GroupEvent{Op: GroupRename, Actor: []byte("a"), Name: []byte("n")}).Append(nil)); err != nil || len(d.Users) != 0 {
		t.Fatalf("after a shorter event: %v users, %v", len(d.Users), err)
	}
}

func TestGroupEventInvalid(t *testing.T) {
	ok := (&GroupEvent{Op: GroupAdd, Actor: []byte("alice"), Users: [][]byte{[]byte("bob")}}).Append(nil)
	tooMany := (&GroupEvent{Op: GroupAdd, Actor: []byte("a"), Users: make([][]byte, MaxGroupChange+1)}).Append(nil)
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"empty", nil},
		{"op 0", append([]byte{0}, ok[1:]...)},
		{"op 8", append([]byte{8}, ok[1:]...)},
		{"empty actor", (&GroupEvent{Op: GroupAdd}).Append(nil)},
		{"empty user", (&GroupEvent{Op: GroupAdd, Actor: []byte("a"), Users: [][]byte{{}}}).Append(nil)},
		{"name too long", (&GroupEvent{Op: GroupRename, Actor: []byte("a"), Name: rep('n', MaxGroupNameLen+1)}).Append(nil)},
		{"too many users", tooMany},
		{"truncated", ok[:len(ok)-1]},
	} {
		var e GroupEvent
		err := e.Decode(tc.body)
		if CodeOf(err) != CodeMalformedFrame {
			t.Errorf("%s: %v, want malformed_frame", tc.name, err)
		}
	}
	for i := range ok {
		var e GroupEvent
		if err := e.Decode(ok[:i]); err == nil {
			t.Errorf("prefix of %d bytes decoded", i)
		}
	}
}

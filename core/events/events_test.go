package events

import (
	"bytes"
	"testing"

	"github.com/chatd-dev/chatd/wire"
)

func TestReceiptRoundTrip(t *testing.T) {
	in := Receipt{Conv: 1 << 62, Kind: wire.ReceiptRead, Seq: 300, User: []byte("bob"), Device: []byte("phone")}
	kind, body, err := Split(in.Append(nil))
	if err != nil || kind != KindReceipt {
		t.Fatalf("split: %v %v", kind, err)
	}
	var out Receipt
	if err := out.Decode(body); err != nil {
		t.Fatal(err)
	}
	if out.Conv != in.Conv || out.Kind != in.Kind || out.Seq != in.Seq || !bytes.Equal(out.User, in.User) || !bytes.Equal(out.Device, in.Device) {
		t.Fatalf("%+v != %+v", out, in)
	}
	// Every truncation is an error, never a panic.
	full := in.Append(nil)[1:]
	for i := 0; i < len(full); i++ {
		if err := out.Decode(full[:i]); err == nil {
			t.Fatalf("truncated at %d decoded", i)
		}
	}
	if _, _, err := Split(nil); err == nil {
		t.Fatal("empty record split")
	}
	if out.Decode(full) != nil || out.Group {
		t.Fatal("a record without the flags byte is not a group's")
	}
	in.Group = true
	_, body, _ = Split(in.Append(nil))
	if err := out.Decode(body); err != nil || !out.Group || !bytes.Equal(out.Device, in.Device) {
		t.Fatalf("group flag: %+v %v", out, err)
	}
}

func TestMsgRecord(t *testing.T) {
	frame := []byte{byte(wire.TypeMsg), 0, 1, 2}
	kind, body, _ := Split(AppendMsg(nil, frame))
	if kind != KindMsg || !bytes.Equal(body, frame) {
		t.Fatalf("%v %v", kind, body)
	}
}

func TestTypingRecord(t *testing.T) {
	frame := (&wire.Typing{ConvID: 9, State: wire.TypingStarted, User: []byte("bob")}).Append(nil, 0)
	kind, body, _ := Split(AppendTyping(nil, frame, []byte("phone")))
	if kind != KindTyping {
		t.Fatalf("kind %v", kind)
	}
	f, dev, err := DecodeTyping(body)
	if err != nil || !bytes.Equal(f, frame) || string(dev) != "phone" {
		t.Fatalf("%x %q %v", f, dev, err)
	}
	for i := range body {
		if _, _, err := DecodeTyping(body[:i]); err == nil {
			t.Fatalf("truncated at %d decoded", i)
		}
	}
}

package wire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// fieldsOf renders a frame struct (or an Envelope, or any struct of the
// same field kinds) as the JSON-ready object used by testdata/vectors.json:
// snake_case keys in the layout's names and order, integers as numbers
// (decimal strings above 2^53, where JSON readers lose precision), byte
// strings as UTF-8 strings when printable and under "<name>_hex" otherwise.
//
// It is also the equality the tests use (see sameFields): comparing these
// renderings ignores the difference between nil and empty slices, which the
// wire cannot carry.
func fieldsOf(v any) ordered {
	rv := reflect.Indirect(reflect.ValueOf(v))
	rt := rv.Type()
	var m ordered
	for i := range rt.NumField() {
		sf := rt.Field(i)
		if !sf.IsExported() {
			continue
		}
		m.putField(snake(sf.Name), rv.Field(i))
	}
	return m
}

// ordered is a JSON object that keeps its keys in insertion order.
type ordered []kv

type kv struct {
	k string
	v any
}

func (m *ordered) put(k string, v any) { *m = append(*m, kv{k, v}) }

func (m ordered) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range m {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(e.k)
		v, err := json.Marshal(e.v)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func (m *ordered) putField(name string, fv reflect.Value) {
	switch fv.Kind() {
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		m.put(name, jsonUint(fv.Uint()))
	case reflect.Bool:
		m.put(name, fv.Bool())
	case reflect.Slice:
		switch elem := fv.Type().Elem(); {
		case elem.Kind() == reflect.Uint8: // []byte
			m.putBytes(name, fv.Bytes())
		case elem.Kind() == reflect.Slice: // [][]byte
			list := make([][]byte, fv.Len())
			for i := range list {
				list[i] = fv.Index(i).Bytes()
			}
			m.putBytesList(name, list)
		case elem.Kind() == reflect.Uint64: // []uint64
			list := make([]any, fv.Len())
			for i := range list {
				list[i] = jsonUint(fv.Index(i).Uint())
			}
			m.put(name, list)
		default: // []struct
			list := make([]any, fv.Len())
			for i := range list {
				list[i] = fieldsOf(fv.Index(i).Interface())
			}
			m.put(name, list)
		}
	default:
		panic("fieldsOf: unsupported field kind " + fv.Kind().String())
	}
}

func jsonUint(u uint64) any {
	if u > 1<<53 {
		return fmt.Sprint(u)
	}
	return u
}

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func (m *ordered) putBytes(name string, b []byte) {
	if printable(b) {
		m.put(name, string(b))
	} else {
		m.put(name+"_hex", hex.EncodeToString(b))
	}
}

func (m *ordered) putBytesList(name string, list [][]byte) {
	all := true
	for _, b := range list {
		all = all && printable(b)
	}
	out := make([]string, len(list))
	for i, b := range list {
		if all {
			out[i] = string(b)
		} else {
			out[i] = hex.EncodeToString(b)
		}
	}
	if all {
		m.put(name, out)
	} else {
		m.put(name+"_hex", out)
	}
}

// snake converts a Go field name to the layout's name: ClientMsgID ->
// client_msg_id, ServerTimeMS -> server_time_ms, UpToSeq -> up_to_seq.
// A run of capitals is one word.
func snake(s string) string {
	var b strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		if unicode.IsUpper(r) && i > 0 {
			prevLower := unicode.IsLower(rs[i-1])
			nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1])
			if prevLower || (unicode.IsUpper(rs[i-1]) && nextLower) {
				b.WriteByte('_')
			}
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// canon renders fields as canonical JSON (sorted keys) for comparison.
func canon(t testing.TB, fields any) string {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	// Re-parse with UseNumber so a map built in Go and one read from a
	// file marshal identically.
	var v any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(v)
	return string(b)
}

func sameFields(a, b any) bool {
	return reflect.DeepEqual(fieldsOf(a), fieldsOf(b))
}

// sample is one frame used by the round-trip, truncation, trailing-bytes
// and allocation tests and as a fuzz seed.
type sample struct {
	name  string
	flags Flags
	f     Frame
}

func rep(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }

const maxU = math.MaxUint64

// samples returns typical, zero and edge values for every frame type.
func samples() []sample {
	members := make([][]byte, MaxMembers)
	for i := range members {
		members[i] = fmt.Appendf(nil, "u%07d", i) // 8 bytes: 1024 fit in a frame
	}
	// As many maximum-length members (each with its role byte) as fit in
	// one frame.
	fullMembers := make([][]byte, (MaxFrameSize-HeaderLen-5*10-1-3-1-3)/(2+MaxIDLen))
	for i := range fullMembers {
		fullMembers[i] = rep(byte('a'+i%26), MaxIDLen)
	}
	changeUsers := make([][]byte, MaxGroupChange)
	for i := range changeUsers {
		changeUsers[i] = rep(byte('a'+i%26), MaxIDLen)
	}
	cursors := make([]Cursor, MaxResumeConvs)
	for i := range cursors {
		cursors[i] = Cursor{ConvID: maxU - uint64(i), LastSeq: maxU}
	}
	return []sample{
		{"hello", 0, &Hello{MinVersion: 1, MaxVersion: 1, Token: []byte("eyJhbGciOiJIUzI1NiJ9.e30.sig"), DeviceID: []byte("ios-7f3a"), Caps: CapZstd}},
		{"hello/min", 0, &Hello{DeviceID: []byte("d")}},
		{"hello/max", 0, &Hello{MinVersion: maxU, MaxVersion: maxU, Token: rep('t', MaxTokenLen), DeviceID: rep('d', MaxIDLen), Caps: maxU}},
		{"welcome", 0, &Welcome{Version: 1, Caps: CapZstd, HeartbeatMS: 25000, IdleTimeoutMS: 60000, MaxFrame: MaxFrameSize, ServerTimeMS: 1767225600000, UserID: []byte("alice"), DeviceID: []byte("ios-7f3a")}},
		{"welcome/zero", 0, &Welcome{}},
		{"welcome/max", 0, &Welcome{Version: maxU, Caps: maxU, HeartbeatMS: maxU, IdleTimeoutMS: maxU, MaxFrame: maxU, ServerTimeMS: maxU, UserID: rep('u', MaxIDLen), DeviceID: rep('d', MaxIDLen)}},
		{"send", 0, &Send{ConvID: 42, ClientMsgID: []byte("c-0001"), Kind: KindText, Body: []byte("hello, world")}},
		{"send/zero", 0, &Send{}},
		{"send/max", 0, &Send{ConvID: maxU, ClientMsgID: rep('c', MaxIDLen), Kind: MsgKind(maxU), Body: rep('b', MaxBodySize)}},
		{"send/binary", 0, &Send{ConvID: 7, ClientMsgID: []byte{0, 1, 2}, Kind: KindBinary, Body: []byte{0xde, 0xad, 0xbe, 0xef, 0}}},
		{"ack", 0, &Ack{ClientMsgID: []byte("c-0001"), ConvID: 42, MessageID: 7263518230475964417, Seq: 17, ServerTimeMS: 1767225600123}},
		{"ack/zero", 0, &Ack{}},
		{"ack/max", 0, &Ack{ClientMsgID: rep('c', MaxIDLen), ConvID: maxU, MessageID: maxU, Seq: maxU, ServerTimeMS: maxU}},
		{"msg", 0, &Msg{ConvID: 42, MessageID: 7263518230475964417, Seq: 17, ServerTimeMS: 1767225600123, Sender: []byte("alice"), SenderDevice: []byte("ios-7f3a"), ClientMsgID: []byte("c-0001"), Kind: KindText, Body: []byte("hello, world")}},
		{"msg/replay", FlagReplay, &Msg{ConvID: 42, MessageID: 1, Seq: 1, ServerTimeMS: 1, Sender: []byte("bob"), SenderDevice: []byte("web"), ClientMsgID: []byte("x"), Kind: KindSystem, Body: []byte("bob joined")}},
		{"msg/zero", 0, &Msg{}},
		{"msg/max", FlagReplay, &Msg{ConvID: maxU, MessageID: maxU, Seq: maxU, ServerTimeMS: maxU, Sender: rep('s', MaxIDLen), SenderDevice: rep('d', MaxIDLen), ClientMsgID: rep('c', MaxIDLen), Kind: MsgKind(maxU), Body: rep('b', MaxBodySize)}},
		{"receipt", 0, &Receipt{ConvID: 42, Kind: ReceiptRead, UpToSeq: 17}},
		{"receipt/delivered", 0, &Receipt{ConvID: 42, Kind: ReceiptDelivered, UpToSeq: 17, User: []byte("bob")}},
		{"receipt/max", 0, &Receipt{ConvID: maxU, Kind: ReceiptRead, UpToSeq: maxU, User: rep('u', MaxIDLen)}},
		{"resume", 0, &Resume{ReqID: 1, Cursors: []Cursor{{ConvID: 42, LastSeq: 17}, {ConvID: 43, LastSeq: 0}}}},
		{"resume/empty", 0, &Resume{}},
		{"resume/max", 0, &Resume{ReqID: maxU, Cursors: cursors}},
		{"resumed", 0, &Resumed{ReqID: 1, Conversations: 2, Messages: 1003, Truncated: true}},
		{"resumed/zero", 0, &Resumed{}},
		{"resumed/max", 0, &Resumed{ReqID: maxU, Conversations: maxU, Messages: maxU, Truncated: true}},
		{"history", 0, &History{ReqID: 2, ConvID: 42, BeforeSeq: 100, Limit: 50}},
		{"history/zero", 0, &History{}},
		{"history/max", 0, &History{ReqID: maxU, ConvID: maxU, BeforeSeq: maxU, Limit: maxU}},
		{"history_end", 0, &HistoryEnd{ReqID: 2, ConvID: 42, Count: 50, HasMore: true}},
		{"history_end/zero", 0, &HistoryEnd{}},
		{"history_end/max", 0, &HistoryEnd{ReqID: maxU, ConvID: maxU, Count: maxU, HasMore: true}},
		{"ping", 0, &Ping{Nonce: 300}},
		{"ping/zero", 0, &Ping{}},
		{"ping/max", 0, &Ping{Nonce: maxU}},
		{"pong", 0, &Pong{Nonce: 300}},
		{"pong/max", 0, &Pong{Nonce: maxU}},
		{"error", 0, &Error{Code: CodeSeqBeyondLatest, RefType: TypeReceipt, ConvID: 42, Message: []byte("up_to_seq 99 > latest 17")}},
		{"error/send", 0, &Error{Code: CodeNotMember, RefType: TypeSend, ConvID: 42, ClientMsgID: []byte("c-0001"), Message: []byte("not a member")}},
		{"error/zero", 0, &Error{}},
		{"error/max", 0, &Error{Code: Code(maxU), RefType: 0xFF, ReqID: maxU, ConvID: maxU, ClientMsgID: rep('c', MaxIDLen), Message: rep('m', MaxTextLen)}},
		{"goaway", 0, &Goaway{Code: CodeShuttingDown, ReconnectAfterMS: 1500, Message: []byte("draining")}},
		{"goaway/zero", 0, &Goaway{}},
		{"goaway/max", 0, &Goaway{Code: Code(maxU), ReconnectAfterMS: maxU, Message: rep('m', MaxTextLen)}},
		{"open_direct", 0, &OpenDirect{ReqID: 3, Peer: []byte("bob")}},
		{"open_direct/zero", 0, &OpenDirect{}},
		{"open_direct/max", 0, &OpenDirect{ReqID: maxU, Peer: rep('p', MaxIDLen)}},
		{"conv", 0, &Conv{ReqID: 3, ConvID: 42, Kind: ConvDirect, LastSeq: 17, Members: [][]byte{[]byte("alice"), []byte("bob")}, MemberTotal: 2, Roles: []byte{0, 0}}},
		{"conv/group_empty", 0, &Conv{Kind: ConvGroup, Roles: []byte{}}},
		{"conv/group", 0, &Conv{ReqID: 9, ConvID: 43, Kind: ConvGroup, LastSeq: 1, Members: [][]byte{[]byte("alice"), []byte("bob"), []byte("carol")}, Name: []byte("hikers"), MemberTotal: 700, Roles: []byte{RoleAdmin, RoleMember, RoleAdmin}}},
		{"conv/max_members", 0, &Conv{ReqID: maxU, ConvID: maxU, Kind: ConvGroup, LastSeq: maxU, Members: members, Name: rep('n', MaxGroupNameLen), MemberTotal: maxU, Roles: make([]byte, len(members))}},
		{"conv/max_len_members", 0, &Conv{ReqID: maxU, ConvID: maxU, Kind: ConvGroup, LastSeq: maxU, Members: fullMembers, MemberTotal: uint64(len(fullMembers)), Roles: make([]byte, len(fullMembers))}},
		{"create_group", 0, &CreateGroup{ReqID: 5, Name: []byte("hikers"), Members: [][]byte{[]byte("bob"), []byte("carol")}}},
		{"create_group/alone", 0, &CreateGroup{ReqID: 5, Name: []byte("me")}},
		{"create_group/max", 0, &CreateGroup{ReqID: maxU, Name: rep('n', MaxGroupNameLen), Members: changeUsers}},
		{"group_change", 0, &GroupChange{ReqID: 6, ConvID: 43, Op: GroupAdd, Users: [][]byte{[]byte("dave")}}},
		{"group_change/rename", 0, &GroupChange{ReqID: 7, ConvID: 43, Op: GroupRename, Name: []byte("hikers 2026")}},
		{"group_change/leave", 0, &GroupChange{ConvID: 43, Op: GroupLeave}},
		{"group_change/max", 0, &GroupChange{ReqID: maxU, ConvID: maxU, Op: GroupDemote, Name: rep('n', MaxGroupNameLen), Users: changeUsers}},
		{"typing", 0, &Typing{ConvID: 42, State: TypingStarted}},
		{"typing/max", 0, &Typing{ConvID: maxU, State: TypingStopped, User: rep('u', MaxIDLen)}},
		{"focus", 0, &Focus{ConvID: 42}},
		{"focus/zero", 0, &Focus{}},
		{"presence", 0, &Presence{ConvID: 42, User: []byte("bob"), Online: true, LastSeenMS: 1795000000000}},
		{"presence/approx", 0, &Presence{ConvID: 42, User: []byte("bob"), Approx: ApproxLongAgo}},
	}
}

// newOf returns a fresh zero frame of the same type as f.
func newOf(f Frame) Frame {
	return reflect.New(reflect.TypeOf(f).Elem()).Interface().(Frame)
}

// wantCode fails the test unless err is a *ProtoError with code want.
func wantCode(t testing.TB, err error, want Code, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, want)
	}
	if _, ok := err.(*ProtoError); !ok {
		t.Fatalf("%s: error %T %v is not *ProtoError", what, err, err)
	}
	if got := CodeOf(err); got != want {
		t.Fatalf("%s: code %v (%v), want %v", what, got, err, want)
	}
}

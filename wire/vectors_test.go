package wire

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the generator in vectors_test.go")

const vectorsFile = "testdata/vectors.json"

// vector is one entry of testdata/vectors.json; testdata/README.md
// documents the format for implementers in other languages.
type vector struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Type is the frame type name ("SEND"), or "ENVELOPE" / "BATCH" for the
	// internal records. For invalid frames it names the type byte if there
	// is one ("TYPE_0x7F" for an unknown type), "" otherwise.
	Type string `json:"type"`
	// Flags is the header's flags byte, for frames.
	Flags *uint8 `json:"flags,omitempty"`
	Hex   string `json:"hex"`
	// Fields are the decoded fields of a valid vector.
	Fields json.RawMessage `json:"fields,omitempty"`
	// Error and Code are the expected error of an invalid vector.
	Error string `json:"error,omitempty"`
	Code  Code   `json:"code,omitempty"`
}

// vectorCase is a generator entry: the bytes and, for valid vectors, the
// struct they encode.
type vectorCase struct {
	name, desc string
	kind       string // "" for a frame, "ENVELOPE", "BATCH"
	b          []byte
	src        any  // expected fields; nil for invalid vectors
	err        Code // expected error code for invalid vectors
}

// batchFields is the decoded form of a batch, for fieldsOf.
type batchFields struct {
	Conns []uint64
	Frame []byte
}

func vectorCases() []vectorCase {
	var cs []vectorCase
	valid := func(name, desc string, f Frame, flags Flags) {
		cs = append(cs, vectorCase{name: name, desc: desc, b: f.Append(nil, flags), src: f})
	}
	invalid := func(name, desc string, b []byte, code Code) {
		cs = append(cs, vectorCase{name: name, desc: desc, b: b, err: code})
	}

	// One valid vector per frame type, in type order, then edge cases.
	hello := &Hello{MinVersion: 1, MaxVersion: 1, Token: []byte("eyJhbGciOiJFZERTQSJ9.e30.c2ln"), DeviceID: []byte("ios-7f3a"), Caps: CapZstd}
	valid("hello", "client opens: versions 1..1, a token, device id, zstd capability", hello, 0)
	valid("welcome", "server accepts: version 1, zstd, heartbeat 25 s, idle timeout 60 s", &Welcome{Version: 1, Caps: CapZstd, HeartbeatMS: 25000, IdleTimeoutMS: 60000, MaxFrame: MaxFrameSize, ServerTimeMS: 1767225600000, UserID: []byte("alice"), DeviceID: []byte("ios-7f3a")}, 0)
	valid("send", "a text message to conversation 42", &Send{ConvID: 42, ClientMsgID: []byte("c-0001"), Kind: KindText, Body: []byte("hello, world")}, 0)
	valid("ack", "the SEND above persisted as message 7263518230475964417 at seq 17", &Ack{ClientMsgID: []byte("c-0001"), ConvID: 42, MessageID: 7263518230475964417, Seq: 17, ServerTimeMS: 1767225600123}, 0)
	valid("msg", "live delivery of the message above", &Msg{ConvID: 42, MessageID: 7263518230475964417, Seq: 17, ServerTimeMS: 1767225600123, Sender: []byte("alice"), SenderDevice: []byte("ios-7f3a"), ClientMsgID: []byte("c-0001"), Kind: KindText, Body: []byte("hello, world")}, 0)
	valid("receipt", "client: read up to seq 17 (user empty)", &Receipt{ConvID: 42, Kind: ReceiptRead, UpToSeq: 17}, 0)
	valid("resume", "client holds conversation 42 up to seq 17 and 43 up to 0", &Resume{ReqID: 1, Cursors: []Cursor{{ConvID: 42, LastSeq: 17}, {ConvID: 43, LastSeq: 0}}}, 0)
	valid("resumed", "end of the RESUME answer: 2 conversations, 1003 messages, truncated", &Resumed{ReqID: 1, Conversations: 2, Messages: 1003, Truncated: true}, 0)
	valid("history", "50 messages of conversation 42 before seq 100", &History{ReqID: 2, ConvID: 42, BeforeSeq: 100, Limit: 50}, 0)
	valid("history_end", "end of the HISTORY answer: 50 messages, more exist", &HistoryEnd{ReqID: 2, ConvID: 42, Count: 50, HasMore: true}, 0)
	valid("ping", "heartbeat with nonce 300 (two-byte varint)", &Ping{Nonce: 300}, 0)
	valid("pong", "answer to the PING above", &Pong{Nonce: 300}, 0)
	valid("error", "RECEIPT above the latest seq", &Error{Code: CodeSeqBeyondLatest, RefType: TypeReceipt, ConvID: 42, Message: []byte("up_to_seq 99 > latest 17")}, 0)
	valid("goaway", "server shutting down, reconnect after 1.5 s", &Goaway{Code: CodeShuttingDown, ReconnectAfterMS: 1500, Message: []byte("draining")}, 0)
	valid("open_direct", "open the 1:1 conversation with bob", &OpenDirect{ReqID: 3, Peer: []byte("bob")}, 0)
	valid("conv", "the 1:1 conversation between alice and bob", &Conv{ReqID: 3, ConvID: 42, Kind: ConvDirect, LastSeq: 17, Members: [][]byte{[]byte("alice"), []byte("bob")}, MemberTotal: 2, Roles: []byte{RoleMember, RoleMember}}, 0)
	valid("conv_group", "group \"hikers\" of 700 members, the first 3 listed (alice and carol admins)", &Conv{ReqID: 9, ConvID: 43, Kind: ConvGroup, LastSeq: 1, Members: [][]byte{[]byte("alice"), []byte("bob"), []byte("carol")}, Name: []byte("hikers"), MemberTotal: 700, Roles: []byte{RoleAdmin, RoleMember, RoleAdmin}}, 0)
	valid("create_group", "create the group \"hikers\" with bob and carol", &CreateGroup{ReqID: 5, Name: []byte("hikers"), Members: [][]byte{[]byte("bob"), []byte("carol")}}, 0)
	valid("group_change", "add dave to group 43", &GroupChange{ReqID: 6, ConvID: 43, Op: GroupAdd, Users: [][]byte{[]byte("dave")}}, 0)
	valid("typing_c2s", "client: typing in conversation 42", &Typing{ConvID: 42, State: TypingStarted}, 0)
	valid("typing_s2c", "server: bob stopped typing in conversation 42", &Typing{ConvID: 42, State: TypingStopped, User: []byte("bob")}, 0)
	valid("focus", "conversation 42 is on screen", &Focus{ConvID: 42}, 0)
	valid("focus_none", "no conversation on screen", &Focus{}, 0)
	valid("presence_online", "in conversation 42, bob is online (exact)", &Presence{ConvID: 42, User: []byte("bob"), Online: true, LastSeenMS: 1795000000000}, 0)
	valid("presence_approx", "bob was seen within a week (his setting hides the exact time)", &Presence{ConvID: 42, User: []byte("bob"), Approx: ApproxWithinWeek}, 0)

	valid("msg_replay", "a MSG answering RESUME or HISTORY (FlagReplay): bob's rename of group 42, a system message", &Msg{ConvID: 42, MessageID: 7263518230475964418, Seq: 18, ServerTimeMS: 1767225600999, Sender: []byte("bob"), SenderDevice: []byte("web-1"), ClientMsgID: []byte("~g/3/77"), Kind: KindSystem, Body: (&GroupEvent{Op: GroupRename, Actor: []byte("bob"), Name: []byte("hikers")}).Append(nil)}, FlagReplay)
	valid("receipt_from_server", "server: bob delivered up to seq 17", &Receipt{ConvID: 42, Kind: ReceiptDelivered, UpToSeq: 17, User: []byte("bob")}, 0)
	valid("send_binary_body", "binary body and empty client_msg_id (the codec allows it; the server refuses it)", &Send{ConvID: 7, Kind: KindBinary, Body: []byte{0xde, 0xad, 0xbe, 0xef, 0x00}}, 0)
	valid("ping_max_uint64", "the largest uvarint: 10 bytes", &Ping{Nonce: maxU}, 0)
	valid("ack_zero_values", "every integer 0, every string empty", &Ack{}, 0)
	valid("resume_empty", "no cursors", &Resume{ReqID: 5}, 0)
	valid("conv_group_no_members", "group with an empty member list", &Conv{ReqID: 4, ConvID: 1 << 60, Kind: ConvGroup, LastSeq: 0, Roles: []byte{}}, 0)
	valid("welcome_ids_at_limit", "user_id and device_id of MaxIDLen (64) bytes", &Welcome{Version: 1, HeartbeatMS: 25000, IdleTimeoutMS: 60000, MaxFrame: MaxFrameSize, UserID: rep('u', MaxIDLen), DeviceID: rep('d', MaxIDLen)}, 0)

	// Forward compatibility and encodings a receiver must accept.
	trailing := hello.Append(nil, 0)
	trailing = append(trailing, 0x05, 0xFF, 0x00)
	cs = append(cs, vectorCase{name: "hello_trailing_bytes", desc: "HELLO with 3 bytes after caps: a receiver ignores them", b: trailing, src: hello})
	cs = append(cs, vectorCase{name: "ping_non_minimal_varint", desc: "nonce 1 encoded in 3 bytes (0x81 0x80 0x00): accepted", b: []byte{byte(TypePing), 0, 0x81, 0x80, 0x00}, src: &Ping{Nonce: 1}})

	// Compression.
	big := &Msg{ConvID: 42, MessageID: 7263518230475964419, Seq: 19, ServerTimeMS: 1767225601000, Sender: []byte("alice"), SenderDevice: []byte("ios-7f3a"), ClientMsgID: []byte("c-0002"), Kind: KindText, Body: textBody(2048)}
	cs = append(cs, vectorCase{name: "msg_compressed", desc: "MSG with FlagCompressed|FlagReplay: the payload is one zstd frame", b: Compress(nil, big.Append(nil, FlagReplay)), src: big})

	// Internal records.
	env := &Envelope{Gateway: []byte("gw-1"), Conn: 981, User: []byte("alice"), Device: []byte("ios-7f3a"), Caps: CapZstd, ReceivedMS: 1767225600123, Frame: (&Send{ConvID: 42, ClientMsgID: []byte("c-0001"), Kind: KindText, Body: []byte("hello, world")}).Append(nil, 0)}
	cs = append(cs, vectorCase{name: "envelope", desc: "the SEND vector as received by gateway gw-1 on connection 981", kind: "ENVELOPE", b: env.Append(nil), src: env})
	batch := &batchFields{Conns: []uint64{981, 982, 1 << 40}, Frame: (&Ping{Nonce: 300}).Append(nil, 0)}
	cs = append(cs, vectorCase{name: "batch", desc: "a frame for three connections", kind: "BATCH", b: AppendBatch(nil, batch.Conns, batch.Frame), src: batch})

	// Invalid vectors.
	send := (&Send{ConvID: 42, ClientMsgID: []byte("c-0001"), Kind: KindText, Body: []byte("hello, world")}).Append(nil, 0)
	invalid("empty_frame", "no header", []byte{}, CodeMalformedFrame)
	invalid("header_truncated", "one byte only", []byte{byte(TypePing)}, CodeMalformedFrame)
	invalid("unknown_type", "type 0x7F is not defined in version 1", []byte{0x7F, 0x00, 0x01}, CodeUnknownType)
	invalid("unknown_flag", "flag bit 0x04 is not defined", []byte{byte(TypePing), 0x04, 0x01}, CodeMalformedFrame)
	invalid("replay_flag_on_send", "FlagReplay is only valid on MSG", append([]byte{byte(TypeSend), byte(FlagReplay)}, send[HeaderLen:]...), CodeMalformedFrame)
	invalid("send_truncated_body", "body length 12 but only 11 bytes follow", send[:len(send)-1], CodeMalformedFrame)
	invalid("send_client_msg_id_too_long", "client_msg_id of 65 bytes (limit 64)", (&Send{ConvID: 42, ClientMsgID: rep('c', MaxIDLen+1), Kind: KindText, Body: []byte("x")}).Append(nil, 0), CodeMalformedFrame)
	invalid("hello_empty_device_id", "device_id must be 1..64 bytes", (&Hello{MinVersion: 1, MaxVersion: 1, Token: []byte("t")}).Append(nil, 0), CodeMalformedFrame)
	invalid("ping_varint_overflow", "10th varint byte above 1: the value exceeds 64 bits", []byte{byte(TypePing), 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02}, CodeMalformedFrame)
	invalid("ping_varint_11_bytes", "a varint may not exceed 10 bytes", []byte{byte(TypePing), 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, CodeMalformedFrame)
	invalid("receipt_bad_kind", "receipt kind 3 (valid: 1, 2)", []byte{byte(TypeReceipt), 0, 42, 3, 17, 0}, CodeMalformedFrame)
	invalid("resumed_bad_boolean", "truncated = 2 (valid: 0, 1)", []byte{byte(TypeResumed), 0, 1, 2, 3, 2}, CodeMalformedFrame)
	invalid("conv_roles_short", "2 members but 1 role byte", append((&Conv{ReqID: 3, ConvID: 42, Kind: ConvDirect, LastSeq: 17, Members: [][]byte{[]byte("a"), []byte("b")}}).Append(nil, 0)[:11], 0, 2, 1, 0), CodeMalformedFrame)
	invalid("create_group_empty_name", "a group name must be 1..128 bytes", (&CreateGroup{ReqID: 5}).Append(nil, 0), CodeMalformedFrame)
	invalid("create_group_empty_member", "a member id must be 1..64 bytes", (&CreateGroup{ReqID: 5, Name: []byte("g"), Members: [][]byte{{}}}).Append(nil, 0), CodeMalformedFrame)
	invalid("typing_bad_state", "state 3 (valid: 1, 2)", []byte{byte(TypeTyping), 0, 42, 3, 0}, CodeMalformedFrame)
	invalid("presence_bad_approx", "approx 5 (valid: 0..4)", []byte{byte(TypePresence), 0, 42, 3, 'b', 'o', 'b', 0, 0, 5}, CodeMalformedFrame)
	invalid("group_change_bad_op", "op 7 (valid: 1..6)", (&GroupChange{ReqID: 6, ConvID: 43, Op: GroupCreated}).Append(nil, 0), CodeMalformedFrame)
	invalid("conv_bad_kind", "conversation kind 0 (valid: 1, 2)", []byte{byte(TypeConv), 0, 3, 42, 0, 17, 0}, CodeMalformedFrame)
	invalid("resume_too_many_cursors", "count 1025 (limit 1024)", append([]byte{byte(TypeResume), 0, 1, 0x81, 0x08}, make([]byte, 2*1025)...), CodeMalformedFrame)
	invalid("compressed_not_zstd", "FlagCompressed but the payload is not a zstd frame", []byte{byte(TypeSend), byte(FlagCompressed), 0x2A, 0x06, 'c', '-', '0', '0', '0', '1'}, CodeBadCompression)
	bomb := compressedFrame(TypePing, 0, zenc.EncodeAll(make([]byte, MaxFrameSize), nil))
	invalid("compressed_too_large", "zstd payload decompressing to 65536 bytes: the frame would exceed 65536", bomb, CodeBadCompression)
	cs = append(cs, vectorCase{name: "envelope_bad_version", desc: "version byte 2", kind: "ENVELOPE", b: append([]byte{2}, env.Append(nil)[1:]...), err: CodeMalformedFrame})
	cs = append(cs, vectorCase{name: "batch_count_past_end", desc: "count 5 but fewer ids follow", kind: "BATCH", b: []byte{5, 1, 2, byte(TypePing), 0}, err: CodeMalformedFrame})
	return cs
}

func (c vectorCase) vector(t testing.TB) vector {
	v := vector{Name: c.name, Description: c.desc, Type: c.kind, Hex: hex.EncodeToString(c.b)}
	if c.kind == "" && len(c.b) >= 1 {
		v.Type = Type(c.b[0]).String()
	}
	if c.kind == "" && len(c.b) >= HeaderLen {
		f := c.b[1]
		v.Flags = &f
	}
	if c.src != nil {
		v.Fields = json.RawMessage(canonIndent(t, fieldsOf(c.src)))
	} else {
		v.Error, v.Code = c.err.String(), c.err
	}
	return v
}

func canonIndent(t testing.TB, fields ordered) []byte {
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeVector decodes a vector's bytes as its type says and returns the
// decoded fields, or the error.
func decodeVector(kind string, b []byte) (ordered, error) {
	switch kind {
	case "ENVELOPE":
		var e Envelope
		if err := e.Decode(b); err != nil {
			return nil, err
		}
		return fieldsOf(&e), nil
	case "BATCH":
		var bf batchFields
		var err error
		if bf.Conns, bf.Frame, err = DecodeBatch(b, nil); err != nil {
			return nil, err
		}
		return fieldsOf(&bf), nil
	}
	var d Decoder
	t, _, err := d.Decode(b)
	if err != nil {
		return nil, err
	}
	return fieldsOf(d.Frame(t)), nil
}

func readVectors(t testing.TB) []vector {
	t.Helper()
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatalf("%v (generate it with: go test ./wire -run TestVectors -update)", err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestVectors checks testdata/vectors.json: every valid vector decodes to
// its fields and every invalid one fails with its code, and the file is
// what the generator above produces. With -update it rewrites the file.
func TestVectors(t *testing.T) {
	cases := vectorCases()
	if *update {
		vs := make([]vector, len(cases))
		for i, c := range cases {
			vs[i] = c.vector(t)
		}
		b, err := json.MarshalIndent(vs, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(vectorsFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	vs := readVectors(t)
	seen := map[string]bool{}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			if seen[v.Name] {
				t.Fatal("duplicate name")
			}
			seen[v.Name] = true
			b, err := hex.DecodeString(v.Hex)
			if err != nil {
				t.Fatal(err)
			}
			if v.Type != "ENVELOPE" && v.Type != "BATCH" && len(b) > 0 && Type(b[0]).String() != v.Type {
				t.Errorf("type %q but the type byte is %v", v.Type, Type(b[0]))
			}
			got, err := decodeVector(v.Type, b)
			if v.Error != "" {
				wantCode(t, err, v.Code, v.Name)
				if v.Code.String() != v.Error {
					t.Errorf("error %q does not name code %d", v.Error, v.Code)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			var want any
			if err := json.Unmarshal(v.Fields, &want); err != nil {
				t.Fatal(err)
			}
			if g, w := canon(t, got), canon(t, want); g != w {
				t.Fatalf("decoded %s\nwant    %s", g, w)
			}
		})
	}

	// The file must match the generator (run with -update after changing
	// either). Compressed bytes depend on the zstd encoder's version, so
	// for those only the decoded fields are compared.
	byName := map[string]vector{}
	for _, v := range vs {
		byName[v.Name] = v
	}
	if len(vs) != len(cases) {
		t.Errorf("%s has %d vectors, the generator %d: run with -update", vectorsFile, len(vs), len(cases))
	}
	for _, c := range cases {
		v, ok := byName[c.name]
		want := c.vector(t)
		switch {
		case !ok:
			t.Errorf("vector %q missing from %s: run with -update", c.name, vectorsFile)
		case !sameJSON(t, v.Fields, want.Fields) || v.Code != want.Code || v.Type != want.Type:
			t.Errorf("vector %q differs from the generator: run with -update", c.name)
		case want.Flags != nil && *want.Flags&uint8(FlagCompressed) != 0:
			// Fields compared above.
		case v.Hex != want.Hex:
			t.Errorf("vector %q differs from the generator: run with -update", c.name)
		}
	}

	// Every frame type has a valid vector, and so does compression.
	types := map[string]bool{}
	for _, v := range vs {
		if v.Error == "" {
			types[v.Type] = true
			if v.Flags != nil && *v.Flags&uint8(FlagCompressed) != 0 {
				types["compressed"] = true
			}
		}
	}
	for i := TypeHello; i <= LastType; i++ {
		if !types[i.String()] {
			t.Errorf("no valid vector for %v", i)
		}
	}
	for _, k := range []string{"compressed", "ENVELOPE", "BATCH"} {
		if !types[k] {
			t.Errorf("no valid vector for %s", k)
		}
	}
}

func sameJSON(t testing.TB, a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatal(err)
	}
	return canon(t, va) == canon(t, vb)
}

// vectorFrames returns the bytes of every frame vector (valid or not), for
// seeding fuzz corpora.
func vectorFrames(t testing.TB, kinds ...string) [][]byte {
	var out [][]byte
	for _, v := range readVectors(t) {
		isRecord := v.Type == "ENVELOPE" || v.Type == "BATCH"
		want := len(kinds) == 0 && !isRecord
		for _, k := range kinds {
			want = want || strings.EqualFold(k, v.Type)
		}
		if want {
			b, err := hex.DecodeString(v.Hex)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
	}
	return out
}

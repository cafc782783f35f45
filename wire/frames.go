package wire

import "encoding/binary"

// Append and Decode for every frame type, in the field order documented on
// each struct in frame.go and in docs/protocol.md.
//
// Append contract: appends type byte, flags byte and payload to dst and
// returns the extended slice; no allocation when cap(dst)-len(dst) suffices;
// no validation (limits are the receiver's to enforce). Flags are written as
// given: pass FlagReplay for replayed MSG frames and use Compress to produce
// FlagCompressed frames.
//
// Decode contract: decodes a payload (the frame after its 2-byte header)
// into the receiver, overwriting every field. []byte fields alias payload;
// slice fields reuse their capacity. Bytes after the last known field are
// ignored (forward compatibility). On error the receiver's contents are
// unspecified and the error is a *ProtoError with CodeMalformedFrame.

var ub = binary.AppendUvarint

// Type implements Frame.
func (*Hello) Type() Type { return TypeHello }

// Append implements Frame.
func (x *Hello) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeHello, flags)
	dst = ub(dst, x.MinVersion)
	dst = ub(dst, x.MaxVersion)
	dst = appendBytes(dst, x.Token)
	dst = appendBytes(dst, x.DeviceID)
	return ub(dst, x.Caps)
}

// Decode implements Frame. DeviceID must be 1..MaxIDLen bytes: it is the
// one identifier the codec requires to be non-empty, since the server keys
// connection state on it before any request-level validation runs.
func (x *Hello) Decode(payload []byte) error {
	r := reader{b: payload, frame: "hello"}
	x.MinVersion = r.uvarint("min_version")
	x.MaxVersion = r.uvarint("max_version")
	x.Token = r.bytes("token", MaxTokenLen)
	x.DeviceID = r.bytes("device_id", MaxIDLen)
	if r.err == nil && len(x.DeviceID) == 0 {
		r.fail("device_id", "empty")
	}
	x.Caps = r.uvarint("caps")
	return r.result()
}

// Type implements Frame.
func (*Welcome) Type() Type { return TypeWelcome }

// Append implements Frame.
func (x *Welcome) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeWelcome, flags)
	dst = ub(dst, x.Version)
	dst = ub(dst, x.Caps)
	dst = ub(dst, x.HeartbeatMS)
	dst = ub(dst, x.IdleTimeoutMS)
	dst = ub(dst, x.MaxFrame)
	dst = ub(dst, x.ServerTimeMS)
	dst = appendBytes(dst, x.UserID)
	return appendBytes(dst, x.DeviceID)
}

// Decode implements Frame.
func (x *Welcome) Decode(payload []byte) error {
	r := reader{b: payload, frame: "welcome"}
	x.Version = r.uvarint("version")
	x.Caps = r.uvarint("caps")
	x.HeartbeatMS = r.uvarint("heartbeat_ms")
	x.IdleTimeoutMS = r.uvarint("idle_timeout_ms")
	x.MaxFrame = r.uvarint("max_frame")
	x.ServerTimeMS = r.uvarint("server_time_ms")
	x.UserID = r.bytes("user_id", MaxIDLen)
	x.DeviceID = r.bytes("device_id", MaxIDLen)
	return r.result()
}

// Type implements Frame.
func (*Send) Type() Type { return TypeSend }

// Append implements Frame.
func (x *Send) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeSend, flags)
	dst = ub(dst, x.ConvID)
	dst = appendBytes(dst, x.ClientMsgID)
	dst = ub(dst, uint64(x.Kind))
	return appendBytes(dst, x.Body)
}

// Decode implements Frame. Kind is not range-checked: unknown kinds are the
// server's to refuse (CodeInvalidArgument), not a framing error.
func (x *Send) Decode(payload []byte) error {
	r := reader{b: payload, frame: "send"}
	x.ConvID = r.uvarint("conv_id")
	x.ClientMsgID = r.bytes("client_msg_id", MaxIDLen)
	x.Kind = MsgKind(r.uvarint("kind"))
	x.Body = r.bytes("body", MaxBodySize)
	return r.result()
}

// Type implements Frame.
func (*Ack) Type() Type { return TypeAck }

// Append implements Frame.
func (x *Ack) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeAck, flags)
	dst = appendBytes(dst, x.ClientMsgID)
	dst = ub(dst, x.ConvID)
	dst = ub(dst, x.MessageID)
	dst = ub(dst, x.Seq)
	return ub(dst, x.ServerTimeMS)
}

// Decode implements Frame.
func (x *Ack) Decode(payload []byte) error {
	r := reader{b: payload, frame: "ack"}
	x.ClientMsgID = r.bytes("client_msg_id", MaxIDLen)
	x.ConvID = r.uvarint("conv_id")
	x.MessageID = r.uvarint("message_id")
	x.Seq = r.uvarint("seq")
	x.ServerTimeMS = r.uvarint("server_time_ms")
	return r.result()
}

// Type implements Frame.
func (*Msg) Type() Type { return TypeMsg }

// Append implements Frame.
func (x *Msg) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeMsg, flags)
	dst = ub(dst, x.ConvID)
	dst = ub(dst, x.MessageID)
	dst = ub(dst, x.Seq)
	dst = ub(dst, x.ServerTimeMS)
	dst = appendBytes(dst, x.Sender)
	dst = appendBytes(dst, x.SenderDevice)
	dst = appendBytes(dst, x.ClientMsgID)
	dst = ub(dst, uint64(x.Kind))
	return appendBytes(dst, x.Body)
}

// Decode implements Frame. Kind is not range-checked (see Send.Decode).
func (x *Msg) Decode(payload []byte) error {
	r := reader{b: payload, frame: "msg"}
	x.ConvID = r.uvarint("conv_id")
	x.MessageID = r.uvarint("message_id")
	x.Seq = r.uvarint("seq")
	x.ServerTimeMS = r.uvarint("server_time_ms")
	x.Sender = r.bytes("sender", MaxIDLen)
	x.SenderDevice = r.bytes("sender_device", MaxIDLen)
	x.ClientMsgID = r.bytes("client_msg_id", MaxIDLen)
	x.Kind = MsgKind(r.uvarint("kind"))
	x.Body = r.bytes("body", MaxBodySize)
	return r.result()
}

// Type implements Frame.
func (*Receipt) Type() Type { return TypeReceipt }

// Append implements Frame.
func (x *Receipt) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeReceipt, flags)
	dst = ub(dst, x.ConvID)
	dst = append(dst, byte(x.Kind))
	dst = ub(dst, x.UpToSeq)
	return appendBytes(dst, x.User)
}

// Decode implements Frame. Kind must be ReceiptDelivered or ReceiptRead.
func (x *Receipt) Decode(payload []byte) error {
	r := reader{b: payload, frame: "receipt"}
	x.ConvID = r.uvarint("conv_id")
	x.Kind = ReceiptKind(r.kind("kind", byte(ReceiptRead)))
	x.UpToSeq = r.uvarint("up_to_seq")
	x.User = r.bytes("user", MaxIDLen)
	return r.result()
}

// Type implements Frame.
func (*Resume) Type() Type { return TypeResume }

// Append implements Frame.
func (x *Resume) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeResume, flags)
	dst = ub(dst, x.ReqID)
	dst = ub(dst, uint64(len(x.Cursors)))
	for _, c := range x.Cursors {
		dst = ub(dst, c.ConvID)
		dst = ub(dst, c.LastSeq)
	}
	return dst
}

// Decode implements Frame. At most MaxResumeConvs cursors; Cursors keeps
// its capacity across calls, so a warm Resume decodes without allocating.
func (x *Resume) Decode(payload []byte) error {
	r := reader{b: payload, frame: "resume"}
	x.ReqID = r.uvarint("req_id")
	n := r.count("count", MaxResumeConvs, 2)
	x.Cursors = x.Cursors[:0]
	if cap(x.Cursors) < n {
		x.Cursors = make([]Cursor, 0, n)
	}
	for range n {
		c := Cursor{ConvID: r.uvarint("conv_id"), LastSeq: r.uvarint("last_seq")}
		if r.err != nil {
			break
		}
		x.Cursors = append(x.Cursors, c)
	}
	return r.result()
}

// Type implements Frame.
func (*Resumed) Type() Type { return TypeResumed }

// Append implements Frame.
func (x *Resumed) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeResumed, flags)
	dst = ub(dst, x.ReqID)
	dst = ub(dst, x.Conversations)
	dst = ub(dst, x.Messages)
	return appendBool(dst, x.Truncated)
}

// Decode implements Frame.
func (x *Resumed) Decode(payload []byte) error {
	r := reader{b: payload, frame: "resumed"}
	x.ReqID = r.uvarint("req_id")
	x.Conversations = r.uvarint("conversations")
	x.Messages = r.uvarint("messages")
	x.Truncated = r.bool("truncated")
	return r.result()
}

// Type implements Frame.
func (*History) Type() Type { return TypeHistory }

// Append implements Frame.
func (x *History) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeHistory, flags)
	dst = ub(dst, x.ReqID)
	dst = ub(dst, x.ConvID)
	dst = ub(dst, x.BeforeSeq)
	return ub(dst, x.Limit)
}

// Decode implements Frame. Limit is not checked against MaxHistoryLimit:
// the server clamps it.
func (x *History) Decode(payload []byte) error {
	r := reader{b: payload, frame: "history"}
	x.ReqID = r.uvarint("req_id")
	x.ConvID = r.uvarint("conv_id")
	x.BeforeSeq = r.uvarint("before_seq")
	x.Limit = r.uvarint("limit")
	return r.result()
}

// Type implements Frame.
func (*HistoryEnd) Type() Type { return TypeHistoryEnd }

// Append implements Frame.
func (x *HistoryEnd) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeHistoryEnd, flags)
	dst = ub(dst, x.ReqID)
	dst = ub(dst, x.ConvID)
	dst = ub(dst, x.Count)
	return appendBool(dst, x.HasMore)
}

// Decode implements Frame.
func (x *HistoryEnd) Decode(payload []byte) error {
	r := reader{b: payload, frame: "history_end"}
	x.ReqID = r.uvarint("req_id")
	x.ConvID = r.uvarint("conv_id")
	x.Count = r.uvarint("count")
	x.HasMore = r.bool("has_more")
	return r.result()
}

// Type implements Frame.
func (*Ping) Type() Type { return TypePing }

// Append implements Frame.
func (x *Ping) Append(dst []byte, flags Flags) []byte {
	return ub(appendHeader(dst, TypePing, flags), x.Nonce)
}

// Decode implements Frame.
func (x *Ping) Decode(payload []byte) error {
	r := reader{b: payload, frame: "ping"}
	x.Nonce = r.uvarint("nonce")
	return r.result()
}

// Type implements Frame.
func (*Pong) Type() Type { return TypePong }

// Append implements Frame.
func (x *Pong) Append(dst []byte, flags Flags) []byte {
	return ub(appendHeader(dst, TypePong, flags), x.Nonce)
}

// Decode implements Frame.
func (x *Pong) Decode(payload []byte) error {
	r := reader{b: payload, frame: "pong"}
	x.Nonce = r.uvarint("nonce")
	return r.result()
}

// Type implements Frame.
func (*Error) Type() Type { return TypeError }

// Append implements Frame.
func (x *Error) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeError, flags)
	dst = ub(dst, uint64(x.Code))
	dst = append(dst, byte(x.RefType))
	dst = ub(dst, x.ReqID)
	dst = ub(dst, x.ConvID)
	dst = appendBytes(dst, x.ClientMsgID)
	return appendBytes(dst, x.Message)
}

// Decode implements Frame. Code and RefType are not checked against the
// known values: a client must cope with codes added later.
func (x *Error) Decode(payload []byte) error {
	r := reader{b: payload, frame: "error"}
	x.Code = Code(r.uvarint("code"))
	x.RefType = Type(r.byte1("ref_type"))
	x.ReqID = r.uvarint("req_id")
	x.ConvID = r.uvarint("conv_id")
	x.ClientMsgID = r.bytes("client_msg_id", MaxIDLen)
	x.Message = r.bytes("message", MaxTextLen)
	return r.result()
}

// Type implements Frame.
func (*Goaway) Type() Type { return TypeGoaway }

// Append implements Frame.
func (x *Goaway) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeGoaway, flags)
	dst = ub(dst, uint64(x.Code))
	dst = ub(dst, x.ReconnectAfterMS)
	return appendBytes(dst, x.Message)
}

// Decode implements Frame.
func (x *Goaway) Decode(payload []byte) error {
	r := reader{b: payload, frame: "goaway"}
	x.Code = Code(r.uvarint("code"))
	x.ReconnectAfterMS = r.uvarint("reconnect_after_ms")
	x.Message = r.bytes("message", MaxTextLen)
	return r.result()
}

// Type implements Frame.
func (*OpenDirect) Type() Type { return TypeOpenDirect }

// Append implements Frame.
func (x *OpenDirect) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeOpenDirect, flags)
	dst = ub(dst, x.ReqID)
	return appendBytes(dst, x.Peer)
}

// Decode implements Frame.
func (x *OpenDirect) Decode(payload []byte) error {
	r := reader{b: payload, frame: "open_direct"}
	x.ReqID = r.uvarint("req_id")
	x.Peer = r.bytes("peer", MaxIDLen)
	return r.result()
}

// Type implements Frame.
func (*Conv) Type() Type { return TypeConv }

// Append implements Frame. It always writes the revision 1.1 fields; Roles
// must have one entry per member (nil writes RoleMember for each) and
// MemberTotal below len(Members) is written as len(Members).
func (x *Conv) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeConv, flags)
	dst = ub(dst, x.ReqID)
	dst = ub(dst, x.ConvID)
	dst = append(dst, byte(x.Kind))
	dst = ub(dst, x.LastSeq)
	dst = appendList(dst, x.Members)
	dst = appendBytes(dst, x.Name)
	dst = ub(dst, max(x.MemberTotal, uint64(len(x.Members))))
	dst = ub(dst, uint64(len(x.Members)))
	for i := range x.Members {
		role := RoleMember
		if i < len(x.Roles) {
			role = x.Roles[i]
		}
		dst = append(dst, role)
	}
	return dst
}

// Decode implements Frame. Kind must be ConvDirect or ConvGroup; at most
// MaxMembers members of at most MaxIDLen bytes each. Members keeps its
// capacity across calls.
func (x *Conv) Decode(payload []byte) error {
	r := reader{b: payload, frame: "conv"}
	x.ReqID = r.uvarint("req_id")
	x.ConvID = r.uvarint("conv_id")
	x.Kind = ConvKind(r.kind("kind", byte(ConvGroup)))
	x.LastSeq = r.uvarint("last_seq")
	x.Members = r.idList(x.Members, "count", "member", MaxMembers, 1)
	// A revision-1.0 frame (nothing after the members): every member has
	// RoleMember. zeroRoles is never written, so aliasing it is safe.
	x.Name, x.MemberTotal, x.Roles = nil, uint64(len(x.Members)), zeroRoles[:len(x.Members):len(x.Members)]
	if r.err == nil && r.i < len(r.b) {
		x.Name = r.bytes("name", MaxGroupNameLen)
		x.MemberTotal = r.uvarint("member_total")
		x.Roles = r.bytes("roles", MaxMembers)
		if r.err == nil && len(x.Roles) != len(x.Members) {
			r.fail("roles", "length differs from count")
		}
		if r.err == nil && x.MemberTotal < uint64(len(x.Members)) {
			r.fail("member_total", "below count")
		}
	}
	return r.result()
}

// zeroRoles backs the Roles of a CONV without roles (all RoleMember).
var zeroRoles [MaxMembers]byte

// Type implements Frame.
func (*CreateGroup) Type() Type { return TypeCreateGroup }

// Append implements Frame.
func (x *CreateGroup) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeCreateGroup, flags)
	dst = ub(dst, x.ReqID)
	dst = appendBytes(dst, x.Name)
	return appendList(dst, x.Members)
}

// Decode implements Frame.
func (x *CreateGroup) Decode(payload []byte) error {
	r := reader{b: payload, frame: "create_group"}
	x.ReqID = r.uvarint("req_id")
	x.Name = r.bytes("name", MaxGroupNameLen)
	if r.err == nil && len(x.Name) == 0 {
		r.fail("name", "empty")
	}
	x.Members = r.idList(x.Members, "count", "member", MaxGroupChange, 2)
	return r.result()
}

// Type implements Frame.
func (*GroupChange) Type() Type { return TypeGroupChange }

// Append implements Frame.
func (x *GroupChange) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeGroupChange, flags)
	dst = ub(dst, x.ReqID)
	dst = ub(dst, x.ConvID)
	dst = append(dst, byte(x.Op))
	dst = appendBytes(dst, x.Name)
	return appendList(dst, x.Users)
}

// Decode implements Frame.
func (x *GroupChange) Decode(payload []byte) error {
	r := reader{b: payload, frame: "group_change"}
	x.ReqID = r.uvarint("req_id")
	x.ConvID = r.uvarint("conv_id")
	x.Op = GroupOp(r.kind("op", byte(maxGroupChangeOp)))
	x.Name = r.bytes("name", MaxGroupNameLen)
	x.Users = r.idList(x.Users, "count", "user", MaxGroupChange, 2)
	return r.result()
}

// Append appends the event's encoding (a message body, no frame header).
func (x *GroupEvent) Append(dst []byte) []byte {
	dst = append(dst, byte(x.Op))
	dst = appendBytes(dst, x.Actor)
	dst = appendBytes(dst, x.Name)
	return appendList(dst, x.Users)
}

// Decode parses a group system message body. Users keeps its capacity
// across calls; the slices alias body.
func (x *GroupEvent) Decode(body []byte) error {
	r := reader{b: body, frame: "group_event"}
	x.Op = GroupOp(r.kind("op", byte(maxGroupEventOp)))
	x.Actor = r.bytes("actor", MaxIDLen)
	if r.err == nil && len(x.Actor) == 0 {
		r.fail("actor", "empty")
	}
	x.Name = r.bytes("name", MaxGroupNameLen)
	x.Users = r.idList(x.Users, "count", "user", MaxGroupChange, 2)
	return r.result()
}

// appendList appends a count and that many byte strings.
func appendList(dst []byte, l [][]byte) []byte {
	dst = ub(dst, uint64(len(l)))
	for _, b := range l {
		dst = appendBytes(dst, b)
	}
	return dst
}

// idList reads a count (at most max) and that many ids of at most MaxIDLen
// bytes each and at least minEntry-1 bytes (minEntry counts the length
// byte), into dst's storage. Entries past the new length are nil, so the
// spare capacity holds no references into older payloads.
func (r *reader) idList(dst [][]byte, countField, field string, max, minEntry int) [][]byte {
	n := r.count(countField, max, minEntry)
	clear(dst)
	dst = dst[:0]
	if cap(dst) < n {
		dst = make([][]byte, 0, n)
	}
	for range n {
		m := r.bytes(field, MaxIDLen)
		if r.err != nil {
			break
		}
		if minEntry > 1 && len(m) == 0 {
			r.fail(field, "empty")
			break
		}
		dst = append(dst, m)
	}
	return dst
}

// Compile-time proof that every frame implements Frame.
var (
	_ Frame = (*Hello)(nil)
	_ Frame = (*Welcome)(nil)
	_ Frame = (*Send)(nil)
	_ Frame = (*Ack)(nil)
	_ Frame = (*Msg)(nil)
	_ Frame = (*Receipt)(nil)
	_ Frame = (*Resume)(nil)
	_ Frame = (*Resumed)(nil)
	_ Frame = (*History)(nil)
	_ Frame = (*HistoryEnd)(nil)
	_ Frame = (*Ping)(nil)
	_ Frame = (*Pong)(nil)
	_ Frame = (*Error)(nil)
	_ Frame = (*Goaway)(nil)
	_ Frame = (*OpenDirect)(nil)
	_ Frame = (*Conv)(nil)
	_ Frame = (*CreateGroup)(nil)
	_ Frame = (*GroupChange)(nil)
)

// Type implements Frame.
func (*Typing) Type() Type { return TypeTyping }

// Append implements Frame.
func (x *Typing) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeTyping, flags)
	dst = ub(dst, x.ConvID)
	dst = append(dst, byte(x.State))
	return appendBytes(dst, x.User)
}

// Decode implements Frame. State must be TypingStarted or TypingStopped.
func (x *Typing) Decode(payload []byte) error {
	r := reader{b: payload, frame: "typing"}
	x.ConvID = r.uvarint("conv_id")
	x.State = TypingState(r.kind("state", byte(TypingStopped)))
	x.User = r.bytes("user", MaxIDLen)
	return r.result()
}

// Type implements Frame.
func (*Focus) Type() Type { return TypeFocus }

// Append implements Frame.
func (x *Focus) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypeFocus, flags)
	return ub(dst, x.ConvID)
}

// Decode implements Frame.
func (x *Focus) Decode(payload []byte) error {
	r := reader{b: payload, frame: "focus"}
	x.ConvID = r.uvarint("conv_id")
	return r.result()
}

// Type implements Frame.
func (*Presence) Type() Type { return TypePresence }

// Append implements Frame.
func (x *Presence) Append(dst []byte, flags Flags) []byte {
	dst = appendHeader(dst, TypePresence, flags)
	dst = ub(dst, x.ConvID)
	dst = appendBytes(dst, x.User)
	on := byte(0)
	if x.Online {
		on = 1
	}
	dst = append(dst, on)
	dst = ub(dst, x.LastSeenMS)
	return append(dst, byte(x.Approx))
}

// Decode implements Frame. Online must be 0 or 1 and Approx at most
// ApproxLongAgo.
func (x *Presence) Decode(payload []byte) error {
	r := reader{b: payload, frame: "presence"}
	x.ConvID = r.uvarint("conv_id")
	x.User = r.bytes("user", MaxIDLen)
	on := r.byte1("online")
	x.Online = on == 1
	x.LastSeenMS = r.uvarint("last_seen_ms")
	x.Approx = PresenceApprox(r.byte1("approx"))
	switch {
	case r.err != nil:
	case on > 1:
		r.fail("online", "out of range")
	case x.Approx > ApproxLongAgo:
		r.fail("approx", "out of range")
	}
	return r.result()
}

package wire

// Decoder decodes whole frames into one reusable struct per frame type. It
// is meant to live as long as a reader loop (one per connection, or pooled)
// so that decoding allocates nothing once its slices and its decompression
// buffer have grown: after a compressed frame the Decoder keeps up to
// MaxFrameSize bytes of scratch.
//
// After a successful Decode, the field named after the returned type holds
// the frame; the other fields keep whatever they held. Its []byte fields
// alias the input frame, or the Decoder's own decompression buffer for a
// compressed frame, and are valid until the next Decode call or until the
// caller reuses the input, whichever comes first. A Decoder is not safe for
// concurrent use.
type Decoder struct {
	Hello       Hello
	Welcome     Welcome
	Send        Send
	Ack         Ack
	Msg         Msg
	Receipt     Receipt
	Resume      Resume
	Resumed     Resumed
	History     History
	HistoryEnd  HistoryEnd
	Ping        Ping
	Pong        Pong
	Error       Error
	Goaway      Goaway
	OpenDirect  OpenDirect
	Conv        Conv
	CreateGroup CreateGroup
	GroupChange GroupChange
	Typing      Typing
	Focus       Focus
	Presence    Presence

	zbuf []byte // decompressed payload of the last compressed frame
}

// Decode parses frame's header (see ParseHeader), rejects a type this
// version does not know (CodeUnknownType), decompresses a FlagCompressed
// payload (CodeBadCompression if it is not valid zstd or decompresses to
// more than MaxFrameSize-HeaderLen bytes) and decodes the payload into the
// field for the type (CodeMalformedFrame on failure).
//
// The returned flags are those on the wire, FlagCompressed included, so the
// caller can refuse compression it did not negotiate. Whenever the header
// could be read, t and f are returned even with an error, for ERROR's
// ref_type. Errors are *ProtoError; use CodeOf.
func (d *Decoder) Decode(frame []byte) (t Type, f Flags, err error) {
	t, f, payload, err := ParseHeader(frame)
	if err != nil {
		return t, f, err
	}
	x := d.Frame(t)
	if x == nil {
		return t, f, errUnknownType
	}
	if f&FlagCompressed != 0 {
		d.zbuf, err = decompressPayload(d.zbuf[:0], payload)
		if err != nil {
			return t, f, err
		}
		payload = d.zbuf
	}
	return t, f, x.Decode(payload)
}

// Frame returns a pointer to the Decoder's field for type t, or nil if t is
// not a known type. It does not allocate.
func (d *Decoder) Frame(t Type) Frame {
	switch t {
	case TypeHello:
		return &d.Hello
	case TypeWelcome:
		return &d.Welcome
	case TypeSend:
		return &d.Send
	case TypeAck:
		return &d.Ack
	case TypeMsg:
		return &d.Msg
	case TypeReceipt:
		return &d.Receipt
	case TypeResume:
		return &d.Resume
	case TypeResumed:
		return &d.Resumed
	case TypeHistory:
		return &d.History
	case TypeHistoryEnd:
		return &d.HistoryEnd
	case TypePing:
		return &d.Ping
	case TypePong:
		return &d.Pong
	case TypeError:
		return &d.Error
	case TypeGoaway:
		return &d.Goaway
	case TypeOpenDirect:
		return &d.OpenDirect
	case TypeConv:
		return &d.Conv
	case TypeCreateGroup:
		return &d.CreateGroup
	case TypeGroupChange:
		return &d.GroupChange
	case TypeTyping:
		return &d.Typing
	case TypeFocus:
		return &d.Focus
	case TypePresence:
		return &d.Presence
	}
	return nil
}

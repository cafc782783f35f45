package wire

// Code is a client-visible error code, carried in ERROR and GOAWAY frames
// and, for the HTTP API, in JSON error bodies. Ranges:
//
//	1000-1999 protocol: the frame itself is wrong
//	2000-2999 authentication
//	3000-3999 request: the frame is well formed but cannot be done
//	4000-4999 server: temporary; retry the same request later
//
// Whether a code closes the connection is part of its contract (Fatal).
type Code uint64

const (
	CodeMalformedFrame  Code = 1001 // payload does not parse; connection stays open
	CodeFrameTooLarge   Code = 1002 // frame over MaxFrameSize; connection closes
	CodeUnknownType     Code = 1003 // unknown frame type; connection stays open
	CodeUnsupportedVers Code = 1004 // no common protocol version; connection closes
	CodeHelloRequired   Code = 1005 // a frame other than HELLO came first; connection closes
	CodeDuplicateHello  Code = 1006 // HELLO after WELCOME; connection stays open
	CodeBadCompression  Code = 1007 // FlagCompressed payload not valid zstd or not negotiated; stays open
	CodeNotBinary       Code = 1008 // a WebSocket text message; connection closes
	CodeUnexpectedType  Code = 1009 // a server-to-client type sent by a client; stays open

	CodeTokenInvalid Code = 2001 // token signature or format bad; connection closes
	CodeTokenExpired Code = 2002 // token expired; connection closes
	CodeHelloTimeout Code = 2003 // no HELLO within the deadline; connection closes

	CodeNotMember       Code = 3001 // caller is not a member of the conversation
	CodeSeqBeyondLatest Code = 3002 // RECEIPT up_to_seq above the conversation's latest seq
	CodeConvNotFound    Code = 3003 // no such conversation
	CodeInvalidArgument Code = 3004 // a field is empty, too long or out of range
	CodeRateLimited     Code = 3005 // too many requests; retry later
	CodeNotAdmin        Code = 3006 // the group change needs an admin
	CodeGroupFull       Code = 3007 // the group would exceed its size cap
	CodeUnknownMember   Code = 3008 // a user the request names is not a member of the group

	CodeInternal     Code = 4001 // the server failed; retry
	CodeUnavailable  Code = 4002 // a dependency is down; retry the same request
	CodeSlowConsumer Code = 4003 // GOAWAY: outbound queue overflowed; reconnect and RESUME
	CodeShuttingDown Code = 4004 // GOAWAY: server stopping; reconnect elsewhere
	CodeIdleTimeout  Code = 4005 // GOAWAY: no frame within the idle timeout
)

// Fatal reports whether the server closes the connection after sending
// this code.
func (c Code) Fatal() bool {
	switch c {
	case CodeFrameTooLarge, CodeUnsupportedVers, CodeHelloRequired, CodeNotBinary,
		CodeTokenInvalid, CodeTokenExpired, CodeHelloTimeout,
		CodeSlowConsumer, CodeShuttingDown, CodeIdleTimeout:
		return true
	}
	return false
}

// Retryable reports whether the same request may succeed if sent again later.
func (c Code) Retryable() bool { return c >= 4000 && c < 5000 || c == CodeRateLimited }

// String returns the code's stable snake_case name, as documented.
func (c Code) String() string {
	switch c {
	case CodeMalformedFrame:
		return "malformed_frame"
	case CodeFrameTooLarge:
		return "frame_too_large"
	case CodeUnknownType:
		return "unknown_type"
	case CodeUnsupportedVers:
		return "unsupported_version"
	case CodeHelloRequired:
		return "hello_required"
	case CodeDuplicateHello:
		return "duplicate_hello"
	case CodeBadCompression:
		return "bad_compression"
	case CodeNotBinary:
		return "not_binary"
	case CodeUnexpectedType:
		return "unexpected_type"
	case CodeTokenInvalid:
		return "token_invalid"
	case CodeTokenExpired:
		return "token_expired"
	case CodeHelloTimeout:
		return "hello_timeout"
	case CodeNotMember:
		return "not_member"
	case CodeSeqBeyondLatest:
		return "seq_beyond_latest"
	case CodeConvNotFound:
		return "conversation_not_found"
	case CodeInvalidArgument:
		return "invalid_argument"
	case CodeRateLimited:
		return "rate_limited"
	case CodeNotAdmin:
		return "not_admin"
	case CodeGroupFull:
		return "group_full"
	case CodeUnknownMember:
		return "unknown_member"
	case CodeInternal:
		return "internal"
	case CodeUnavailable:
		return "unavailable"
	case CodeSlowConsumer:
		return "slow_consumer"
	case CodeShuttingDown:
		return "shutting_down"
	case CodeIdleTimeout:
		return "idle_timeout"
	}
	return "unknown"
}

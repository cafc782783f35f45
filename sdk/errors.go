package sdk

import (
	"errors"
	"fmt"
	"time"

	"github.com/chatd-dev/chatd/wire"
)

var (
	// ErrClosed is returned by calls on a Client after Close, and by
	// SendWait, OpenDirect and History calls that Close interrupted.
	ErrClosed = errors.New("sdk: client closed")

	// ErrStarted is returned by a second call to Start.
	ErrStarted = errors.New("sdk: client already started")

	// ErrMaybeApplied is returned by CreateGroup and ChangeGroup when the
	// connection was lost after the request was written and before its
	// answer: the server may or may not have applied it. These requests
	// are not written again on the next connection (a second CREATE_GROUP
	// would create a second group); look at the conversations, then retry
	// if needed.
	ErrMaybeApplied = errors.New("sdk: connection lost before the answer; the request may have been applied")

	// ErrHeartbeatTimeout is the Disconnected reason when the server sent no
	// frame at all for two heartbeat intervals.
	ErrHeartbeatTimeout = errors.New("sdk: no frame from the server for two heartbeat intervals")
)

// ServerError is an ERROR frame from the server: a request failed.
// SendWait, OpenDirect and History return it, and SendFailed events carry
// it. Use errors.As to get at the code.
type ServerError struct {
	Code    wire.Code // why; see wire/codes.go
	RefType wire.Type // the type of the failed request frame
	ConvID  uint64    // the conversation of the request, when it had one
	Message string    // human-readable detail from the server, may be empty
}

func (e *ServerError) Error() string {
	s := fmt.Sprintf("chatd: %s (%d)", e.Code, uint64(e.Code))
	if e.RefType != 0 {
		s += " on " + e.RefType.String()
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Retryable reports whether the same request may succeed later (server-side
// failures and rate limiting). The Client retries sends with such codes by
// itself; OpenDirect and History return them to the caller.
func (e *ServerError) Retryable() bool { return e.Code.Retryable() }

// GoawayError is the Disconnected reason when the server announced that it
// closes the connection (GOAWAY). The Client waits at least ReconnectAfter
// before its next attempt.
type GoawayError struct {
	Code           wire.Code
	ReconnectAfter time.Duration
	Message        string
}

func (e *GoawayError) Error() string {
	s := fmt.Sprintf("chatd: goaway %s (%d), reconnect after %v", e.Code, uint64(e.Code), e.ReconnectAfter)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// codeOf returns the server code carried by err, or 0.
func codeOf(err error) wire.Code {
	var se *ServerError
	if errors.As(err, &se) {
		return se.Code
	}
	var ge *GoawayError
	if errors.As(err, &ge) {
		return ge.Code
	}
	return 0
}

// isAuthError reports whether err says the token must be replaced.
func isAuthError(err error) bool {
	c := codeOf(err)
	return c == wire.CodeTokenInvalid || c == wire.CodeTokenExpired
}

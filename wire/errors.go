package wire

import "errors"

// ProtoError is the error every decoding function of this package returns:
// a client-visible Code plus a short, stable, human-readable Reason such as
// "send: client_msg_id too long". The gateway can copy both into an ERROR
// or GOAWAY frame as they are; Reason never contains payload bytes, so it is
// safe to echo and to log.
//
// Errors returned by this package must be treated as read-only values: some
// of them are shared package-level instances.
type ProtoError struct {
	Code   Code
	Reason string
}

// Error implements error as "wire: <code name>: <reason>".
func (e *ProtoError) Error() string {
	return "wire: " + e.Code.String() + ": " + e.Reason
}

// CodeOf maps an error to the Code a peer should be told: 0 for nil, the
// Code of a *ProtoError anywhere in err's chain, and CodeInternal for any
// other error (the failure is then ours, not the peer's).
func CodeOf(err error) Code {
	if err == nil {
		return 0
	}
	var pe *ProtoError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return CodeInternal
}

// malformed returns a CodeMalformedFrame error. Decoding only allocates on
// this (failure) path.
func malformed(reason string) *ProtoError {
	return &ProtoError{Code: CodeMalformedFrame, Reason: reason}
}

// Shared errors for failures that carry no field-specific detail.
var (
	errShortFrame    = &ProtoError{Code: CodeMalformedFrame, Reason: "frame shorter than its 2-byte header"}
	errFrameTooLarge = &ProtoError{Code: CodeFrameTooLarge, Reason: "frame larger than 65536 bytes"}
	errUnknownFlags  = &ProtoError{Code: CodeMalformedFrame, Reason: "unknown flag bits"}
	errReplayNotMsg  = &ProtoError{Code: CodeMalformedFrame, Reason: "replay flag on a frame other than MSG"}
	errUnknownType   = &ProtoError{Code: CodeUnknownType, Reason: "unknown frame type"}
	errZstdInvalid   = &ProtoError{Code: CodeBadCompression, Reason: "payload is not valid zstd"}
	errZstdTooLarge  = &ProtoError{Code: CodeBadCompression, Reason: "decompressed frame larger than 65536 bytes"}
	errZstdEmpty     = &ProtoError{Code: CodeBadCompression, Reason: "compressed payload is empty"}
)

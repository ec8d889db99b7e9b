package streaming

import (
	"errors"
	"fmt"
)

var (
	// ErrLogEnded is returned by the Append, Finish and Fail methods of a
	// Log that has already received its done or error event.
	ErrLogEnded = errors.New("streaming: generation log has ended")

	// ErrReleased is returned when a Log's events are no longer retained:
	// its retention elapsed or Release was called. A caller resuming a
	// finished generation then sends the committed turn instead.
	ErrReleased = errors.New("streaming: generation log released")

	// ErrOffsetOutOfRange is returned when a subscriber asks for the events
	// after an offset the log has not reached, or after a negative one.
	ErrOffsetOutOfRange = errors.New("streaming: offset out of range")

	// ErrGenerationNotFound is returned by Hub methods given a generation the
	// hub does not hold (never started there, or released).
	ErrGenerationNotFound = errors.New("streaming: generation not found")

	// ErrGenerationExists is returned by Hub.StartGeneration when a retained
	// log already has that id.
	ErrGenerationExists = errors.New("streaming: generation already exists")

	// ErrHubClosed is returned by Hub methods called after Hub.Close.
	ErrHubClosed = errors.New("streaming: hub closed")

	// ErrViewerClosed is returned when sending to or subscribing a viewer
	// that has stopped, and is the Viewer.Err of a viewer stopped by Close,
	// CloseWith or ViewerOptions.CloseOnFinal.
	ErrViewerClosed = errors.New("streaming: viewer closed")

	// ErrSlowViewer is the Viewer.Err of a viewer that was dropped because
	// its buffer overflowed. The client was sent resume_required (if it
	// could still be reached) and must resume from that offset.
	ErrSlowViewer = errors.New("streaming: viewer too slow, dropped")

	// ErrWriteTimeout is in the Viewer.Err of a viewer whose write took
	// longer than ViewerOptions.WriteTimeout.
	ErrWriteTimeout = errors.New("streaming: write to viewer timed out")

	// ErrSinkClosed is returned by a Sink's WriteFrame after its Close.
	ErrSinkClosed = errors.New("streaming: sink closed")

	// ErrNoFlusher is returned by NewSSE when the ResponseWriter cannot
	// flush, so events would sit in a buffer instead of reaching the client.
	ErrNoFlusher = errors.New("streaming: response writer does not support flushing")

	// ErrBadLastEventID is returned by ParseLastEventID for anything but a
	// non-negative decimal offset.
	ErrBadLastEventID = errors.New("streaming: invalid Last-Event-ID")
)

// Codes of a ProtocolError. They are the stable error codes of API.md.
const (
	// CodeInvalidJSON: the message is empty or not JSON.
	CodeInvalidJSON = "invalid_json"
	// CodeInvalidRequest: JSON, but not a valid message: not an object,
	// unknown or missing field, wrong type or value.
	CodeInvalidRequest = "invalid_request"
	// CodeUnknownType: the message's type is none of hello, send, cancel,
	// ping.
	CodeUnknownType = "unknown_type"
)

// ProtocolError is a client message refused by DecodeClientMessage. Code is
// one of the Code* constants; Message is for humans. The caller reports both
// to the client and keeps the connection open or not, as it decides.
type ProtocolError struct {
	Code    string
	Message string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("streaming: %s: %s", e.Code, e.Message)
}

func protocolErrorf(code, format string, args ...any) *ProtocolError {
	return &ProtocolError{Code: code, Message: fmt.Sprintf(format, args...)}
}

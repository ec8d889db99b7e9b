package session

import (
	"errors"
	"fmt"
)

var (
	// ErrNotFound: the session (or turn, or generation) does not exist, or
	// belongs to another owner.
	ErrNotFound = errors.New("session: not found")
	// ErrInvalid wraps every refusal of a malformed request; the message
	// says what is wrong.
	ErrInvalid = errors.New("session: invalid request")
	// ErrInvalidJSON: a request's JSON does not parse (or a JSON line holds
	// more than one value). It wraps ErrInvalid.
	ErrInvalidJSON = fmt.Errorf("%w: malformed JSON", ErrInvalid)
	// ErrTooLarge: a turn, a request or a field exceeds its limit.
	ErrTooLarge = errors.New("session: too large")
	// ErrConflict: the session id is taken, or an idempotency key was reused
	// for a different request.
	ErrConflict = errors.New("session: conflict")
	// ErrGenerationRunning: a turn was posted while a generation runs and
	// the session's busy policy is "reject".
	ErrGenerationRunning = errors.New("session: generation running")
	// ErrTooManyStreams: the owner holds Service.MaxStreamsPerOwner
	// streams open already.
	ErrTooManyStreams = errors.New("session: too many open streams")
)

package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"sessiond/streaming"
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
	// ErrInvalidShape: a request's JSON parses but does not fit its shape
	// (a field unknown, or a value of the wrong JSON type), as opposed to
	// values refused by their checks. It wraps ErrInvalid, and says no more
	// than it: web answers it 400, as the same fault in any JSON body.
	ErrInvalidShape = fmt.Errorf("%w", ErrInvalid)
	// ErrTooLarge: a turn, a request or a field exceeds its limit.
	ErrTooLarge = errors.New("session: too large")
	// ErrConflict: the session id is taken, or an idempotency key was reused
	// for a different request.
	ErrConflict = errors.New("session: conflict")
	// errSessionExists: a create found its id taken. It wraps
	// ErrConflict, and says no more than it.
	errSessionExists = fmt.Errorf("%w", ErrConflict)
	// ErrNoTurnIDs: a turn was posted (or a generation started) in a
	// session whose newest turn has id MaxTurnID, so the turn would need
	// an id past it. It wraps ErrConflict.
	ErrNoTurnIDs = fmt.Errorf("%w: the session's turn ids are used up", ErrConflict)
	// ErrGenerationRunning: a turn was posted while a generation runs and
	// the session's busy policy is "reject".
	ErrGenerationRunning = errors.New("session: generation running")
	// ErrTooManyStreams: the owner holds Service.MaxStreamsPerOwner
	// streams open already.
	ErrTooManyStreams = errors.New("session: too many open streams")
)

// CodeDataLost is the error code of a call to a session whose database
// file is missing (objects.ErrMissingFile): removed by hand, or a disk
// restored without it. Only Delete succeeds on such a session.
const CodeDataLost = "data_lost"

// jsonDecodeMessage says what is wrong with a JSON value that parsed but
// does not fit (encoding/json's errors name Go's types): in JSON's terms.
func jsonDecodeMessage(err error) string {
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &te) && te.Field == "":
		return "must be " + streaming.JSONKind(te.Type)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be %s", te.Field, streaming.JSONKind(te.Type))
	case errors.As(err, new(*time.ParseError)), strings.HasPrefix(err.Error(), "Time.UnmarshalJSON"):
		// time.Time's own errors name no field, and Go's layout.
		return "a timestamp (created_at, updated_at) must be an RFC 3339 string"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

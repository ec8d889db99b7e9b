package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
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

// jsonDecodeMessage says what is wrong with a JSON value that parsed but
// does not fit (encoding/json's errors name Go's types): in JSON's terms.
func jsonDecodeMessage(err error) string {
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &te) && te.Field == "":
		return "must be " + jsonKind(te.Type)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be %s", te.Field, jsonKind(te.Type))
	case errors.As(err, new(*time.ParseError)), strings.HasPrefix(err.Error(), "Time.UnmarshalJSON"):
		// time.Time's own errors name no field, and Go's layout.
		return "a timestamp (created_at, updated_at) must be an RFC 3339 string"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// jsonKind names what JSON value a Go type decodes from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "another JSON value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "another JSON value"
}

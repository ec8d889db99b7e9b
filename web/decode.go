package web

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"

	"sessiond/streaming"
)

// decodeJSON reads exactly one JSON value from r's body, at most limit
// bytes (see openBody), into v, refusing unknown fields, wrong types,
// trailing data and bodies over limit.
func (a *api) decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	body := a.openBody(w, r, limit)
	defer body.release()
	return decodeStrict(body, v)
}

// decodeOptional is decodeJSON where an empty body means {}.
func (a *api) decodeOptional(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	rb := a.openBody(w, r, limit)
	defer rb.release()
	body := bufio.NewReader(rb)
	if _, err := body.Peek(1); errors.Is(err, io.EOF) {
		return nil
	}
	return decodeStrict(body, v)
}

func decodeStrict(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var se *json.SyntaxError
		if err == nil || errors.As(err, &se) {
			return errorf(http.StatusBadRequest, "invalid_json", "the body holds more than one JSON value")
		}
		return decodeError(err) // the body's read failed: too large, too slow, over the budget
	}
	return nil
}

func decodeError(err error) error {
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errSlowBody()
	case errors.Is(err, errOverBudget):
		return errOverBudget
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "the body is over %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		return errorf(http.StatusBadRequest, "invalid_json", "the body is empty; send a JSON object")
	case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(http.StatusBadRequest, "invalid_json", "malformed JSON: %v", err)
	case errors.As(err, &te):
		return typeError(te.Field, streaming.JSONKind(te.Type))
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return errorf(http.StatusBadRequest, "invalid_request", "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return errorf(http.StatusBadRequest, "invalid_json", "malformed JSON: %v", err)
}

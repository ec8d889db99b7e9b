package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"

	"sessiond/objects"
	"sessiond/session"
)

// apiError is an error answer: an HTTP status, a stable code, a message.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// statusOf maps a session error code to its HTTP status.
var statusOf = map[string]int{
	"not_found":               http.StatusNotFound,
	"too_large":               http.StatusRequestEntityTooLarge,
	"generation_running":      http.StatusConflict,
	"conflict":                http.StatusConflict,
	"invalid_request":         http.StatusUnprocessableEntity,
	"invalid_json":            http.StatusBadRequest,
	"overloaded":              http.StatusServiceUnavailable,
	"rate_limited":            http.StatusTooManyRequests,
	"unavailable":             http.StatusServiceUnavailable,
	"upstream_error":          http.StatusBadGateway,
	"upstream_timeout":        http.StatusGatewayTimeout,
	"upstream_rate_limited":   http.StatusTooManyRequests,
	"upstream_unauthorized":   http.StatusBadGateway,
	"context_length_exceeded": http.StatusUnprocessableEntity,
}

// writeError answers err with its status and code. It is the only place
// errors become HTTP answers.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		code, msg := session.ErrorCode(err)
		status, ok := statusOf[code]
		if errors.Is(err, session.ErrInvalidShape) {
			status = http.StatusBadRequest // as decodeError answers the same in a body
		}
		if !ok && r.Context().Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			// The request ended (its client went away, the server is
			// stopping) before its answer: no fault of the server's to log.
			code, msg, status, ok = "unavailable", "the request ended before it was answered", http.StatusServiceUnavailable, true
		}
		if !ok {
			status = http.StatusInternalServerError
			log.Error("web: internal error", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		ae = &apiError{Status: status, Code: code, Message: msg}
		var oe *objects.OverloadedError
		if errors.As(err, &oe) {
			w.Header().Set("Retry-After", fmt.Sprint(int(math.Ceil(oe.RetryAfter.Seconds()))))
		}
	}
	if ae.Code == "overloaded" && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, ae.Status, map[string]any{"error": map[string]string{"code": ae.Code, "message": ae.Message}})
}

// writePostResult writes res as writeJSON would, but with each turn's
// content spliced in as stored (session.AppendTurnJSON): for a 32 MiB tool
// result encoding/json's validation and copy were a third of the POST.
func writePostResult(w http.ResponseWriter, status int, res *session.PostResult) {
	b, err := appendPostResult(nil, res)
	writeAppended(w, status, b, err, res)
}

// writeAppended writes b, an answer built by hand, or v through writeJSON
// if building it failed (err).
func writeAppended(w http.ResponseWriter, status int, b []byte, err error, v any) {
	if err != nil {
		writeJSON(w, status, v)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	writeBody(w, b)
}

func appendPostResult(b []byte, res *session.PostResult) ([]byte, error) {
	b = append(b, `{"turns":`...)
	b = appendTurns(b, res.Turns)
	g, err := json.Marshal(res.Generation)
	if err != nil {
		return nil, err
	}
	b = append(b, `,"generation":`...)
	b = append(b, g...)
	return append(b, "}\n"...), nil // Encoder.Encode's newline, as writeJSON
}

// appendTurns appends turns as a JSON array (null when nil), each with
// its content spliced in (session.AppendTurnJSON).
func appendTurns(b []byte, turns []session.Turn) []byte {
	if turns == nil {
		return append(b, "null"...)
	}
	size := 2
	for _, t := range turns {
		size += len(t.Content) + 512
	}
	b = slices.Grow(b, size)
	b = append(b, '[')
	for i, t := range turns {
		if i > 0 {
			b = append(b, ',')
		}
		b = session.AppendTurnJSON(b, t)
	}
	return append(b, ']')
}

// writeTurnsPage writes a page of turns as writeJSON would write
// {"has_more":…,"turns":…}, contents spliced in as stored.
func writeTurnsPage(w http.ResponseWriter, turns []session.Turn, more bool) {
	b := []byte(`{"has_more":false,"turns":`)
	if more {
		b = []byte(`{"has_more":true,"turns":`)
	}
	b = appendTurns(b, turns)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	writeBody(w, append(b, "}\n"...))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := jsonMarshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	writeBody(w, append(b, '\n'))
}

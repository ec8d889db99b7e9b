package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"sessiond/objects"
	"sessiond/session"
)

// Each stable error code is answered with the status the documents give
// it (docs/api.md, docs/protocol.md, docs/models.md); the upstream codes
// that no document gives a status keep the one they have, so that a
// client's handling of them does not change unannounced. A code added to
// statusOf must be added here, with its documented status.
func TestErrorCodesKeepTheirStatus(t *testing.T) {
	model := func(code string) error {
		return fmt.Errorf("post: %w", &session.ModelError{Code: code, Message: "upstream said no"})
	}
	cases := []struct {
		err        error
		code       string
		status     int
		retryAfter string // seconds, rounded up; "" none
	}{
		{fmt.Errorf("get x: %w", session.ErrNotFound), "not_found", 404, ""},
		{fmt.Errorf("post: %w", session.ErrTooLarge), "too_large", 413, ""},                   // protocol.md: Limits
		{fmt.Errorf("post: %w", session.ErrGenerationRunning), "generation_running", 409, ""}, // protocol.md: a full queue
		{fmt.Errorf("create: %w", session.ErrConflict), "conflict", 409, ""},                  // api.md: an id another owner holds
		{fmt.Errorf("post: %w", session.ErrInvalid), "invalid_request", 422, ""},
		{fmt.Errorf("import: %w", session.ErrInvalidJSON), "invalid_json", 400, ""}, // api.md: an import line that does not parse
		{fmt.Errorf("stream: %w", session.ErrTooManyStreams), "rate_limited", 429, ""},
		{fmt.Errorf("post: %w", &objects.OverloadedError{RetryAfter: 2500 * time.Millisecond}), "overloaded", 503, "3"},
		{errOverBudget, "overloaded", 503, "1"}, // api.md: a body past the budget, Retry-After: 1
		{fmt.Errorf("get: %w", objects.ErrClosed), "unavailable", 503, ""},
		{model("upstream_rate_limited"), "upstream_rate_limited", 429, ""}, // api.md: 429 as a model's upstream_rate_limited
		{model("upstream_error"), "upstream_error", 502, ""},
		{model("upstream_timeout"), "upstream_timeout", 504, ""},
		{model("upstream_unauthorized"), "upstream_unauthorized", 502, ""},
		{model("context_length_exceeded"), "context_length_exceeded", 422, ""},
		{errors.New("disk on fire"), "internal", 500, ""}, // api.md: a fault of the server's
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	held := map[string]bool{"internal": true}
	for _, c := range cases {
		held[c.code] = true
		w := httptest.NewRecorder()
		writeError(w, httptest.NewRequest("GET", "/v1/sessions/x", nil), log, c.err)
		var body struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("%v: answer %q: %v", c.err, w.Body, err)
		}
		if w.Code != c.status || body.Error.Code != c.code || body.Error.Message == "" {
			t.Errorf("%v: answered %d %s, want %d %s", c.err, w.Code, w.Body, c.status, c.code)
		}
		if got, want := w.Header().Get("Content-Type"), "application/json"; got != want {
			t.Errorf("%v: Content-Type %q, want %q", c.err, got, want)
		}
		// Retry-After with every overloaded answer, and with no other.
		if got, want := w.Header().Get("Retry-After"), c.retryAfter; got != want {
			t.Errorf("%v: Retry-After %q, want %q", c.err, got, want)
		}
	}
	for code := range statusOf {
		if !held[code] {
			t.Errorf("code %s (status %d) is not held by this test: add it with its documented status", code, statusOf[code])
		}
	}

	// A request that ended before its answer is 503 unavailable, not an
	// internal error; a cancellation while the request goes on is one.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := httptest.NewRecorder()
	writeError(w, httptest.NewRequest("GET", "/v1/sessions/x", nil).WithContext(ctx), log, fmt.Errorf("get: %w", context.Canceled))
	if w.Code != http.StatusServiceUnavailable || !json.Valid(w.Body.Bytes()) || !strings.Contains(w.Body.String(), `"code":"unavailable"`) {
		t.Errorf("an ended request: %d %s, want 503 unavailable", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	writeError(w, httptest.NewRequest("GET", "/v1/sessions/x", nil), log, fmt.Errorf("get: %w", context.Canceled))
	if w.Code != http.StatusInternalServerError {
		t.Errorf("a cancellation of a live request: %d %s, want 500", w.Code, w.Body)
	}
}

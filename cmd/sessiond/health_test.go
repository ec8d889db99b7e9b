package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"sessiond/objects"
)

// /healthz says ok while the server serves, shutting_down while it stops,
// and disk_failed (503, with the cause) once the runtime refuses calls
// after a failed disk flush: a supervisor then restarts it.
func TestHealthzReportsTheRuntimesFault(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		ready  bool
		fault  error
		status int
		want   string
	}{
		{true, nil, 200, "ok"},
		{false, nil, 503, "shutting_down"},
		{true, fmt.Errorf("%w (input/output error)", objects.ErrDiskFailed), 503, "disk_failed"},
	} {
		h := newHandler(config{}, logger, nil, func() bool { return c.ready }, func() error { return c.fault })
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		var body struct{ Status, Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("healthz body %q: %v", rec.Body, err)
		}
		if rec.Code != c.status || body.Status != c.want {
			t.Errorf("ready=%v fault=%v: %d %q, want %d %q", c.ready, c.fault, rec.Code, body.Status, c.status, c.want)
		}
		if c.fault != nil && !strings.Contains(body.Error, "input/output error") {
			t.Errorf("disk_failed without its cause: %q", body.Error)
		}
	}
}

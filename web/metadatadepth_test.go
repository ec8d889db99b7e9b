package web_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"sessiond/web"
)

// nested returns metadata that nests depth levels deep, the object itself
// the first: {"a":{"a":…{}…}}.
func nested(depth int) string {
	return strings.Repeat(`{"a":`, depth-1) + "{}" + strings.Repeat("}", depth-1)
}

// Whatever metadata a create or PATCH takes exports to lines that import:
// metadata nested as deep as a body may hold it, one level short of its
// 10,000, nested two levels deeper in its export line than JSON decoders
// take, and did not import. It is refused up front instead (413
// too_large, as metadata over its size), and the deepest taken round-trips.
func TestMetadataDepthRoundTrips(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	const limit = 9998
	deep := `{"metadata":` + nested(limit+1) + `}`
	refused := func(method, path string) {
		t.Helper()
		var e apiErr
		if st, raw := s.do(t, method, path, deep, &e); st != 413 || e.Error.Code != "too_large" || !strings.Contains(e.Error.Message, "9998") {
			t.Fatalf("%s %s with metadata %d levels deep: %d %.200s, want 413 too_large naming the limit", method, path, limit+1, st, raw)
		}
	}
	refused("POST", "/v1/sessions")
	sess := s.createSession(t, map[string]any{"title": "deep"})
	refused("PATCH", "/v1/sessions/"+sess.ID)

	if st, raw := s.do(t, "PATCH", "/v1/sessions/"+sess.ID, `{"metadata":`+nested(limit)+`}`, nil); st != 200 {
		t.Fatalf("PATCH with metadata %d levels deep: %d %.200s", limit, st, raw)
	}
	resp, err := http.Get(s.URL + "/v1/sessions/" + sess.ID + "/export")
	if err != nil {
		t.Fatal(err)
	}
	export, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("export: %d %v", resp.StatusCode, err)
	}
	if st, raw := s.do(t, "POST", "/v1/sessions/import", export, nil); st != 201 {
		t.Fatalf("import of the export: %d %.200s", st, raw)
	}
}

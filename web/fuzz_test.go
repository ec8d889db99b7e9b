package web_test

import (
	"net/http/httptest"
	"strings"
	"testing"

	"sessiond/web"
)

// FuzzRequestBodies posts arbitrary bodies to the endpoints that decode
// JSON or JSON lines: the answer is always a success or a 4xx with a stable
// code, never a 5xx or a panic.
func FuzzRequestBodies(f *testing.F) {
	for _, seed := range []string{
		`{"turns":[{"role":"user","content":"hi"}]}`,
		`{"turns":[{"role":"tool","tool_call_id":"c1","content":[{"type":"text","text":"x"}]}],"generate":true}`,
		`{"turns":[{"role":"user","content":"\u0000\ud800"}]}`,
		`{"title":"x","metadata":{"a":[1,2,{}]}}`,
		`{"turn_id":1}`, `{"turn_id":-1}`, `[]`, `null`, `"x"`, `{"turns":null}`, `{`, "",
		"{\"type\":\"session\",\"session\":{\"id\":\"abc\"}}\n{\"type\":\"turn\",\"turn\":{\"id\":1,\"role\":\"user\",\"content\":\"x\"}}\n",
	} {
		for _, path := range []string{"turns", "sessions", "fork", "import", "patch"} {
			f.Add(path, seed)
		}
	}
	s := newServer(f, 0, web.Config{MaxBodyBytes: 1 << 16}, nil)
	sess := s.createSession(f, nil)
	h := s.Config.Handler
	f.Fuzz(func(t *testing.T, which, body string) {
		method, path := "POST", "/v1/sessions/"+sess.ID+"/turns"
		switch which {
		case "sessions":
			path = "/v1/sessions"
		case "fork":
			path = "/v1/sessions/" + sess.ID + "/fork"
		case "import":
			path = "/v1/sessions/import"
		case "patch":
			method, path = "PATCH", "/v1/sessions/"+sess.ID
		}
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", method, path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && !strings.Contains(rec.Body.String(), `"code":`) {
			t.Fatalf("%s %s %q: %d without an error code: %s", method, path, body, rec.Code, rec.Body)
		}
	})
}

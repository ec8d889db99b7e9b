package web_test

import (
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"sessiond/web"
)

// fuzzStatuses are the statuses each stable error code may come with in
// an answer to a request body (docs/api.md, docs/protocol.md).
var fuzzStatuses = map[string][]int{
	"invalid_json":       {400},
	"invalid_request":    {400, 422},
	"not_found":          {404},
	"conflict":           {409},
	"generation_running": {409},
	"too_large":          {413},
}

// FuzzRequestBodies posts arbitrary bodies to the endpoints that decode
// JSON or JSON lines: the answer is always a success or a 4xx with a
// stable code at its documented status, never a 5xx or a panic, and a
// refused body stores nothing: the session and the list of sessions are
// as they were before it.
func FuzzRequestBodies(f *testing.F) {
	for _, seed := range []string{
		`{"turns":[{"role":"user","content":"hi"}]}`,
		`{"turns":[{"role":"tool","tool_call_id":"c1","content":[{"type":"text","text":"x"}]}],"generate":true}`,
		`{"turns":[{"role":"user","content":"\u0000\ud800"}]}`,
		`{"turns":[{"role":"user","content":"kept?"}],"generate":true,"model":"no-such-model"}`,
		`{"turns":[{"role":"user","content":"x"}],"parent_id":999}`,
		`{"turns":[{"role":"user","content":"x"},{"role":"wizard","content":"y"}]}`,
		`{"title":"x","metadata":{"a":[1,2,{}]}}`, `{"title":"x","model":"no-such-model"}`, `{"busy_policy":""}`,
		`{"turn_id":1}`, `{"turn_id":-1}`, `{"turn_id":999}`, `[]`, `null`, `"x"`, `{"turns":null}`, `{`, "",
		"{\"type\":\"session\",\"session\":{\"id\":\"abc\"}}\n{\"type\":\"turn\",\"turn\":{\"id\":1,\"role\":\"user\",\"content\":\"x\"}}\n",
		"{\"type\":\"session\",\"session\":{\"id\":\"abd\"}}\n{\"type\":\"turn\",\"turn\":{\"id\":2,\"parent_id\":1,\"role\":\"user\",\"content\":\"x\"}}\n",
		"{\"type\":\"session\",\"session\":{\"id\":\"abe\"}}\n{\"type\":\"turn\",\"turn\":{\"id\":1,\"role\":\"user\",\"content\":\"x\"}}\n{bad\n",
		// Not UTF-8: refused as not JSON, in a content, a title, metadata,
		// a key, a cut rune, an import line.
		"{\"turns\":[{\"role\":\"user\",\"content\":\"raw \xff\xfe\"}],\"generate\":true}", "{\"title\":\"t\xff\"}",
		"{\"metadata\":{\"k\":\"v\xff\"}}", "{\"tit\xe6\x97le\":\"x\"}", "{\"title\":\"日\xe6\x97",
		"{\"type\":\"session\",\"session\":{\"id\":\"abf\"}}\n{\"type\":\"turn\",\"turn\":{\"id\":1,\"role\":\"user\",\"content\":\"\xc0\xaf\"}}\n",
	} {
		for _, path := range []string{"turns", "sessions", "fork", "import", "patch"} {
			f.Add(path, seed)
		}
	}
	s := newServer(f, 0, web.Config{MaxBodyBytes: 1 << 16}, nil)
	sess := s.createSession(f, nil)
	h := s.Config.Handler
	get := func(t *testing.T, path string) string {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 {
			t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
		return rec.Body.String()
	}
	// state is what a refused body must leave as it was: the session
	// (its turns, head, title …) and the list of sessions.
	state := func(t *testing.T) string {
		t.Helper()
		return get(t, "/v1/sessions/"+sess.ID) + get(t, "/v1/sessions?limit=100")
	}
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
		// A generation an earlier body started ends first: it changes
		// the session by itself.
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(get(t, "/v1/sessions/"+sess.ID), `"generation":null`) {
			if time.Now().After(deadline) {
				t.Fatalf("a generation still runs: %s", get(t, "/v1/sessions/"+sess.ID))
			}
			time.Sleep(time.Millisecond)
		}
		before := state(t)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		if rec.Code < 400 {
			if !utf8.ValidString(body) {
				t.Fatalf("%s %s %q: %d; a body that is not UTF-8 was taken", method, path, body, rec.Code)
			}
			return
		}
		var e struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Message == "" {
			t.Fatalf("%s %s %q: %d without an error object: %s", method, path, body, rec.Code, rec.Body)
		}
		if want, ok := fuzzStatuses[e.Error.Code]; !ok || !slices.Contains(want, rec.Code) {
			t.Fatalf("%s %s %q: %d %s; want a stable code at its status (%v)", method, path, body, rec.Code, rec.Body, fuzzStatuses)
		}
		if after := state(t); after != before {
			t.Fatalf("%s %s %q: refused (%d %s) but stored:\nbefore %s\nafter  %s", method, path, body, rec.Code, e.Error.Code, before, after)
		}
	})
}

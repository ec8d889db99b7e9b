package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"sessiond/session"
	"sessiond/web"
)

// postTurn posts one user turn (under parent when it is not nil) and
// returns it.
func (s *server) postTurn(tb testing.TB, id, text string, parent any) session.Turn {
	tb.Helper()
	body := map[string]any{"turns": []any{map[string]any{"role": "user", "content": text}}}
	if parent != nil {
		body["parent_id"] = parent
	}
	var res session.PostResult
	if st, raw := s.do(tb, "POST", "/v1/sessions/"+id+"/turns", body, &res); st != 201 || len(res.Turns) != 1 {
		tb.Fatalf("post %q under %v: %d %s", text, parent, st, raw)
	}
	return res.Turns[0]
}

// turnPage is GET /turns's answer.
type turnPage struct {
	Turns   []session.Turn `json:"turns"`
	HasMore bool           `json:"has_more"`
}

// ?branch= naming no turn is refused as an unknown parent_id is (422),
// whether the session has branches or not; before, a linear session
// answered its whole head branch and a branched one an empty page.
func TestTurnsUnknownBranchRefused(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	linear := s.createSession(t, nil)
	s.postTurn(t, linear.ID, "one", nil)
	s.postTurn(t, linear.ID, "two", nil)
	s.expectError(t, "GET", "/v1/sessions/"+linear.ID+"/turns?branch=999", nil, 422, "invalid_request")
	s.expectError(t, "GET", "/v1/sessions/"+linear.ID+"/turns?branch=999&after=0", nil, 422, "invalid_request")

	branched := s.createSession(t, nil)
	s.postTurn(t, branched.ID, "one", nil)
	s.postTurn(t, branched.ID, "two", nil)
	s.postTurn(t, branched.ID, "two, edited", 1)
	s.expectError(t, "GET", "/v1/sessions/"+branched.ID+"/turns?branch=999", nil, 422, "invalid_request")
	s.expectError(t, "GET", "/v1/sessions/"+branched.ID+"/turns?branch=999&after=0", nil, 422, "invalid_request")

	// A known leaf still pages its branch.
	var p turnPage
	if st, raw := s.do(t, "GET", "/v1/sessions/"+branched.ID+"/turns?branch=2", nil, &p); st != 200 || len(p.Turns) != 2 || p.Turns[1].ID != 2 {
		t.Fatalf("branch=2: %d %s", st, raw)
	}
}

// PATCH {"busy_policy": ""} is refused (422): the policy stays one of
// queue, reject and interrupt. On a create, "" still means the default.
func TestPatchEmptyBusyPolicyRefused(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, map[string]any{"busy_policy": "reject"})
	s.expectError(t, "PATCH", "/v1/sessions/"+sess.ID, `{"busy_policy": ""}`, 422, "invalid_request")
	var got session.Session
	s.do(t, "GET", "/v1/sessions/"+sess.ID, nil, &got)
	if got.BusyPolicy != "reject" {
		t.Fatalf("busy_policy after a refused PATCH: %q", got.BusyPolicy)
	}
	if d := s.createSession(t, map[string]any{"busy_policy": ""}); d.BusyPolicy != "queue" {
		t.Fatalf("create with busy_policy \"\": %q", d.BusyPolicy)
	}
}

// "root": true posts turns with no parent: a sibling of the first turn
// (an edit of the first message), each branch read on its own. parent_id
// 0 still means the head, as before.
func TestPostAtRootMakesSiblingOfFirstTurn(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	turnsPath := "/v1/sessions/" + sess.ID + "/turns"
	post := func(body string) session.PostResult {
		t.Helper()
		var res session.PostResult
		if st, raw := s.do(t, "POST", turnsPath, body, &res); st != 201 {
			t.Fatalf("post %s: %d %s", body, st, raw)
		}
		if res.Generation != nil {
			s.waitGeneration(t, sess.ID, res.Generation.ID)
		}
		return res
	}
	post(`{"turns":[{"role":"user","content":"/say first answer"}],"generate":true}`) // turns 1, 2
	edit := post(`{"turns":[{"role":"user","content":"/say edited answer"}],"generate":true,"root":true}`)
	if len(edit.Turns) != 1 || edit.Turns[0].ID != 3 || edit.Turns[0].ParentID != nil {
		t.Fatalf("root post made %+v, want turn 3 with no parent", edit.Turns)
	}
	branch := func(q string) []string {
		t.Helper()
		var p turnPage
		if st, raw := s.do(t, "GET", turnsPath+q, nil, &p); st != 200 {
			t.Fatalf("turns%s: %d %s", q, st, raw)
		}
		var out []string
		for _, tr := range p.Turns {
			out = append(out, string(tr.Content))
		}
		return out
	}
	if got := fmt.Sprint(branch("?branch=2")); got != `["/say first answer" "first answer"]` {
		t.Fatalf("the first branch: %s", got)
	}
	if got := fmt.Sprint(branch("?branch=4")); got != `["/say edited answer" "edited answer"]` {
		t.Fatalf("the branch at the root: %s", got)
	}
	if got := fmt.Sprint(branch("?after=0")); got != `["/say edited answer" "edited answer"]` {
		t.Fatalf("the head branch: %s", got)
	}
	// parent_id 0 is the head still.
	if res := post(`{"turns":[{"role":"user","content":"next"}],"parent_id":0}`); res.Turns[0].ParentID == nil || *res.Turns[0].ParentID != 4 {
		t.Fatalf("parent_id 0 made %+v, want a turn under the head 4", res.Turns[0])
	}
	s.expectError(t, "POST", turnsPath, `{"turns":[{"role":"user","content":"x"}],"root":true,"parent_id":1}`, 422, "invalid_request")
	s.expectError(t, "POST", turnsPath, `{"generate":true,"root":true}`, 422, "invalid_request")
	// root is part of what an Idempotency-Key stands for.
	if st, raw := s.do(t, "POST", turnsPath, `{"turns":[{"role":"user","content":"k"}],"root":true}`, nil, "Idempotency-Key", "r1"); st != 201 {
		t.Fatalf("root post with a key: %d %s", st, raw)
	}
	if st, raw := s.do(t, "POST", turnsPath, `{"turns":[{"role":"user","content":"k"}]}`, nil, "Idempotency-Key", "r1"); st != 409 {
		t.Fatalf("the key again without root: %d %s, want 409", st, raw)
	}
	s.expectError(t, "POST", turnsPath, `{"turns":[{"role":"user","content":"x"}],"root":"yes"}`, 400, "invalid_request")
}

// GET /sessions?owner=: an admin's list of an owner with no sessions is
// an empty page that creates nothing (before, it left a directory
// database per name asked about); a non-admin's owner= naming someone
// else is 403, not silently its own list; a bad cursor is 400, as any bad
// query parameter.
func TestListOwnerParameter(t *testing.T) {
	const alice, root = "alice-key-0123456789", "root-key-0123456789a"
	s := newServer(t, 0, web.Config{Keys: map[string]web.Principal{alice: {Owner: "alice"}, root: {Owner: "root", Admin: true}}}, nil)
	s.as(alice).createSession(t, nil)
	dirs, err := s.rt.Namespace(session.NamespaceDirectories)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Sessions   []session.DirEntry `json:"sessions"`
		NextCursor *string            `json:"next_cursor"`
	}
	if st, raw := s.as(root).do(t, "GET", "/v1/sessions?owner=ghost", nil, &list); st != 200 || list.Sessions == nil || len(list.Sessions) != 0 || list.NextCursor != nil {
		t.Fatalf("admin list of an unknown owner: %d %s", st, raw)
	}
	if ok, err := dirs.Exists(context.Background(), "ghost"); err != nil || ok {
		t.Fatalf("listing ghost made its directory: %v %v", ok, err)
	}
	if st, raw := s.as(root).do(t, "GET", "/v1/sessions?owner=alice", nil, &list); st != 200 || len(list.Sessions) != 1 {
		t.Fatalf("admin list of alice: %d %s", st, raw)
	}
	s.as(alice).expectError(t, "GET", "/v1/sessions?owner=root", nil, 403, "forbidden")
	if st, raw := s.as(alice).do(t, "GET", "/v1/sessions?owner=alice", nil, &list); st != 200 || len(list.Sessions) != 1 {
		t.Fatalf("alice's owner=alice: %d %s", st, raw)
	}
	s.as(alice).expectError(t, "GET", "/v1/sessions?cursor=garbage!", nil, 400, "invalid_request")
	s.as(root).expectError(t, "GET", "/v1/sessions?owner=ghost&cursor=garbage!", nil, 400, "invalid_request")
}

// POST /tickets without session_id is 422 naming the field, not a 404 of
// a session called "".
func TestTicketWithoutSessionID(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	for _, body := range []string{`{}`, `{"session_id":""}`, `{"session_id":null}`} {
		var e apiErr
		if st, raw := s.do(t, "POST", "/v1/tickets", body, &e); st != 422 || e.Error.Code != "invalid_request" || !strings.Contains(e.Error.Message, "session_id") {
			t.Fatalf("POST /v1/tickets %s: %d %s", body, st, raw)
		}
	}
}

// Import: a turn without created_at gets the import's time (not year 1),
// negative usage counts are 422, values of the wrong type 400 (as in any
// JSON body), and messages about them speak of JSON, not of Go's types.
func TestImportChecksTurnValues(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	const head = `{"type":"session","session":{"title":"imp"}}` + "\n"
	before := time.Now().Add(-time.Minute)
	var sess session.Session
	if st, raw := s.do(t, "POST", "/v1/sessions/import", head+`{"type":"turn","turn":{"id":1,"role":"user","content":"x"}}`+"\n", &sess); st != 201 {
		t.Fatalf("import: %d %s", st, raw)
	}
	var p turnPage
	s.do(t, "GET", "/v1/sessions/"+sess.ID+"/turns", nil, &p)
	if len(p.Turns) != 1 || p.Turns[0].CreatedAt.Before(before) {
		t.Fatalf("a turn imported without created_at: %+v", p.Turns)
	}
	for _, c := range []struct {
		body, want string
		status     int
	}{
		{head + `{"type":"turn","turn":{"id":1,"role":"assistant","content":"x","usage":{"prompt_tokens":-5,"completion_tokens":1,"total_tokens":1}}}`, "negative", 422},
		{`[]`, "must be an object", 400},
		{head + `{"type":"turn","turn":{"id":"1","role":"user","content":"x"}}`, `"turn.id" must be an integer`, 400},
		{head + `{"type":"turn","turn":{"id":1,"role":"user","content":"x","created_at":5}}`, "created_at", 400},
		{head + `{"type":"turn","turn":{"id":1,"role":"user","content":"x","created_at":"yesterday"}}`, "created_at", 400},
	} {
		var e apiErr
		st, raw := s.do(t, "POST", "/v1/sessions/import", c.body, &e)
		if st != c.status || e.Error.Code != "invalid_request" || !strings.Contains(e.Error.Message, c.want) ||
			strings.Contains(e.Error.Message, "Go ") || strings.Contains(e.Error.Message, "session.") || strings.Contains(e.Error.Message, "2006") {
			t.Errorf("import %s: %d %s, want %d saying %q in JSON's terms", c.body, st, raw, c.status, c.want)
		}
	}
}

// A PATCH that changes nothing ({}, nulls, the values the session has)
// leaves updated_at, and so the list's order, as it was.
func TestNoOpPatchKeepsUpdatedAt(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	a := s.createSession(t, map[string]any{"title": "a", "metadata": json.RawMessage(`{"k":1,"n":{"big":9007199254740993,"f":0.5,"z":0}}`)})
	b := s.createSession(t, map[string]any{"title": "b"})
	// Past b's millisecond: a PATCH that saved would now move a on top.
	checkFor(t, "the clock to pass the last update", func() bool { return time.Now().Truncate(time.Millisecond).After(b.UpdatedAt.Time) })
	for _, body := range []string{`{}`, `{"title":null}`, `{"title":"a"}`, `{"busy_policy":"queue","model":"offline"}`,
		`{"metadata":{ "k": 1, "n": {"big": 9007199254740993, "f": 0.5, "z": 0} }}`,
		// The same value: keys in another order, numbers written otherwise.
		`{"metadata":{"n":{"z":-0.0,"f":5e-1,"big":9007199254740993.0},"k":1.0}}`,
		`{"metadata":{"k":10E-1,"n":{"big":90071992547409930e-1,"f":0.50,"z":0e5}}}`,
	} {
		var got session.Session
		if st, raw := s.do(t, "PATCH", "/v1/sessions/"+a.ID, body, &got); st != 200 || !got.UpdatedAt.Equal(a.UpdatedAt.Time) {
			t.Fatalf("PATCH %s: %d %s; updated_at was %v", body, st, raw, a.UpdatedAt)
		}
	}
	var list struct{ Sessions []session.DirEntry }
	s.do(t, "GET", "/v1/sessions", nil, &list)
	if len(list.Sessions) != 2 || list.Sessions[0].ID != b.ID {
		t.Fatalf("list after no-op PATCHes: %+v, want %s first", list.Sessions, b.ID)
	}
	var got session.Session
	// A number one apart, which float64 would take for the same: a change.
	if st, raw := s.do(t, "PATCH", "/v1/sessions/"+a.ID, `{"metadata":{"k":1,"n":{"big":9007199254740992,"f":0.5,"z":0}}}`, &got); st != 200 || !got.UpdatedAt.After(a.UpdatedAt.Time) || !strings.Contains(string(got.Metadata), "9007199254740992") {
		t.Fatalf("a PATCH of a large integer: %d %s", st, raw)
	}
	if st, raw := s.do(t, "PATCH", "/v1/sessions/"+a.ID, `{"title":"a2"}`, &got); st != 200 || !got.UpdatedAt.After(a.UpdatedAt.Time) || got.Title != "a2" {
		t.Fatalf("a real PATCH: %d %s", st, raw)
	}
}

// HTTP hygiene: a 405 carries Allow; HEAD is answered on GET routes; a
// 403 carries no WWW-Authenticate (only a 401 does); a path with an empty
// segment is a JSON error, not a redirect.
func TestHTTPHygiene(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	req := func(method, path string, hdr ...string) *http.Response {
		t.Helper()
		r, _ := http.NewRequest(method, s.URL+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for path, want := range map[string]string{"/v1/sessions": "GET, HEAD, POST", "/v1/sessions/" + sess.ID: "GET, HEAD, PATCH, DELETE"} {
		if resp := req("PUT", path); resp.StatusCode != 405 || resp.Header.Get("Allow") != want {
			t.Errorf("PUT %s: %d, Allow %q, want 405 with %q", path, resp.StatusCode, resp.Header.Get("Allow"), want)
		}
	}
	for _, path := range []string{"/v1/sessions", "/v1/sessions/" + sess.ID, "/v1/openapi.json"} {
		if resp := req("HEAD", path); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("HEAD %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	resp := req("GET", "/v1/sessions", "Origin", "http://evil.example")
	if resp.StatusCode != 403 || resp.Header.Get("WWW-Authenticate") != "" {
		t.Errorf("a foreign page: %d, WWW-Authenticate %q; want 403 without it", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	keyed := newServer(t, 0, web.Config{Keys: map[string]web.Principal{"alice-key-0123456789": {Owner: "alice"}}}, nil)
	if resp, err := http.Get(keyed.URL + "/v1/sessions"); err != nil || resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("no key: %v %v, want 401 with WWW-Authenticate", resp, err)
	}
	if resp := req("GET", "/v1/sessions//turns"); resp.StatusCode < 400 || resp.StatusCode >= 500 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("GET /v1/sessions//turns: %d %s, want a JSON 4xx", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// An unknown model is refused in the API's words, the same on create,
// PATCH and post, without the registry's internal wording.
func TestUnknownModelMessage(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/sessions", `{"model":"nope"}`},
		{"PATCH", "/v1/sessions/" + sess.ID, `{"model":"nope"}`},
		{"POST", "/v1/sessions/" + sess.ID + "/turns", `{"turns":[{"role":"user","content":"x"}],"generate":true,"model":"nope"}`},
	} {
		var e apiErr
		st, raw := s.do(t, c.method, c.path, c.body, &e)
		if st != 422 || e.Error.Code != "invalid_request" || !strings.Contains(e.Error.Message, `model "nope" is not one this server serves`) || strings.Contains(e.Error.Message, "get model") {
			t.Errorf("%s %s %s: %d %s", c.method, c.path, c.body, st, raw)
		}
	}
}

// "metadata": null leaves the metadata out, as null does for every other
// field, on create, PATCH and import (it was 422 "must be a JSON object").
func TestMetadataNullIsAbsent(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, map[string]any{"metadata": nil})
	if string(sess.Metadata) != "{}" {
		t.Fatalf("created with metadata null: %s", sess.Metadata)
	}
	var got session.Session
	s.do(t, "PATCH", "/v1/sessions/"+sess.ID, `{"metadata":{"k":1}}`, &got)
	if st, raw := s.do(t, "PATCH", "/v1/sessions/"+sess.ID, `{"metadata":null,"title":"t"}`, &got); st != 200 || string(got.Metadata) != `{"k":1}` || got.Title != "t" {
		t.Fatalf("PATCH metadata null: %d %s", st, raw)
	}
	if st, raw := s.do(t, "POST", "/v1/sessions/import", `{"type":"session","session":{"title":"i","metadata":null}}`+"\n", &got); st != 201 || string(got.Metadata) != "{}" {
		t.Fatalf("import with metadata null: %d %s", st, raw)
	}
}

// generate with no turns on a session that has none is 422: there is
// nothing to answer (it started a generation with no prompt).
func TestGenerateOnEmptySessionRefused(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	s.expectError(t, "POST", "/v1/sessions/"+sess.ID+"/turns", `{"generate":true}`, 422, "invalid_request")
	s.expectError(t, "POST", "/v1/sessions/"+sess.ID+"/turns", `{"turns":null,"generate":true}`, 422, "invalid_request")
	var got session.Session
	s.do(t, "GET", "/v1/sessions/"+sess.ID, nil, &got)
	if got.Generation != nil || got.LastTurnID != 0 {
		t.Fatalf("after refused posts: %+v", got)
	}
}

// Accept: text/event-stream;q=0 is "not an event stream": the post is
// answered in JSON (201); with q above 0 it streams (200).
func TestAcceptEventStreamQZero(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	for accept, want := range map[string]int{
		"text/event-stream;q=0, application/json":   201,
		"text/event-stream; q=0.0":                  201,
		"application/json, text/event-stream;q=0.5": 200,
		"text/event-stream":                         200,
	} {
		st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", `{"turns":[{"role":"user","content":"/say x"}],"generate":true}`, nil, "Accept", accept)
		if st != want {
			t.Errorf("Accept: %s: %d %.200s, want %d", accept, st, raw, want)
		}
		// Each post starts from an idle session.
		var got session.Session
		checkFor(t, "the generation to end", func() bool {
			s.do(t, "GET", "/v1/sessions/"+sess.ID, nil, &got)
			return got.Generation == nil
		})
	}
}

// A request whose context ends before its answer (a client that went
// away while its cancel waited) is answered 503 unavailable and logged as
// no internal error (it was a 500 and an ERROR line).
func TestEndedRequestIsNoInternalError(t *testing.T) {
	s := newServer(t, 5, web.Config{}, nil)
	sess := s.createSession(t, nil)
	var res session.PostResult
	if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", `{"turns":[{"role":"user","content":"/words 500"}],"generate":true}`, &res); st != 201 {
		t.Fatalf("post: %d %s", st, raw)
	}
	var logged bytes.Buffer
	h := web.NewHandler(s.svc, web.Config{AuthOff: true, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequestWithContext(ctx, "POST", "/v1/sessions/"+sess.ID+"/generations/"+res.Generation.ID+"/cancel", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 503 || strings.Contains(logged.String(), "level=ERROR") {
		t.Fatalf("an ended request: %d %s; logged %s", rec.Code, rec.Body, logged.String())
	}
}

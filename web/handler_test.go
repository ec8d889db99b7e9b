package web_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"sessiond/session"
	"sessiond/web"
)

func TestSessionLifecycleOverHTTP(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, map[string]any{"title": "hello", "metadata": map[string]any{"k": "v"}})
	if sess.Owner != web.LocalOwner || sess.Title != "hello" {
		t.Fatalf("created %+v", sess)
	}
	var got session.Session
	if st, _ := s.do(t, "GET", "/v1/sessions/"+sess.ID, nil, &got); st != 200 || got.ID != sess.ID {
		t.Fatalf("get: %d %+v", st, got)
	}
	// With auth off, an Authorization header of a proxy's own is no key.
	if st, raw := s.do(t, "GET", "/v1/sessions/"+sess.ID, nil, nil, "Authorization", "Basic dXNlcjpwYXNz"); st != 200 {
		t.Fatalf("get with a basic auth header, auth off: %d %s", st, raw)
	}
	if st, raw := s.do(t, "PATCH", "/v1/sessions/"+sess.ID, map[string]any{"title": "renamed"}, &got); st != 200 || got.Title != "renamed" {
		t.Fatalf("patch: %d %s", st, raw)
	}
	var res session.PostResult
	st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns",
		map[string]any{"turns": []any{map[string]any{"role": "user", "content": "/say fine thanks"}}, "generate": true}, &res)
	if st != 201 || len(res.Turns) != 1 || res.Generation == nil {
		t.Fatalf("post: %d %s", st, raw)
	}
	g := s.waitGeneration(t, sess.ID, res.Generation.ID)
	if g.Status != "done" {
		t.Fatalf("generation %+v", g)
	}
	var page struct {
		Turns   []session.Turn `json:"turns"`
		HasMore bool           `json:"has_more"`
	}
	s.do(t, "GET", "/v1/sessions/"+sess.ID+"/turns?limit=1", nil, &page)
	if len(page.Turns) != 1 || string(page.Turns[0].Content) != `"fine thanks"` || !page.HasMore {
		t.Fatalf("turns page %+v", page)
	}
	var list struct {
		Sessions   []session.DirEntry `json:"sessions"`
		NextCursor *string            `json:"next_cursor"`
	}
	s.do(t, "GET", "/v1/sessions", nil, &list)
	if len(list.Sessions) != 1 || list.Sessions[0].Title != "renamed" || list.Sessions[0].Preview != "fine thanks" || list.NextCursor != nil {
		t.Fatalf("list %+v", list)
	}
	var fork session.Session
	if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/fork", map[string]any{"turn_id": 1}, &fork); st != 201 || fork.LastTurnID != 1 {
		t.Fatalf("fork: %d %s", st, raw)
	}
	st, export := s.do(t, "GET", "/v1/sessions/"+sess.ID+"/export", nil, nil)
	if st != 200 || strings.Count(string(export), "\n") != 3 {
		t.Fatalf("export: %d %s", st, export)
	}
	if st, _ := s.do(t, "DELETE", "/v1/sessions/"+sess.ID, nil, nil); st != 204 {
		t.Fatalf("delete: %d", st)
	}
	s.expectError(t, "GET", "/v1/sessions/"+sess.ID, nil, 404, "not_found")
	var imported session.Session
	if st, raw := s.do(t, "POST", "/v1/sessions/import", export, &imported); st != 201 || imported.ID != sess.ID || imported.LastTurnID != 2 {
		t.Fatalf("import: %d %s", st, raw)
	}
}

func TestBadInputIsRefusedClearly(t *testing.T) {
	s := newServer(t, 0, web.Config{MaxBodyBytes: 4096}, nil)
	sess := s.createSession(t, nil)
	turns := "/v1/sessions/" + sess.ID + "/turns"
	for _, c := range []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"POST", "/v1/sessions", "{bad", 400, "invalid_json"},
		{"POST", "/v1/sessions", `{"title": 5}`, 400, "invalid_request"},
		{"POST", "/v1/sessions", `{"nope": 1}`, 400, "invalid_request"},
		{"POST", "/v1/sessions", `{} {}`, 400, "invalid_json"},
		{"POST", "/v1/sessions", `{"id": "has space"}`, 422, "invalid_request"},
		{"POST", "/v1/sessions", `{"model": "missing"}`, 422, "invalid_request"},
		{"POST", "/v1/sessions", `{"metadata": [1]}`, 422, "invalid_request"},
		{"POST", "/v1/sessions", `[]`, 400, "invalid_request"},
		{"POST", "/v1/sessions", `{"title": 5}`, 400, "invalid_request"},
		{"POST", "/v1/sessions", `{"busy_policy": "maybe"}`, 422, "invalid_request"},
		{"POST", "/v1/sessions", `{"title": "` + strings.Repeat("x", 5000) + `"}`, 413, "too_large"},
		{"POST", "/v1/sessions", map[string]any{"id": sess.ID}, 409, "conflict"},
		{"GET", "/v1/sessions/..%2F..%2Fetc", nil, 404, "not_found"},
		{"GET", "/v1/sessions/" + strings.Repeat("a", 300), nil, 404, "not_found"},
		{"POST", turns, `{"turns": [{"role": "assistant", "content": "x"}]}`, 422, "invalid_request"},
		{"POST", turns, `{"turns": [{"role": "tool", "content": "x"}]}`, 422, "invalid_request"},
		{"POST", turns, `{"turns": [{"role": "user", "content": 5}]}`, 422, "invalid_request"},
		{"POST", turns, `{"turns": [{"role": "user", "content": null}]}`, 422, "invalid_request"},
		{"POST", turns, `{"turns": [{"role": "user", "content": []}]}`, 422, "invalid_request"},
		{"POST", turns, `{"turns": [{"role": "user", "content": [{"text": "no type"}]}]}`, 422, "invalid_request"},
		{"POST", turns, `{"turns": []}`, 422, "invalid_request"},
		{"POST", turns, `{"turns": [{"role": "user", "content": "x"}], "generate": true, "model": "nope"}`, 422, "invalid_request"},
		{"GET", turns + "?limit=0", nil, 400, "invalid_request"},
		{"GET", turns + "?after=x", nil, 400, "invalid_request"},
		{"GET", turns + "?after=1&before=3", nil, 400, "invalid_request"},
		{"GET", "/v1/sessions/" + sess.ID + "/generations/g_nope", nil, 404, "not_found"},
		{"POST", "/v1/sessions/" + sess.ID + "/fork", `{"turn_id": 99}`, 422, "invalid_request"},
		{"POST", "/v1/sessions/" + sess.ID + "/fork", `{"turn_id": 0}`, 422, "invalid_request"},
		{"POST", "/v1/sessions/no-such-session/fork", `{"turn_id": 0}`, 404, "not_found"}, // the session first, as for any turn id
		{"POST", "/v1/sessions/import", "garbage\n", 400, "invalid_json"},
		{"POST", "/v1/sessions/import", `{"type":"session","session":{"title":"a"}} garbage`, 400, "invalid_json"},
		{"POST", "/v1/sessions/import", `{"type":"session","session":{"title":"a"}}}`, 400, "invalid_json"},
		{"POST", "/v1/sessions/import", `{"type":"session","session":{"title":"a"}}` + "\n" + `{"type":"turn","turn":{"id":1,"role":"user","content":"x","odd":1}}`, 400, "invalid_request"},
		{"GET", "/v1/nothing", nil, 404, "not_found"},
		{"PUT", "/v1/sessions", nil, 405, "method_not_allowed"},
		{"FOO", "/v1/sessions", nil, 405, "method_not_allowed"}, // a method chi does not know
		{"get", "/v1/sessions", nil, 405, "method_not_allowed"},
		{"GET", "/nothing", nil, 404, "not_found"},                              // outside /v1, no UI
		{"GET", "/v1/sessions/" + sess.ID + "/ws", nil, 426, "invalid_request"}, // not a WebSocket handshake
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			if c.code == "" {
				if st, _ := s.do(t, c.method, c.path, c.body, nil); st < 400 || st >= 500 {
					t.Fatalf("status %d", st)
				}
				return
			}
			s.expectError(t, c.method, c.path, c.body, c.status, c.code)
		})
	}
	// A 405 says which methods there are; an error does not echo a
	// 100 KB path or id whole.
	for _, method := range []string{"FOO", "PUT"} {
		req, _ := http.NewRequest(method, s.URL+"/v1/sessions", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Allow"); got != "GET, HEAD, POST" {
			t.Errorf("%s /v1/sessions: Allow %q", method, got)
		}
	}
	for _, path := range []string{"/v1/sessions/" + strings.Repeat("a", 100_000), "/v1/" + strings.Repeat("b", 100_000)} {
		if _, raw := s.do(t, "GET", path, nil, nil); len(raw) > 1024 {
			t.Errorf("GET of a 100 KB path: a %d-byte answer", len(raw))
		}
	}
	// A create's body may be empty, white space alone too.
	for _, body := range []string{"", " \n\t"} {
		if st, raw := s.do(t, "POST", "/v1/sessions", body, nil); st != 201 {
			t.Errorf("POST /v1/sessions with the body %q: %d %s, want 201", body, st, raw)
		}
	}
	// Messages speak of JSON, not of Go's types.
	for body, want := range map[string]string{`[]`: "the body must be an object", `{"title": 5}`: `field "title" must be a string`} {
		var e apiErr
		s.do(t, "POST", "/v1/sessions", body, &e)
		if e.Error.Message != want {
			t.Errorf("POST /v1/sessions %s: message %q, want %q", body, e.Error.Message, want)
		}
	}
	// Nothing of the refused requests was stored.
	var page struct{ Turns []session.Turn }
	s.do(t, "GET", turns, nil, &page)
	if len(page.Turns) != 0 {
		t.Fatalf("refused posts left %d turns", len(page.Turns))
	}
}

func TestAPIKeysAndOwners(t *testing.T) {
	const alice, bob, root = "alice-key-0123456789", "bob-key-0123456789ab", "root-key-0123456789a"
	s := newServer(t, 0, web.Config{Keys: map[string]web.Principal{
		alice: {Owner: "alice"}, bob: {Owner: "bob"}, root: {Owner: "root", Admin: true},
	}}, nil)
	s.expectError(t, "GET", "/v1/sessions", nil, 401, "unauthorized")
	s.as("wrong-key-000000000000").expectError(t, "GET", "/v1/sessions", nil, 401, "unauthorized")
	// The scheme's name in any case; a key alone, or another scheme, is refused.
	for hdr, want := range map[string]int{"bearer " + alice: 200, "BEARER  " + alice: 200, alice: 401, "Basic " + alice: 401, "Bearer": 401} {
		if st, raw := s.do(t, "GET", "/v1/sessions", nil, nil, "Authorization", hdr); st != want {
			t.Errorf("Authorization: %q: %d %s, want %d", hdr, st, raw, want)
		}
	}
	// Two Authorization headers are refused, whichever of them is good:
	// a proxy in front reading the other would authenticate someone else.
	for _, pair := range [][2]string{{alice, bob}, {"wrong-key-000000000000", alice}} {
		req, _ := http.NewRequest("GET", s.URL+"/v1/sessions", nil)
		req.Header.Add("Authorization", "Bearer "+pair[0])
		req.Header.Add("Authorization", "Bearer "+pair[1])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("two Authorization headers: %d, want 401", resp.StatusCode)
		}
	}
	a := s.as(alice).createSession(t, map[string]any{"title": "alice's"})
	s.as(bob).expectError(t, "GET", "/v1/sessions/"+a.ID, nil, 404, "not_found")
	s.as(bob).expectError(t, "POST", "/v1/sessions/"+a.ID+"/turns", map[string]any{"turns": []any{map[string]any{"role": "user", "content": "hi"}}}, 404, "not_found")
	s.as(bob).expectError(t, "DELETE", "/v1/sessions/"+a.ID, nil, 404, "not_found")
	s.as(bob).expectError(t, "POST", "/v1/tickets", map[string]any{"session_id": a.ID}, 404, "not_found")
	var list struct{ Sessions []session.DirEntry }
	s.as(bob).do(t, "GET", "/v1/sessions", nil, &list)
	if len(list.Sessions) != 0 {
		t.Fatalf("bob lists %v", list.Sessions)
	}
	if st, _ := s.as(root).do(t, "GET", "/v1/sessions/"+a.ID, nil, nil); st != 200 {
		t.Fatalf("admin get: %d", st)
	}
	s.as(root).do(t, "GET", "/v1/sessions?owner=alice", nil, &list)
	if len(list.Sessions) != 1 {
		t.Fatalf("admin list of alice: %v", list.Sessions)
	}
	// The OpenAPI document needs no key.
	if st, _ := s.do(t, "GET", "/v1/openapi.json", nil, nil); st != 200 {
		t.Fatalf("openapi: %d", st)
	}
}

// POST /v1/sessions with an Idempotency-Key makes one session, however
// often it is sent.
func TestCreateSessionIdempotencyKey(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	var a, b session.Session
	if st, raw := s.do(t, "POST", "/v1/sessions", map[string]any{"title": "t"}, &a, "Idempotency-Key", "create-1"); st != 201 {
		t.Fatalf("create: %d %s", st, raw)
	}
	if st, raw := s.do(t, "POST", "/v1/sessions", map[string]any{"title": "t"}, &b, "Idempotency-Key", "create-1"); st != 201 || b.ID != a.ID {
		t.Fatalf("repeated create: %d %s, want %s", st, raw, a.ID)
	}
	var e struct{ Error struct{ Code string } }
	if st, raw := s.do(t, "POST", "/v1/sessions", map[string]any{"title": "other"}, &e, "Idempotency-Key", "create-1"); st != 409 || e.Error.Code != "conflict" {
		t.Fatalf("the key with another body: %d %s", st, raw)
	}
}

// Without keys, pages of other sites cannot use the API: a request with a
// foreign Origin, or to a Host that is not loopback (DNS rebinding), gets
// 403. Programs (no Origin) and pages from this machine or an allowed
// origin are answered.
func TestAuthOffRefusesOtherSites(t *testing.T) {
	s := newServer(t, 0, web.Config{LocalHostsOnly: true, AllowedOrigins: []string{"*.example.com"}}, nil)
	body := `{"title":"x"}`
	sess := s.createSession(t, nil)
	// call makes the request REST or, with ws, the WebSocket route, which
	// needs no ticket with auth off and must make the same checks (a
	// rebound page sends a matching Origin, which the WebSocket library's
	// same-origin check lets through).
	call := func(ws bool, host, origin string) (status int, code string) {
		req, _ := http.NewRequest("POST", s.URL+"/v1/sessions", strings.NewReader(body))
		req.Header.Set("Content-Type", "text/plain") // what a page sends without a preflight
		if ws {
			req, _ = http.NewRequest("GET", s.URL+"/v1/sessions/"+sess.ID+"/ws", nil)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		}
		if host != "" {
			req.Host = host
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct{ Error struct{ Code string } }
		if !ws || resp.StatusCode != http.StatusSwitchingProtocols {
			json.NewDecoder(resp.Body).Decode(&e)
		}
		return resp.StatusCode, e.Error.Code
	}
	for _, c := range []struct {
		host, origin string
		allowed      bool
	}{
		{"", "", true},
		{"", "http://localhost:5173", true},
		{"", "http://127.0.0.1:8080", true},
		{"", "http://[::1]:3000", true},
		{"", "https://app.example.com", true},
		{"", "https://evil.test", false},
		{"", "null", false},
		{"", "http://localhost.evil.test", false},
		{"localhost:8080", "", true},
		{"rebound.evil.test", "", false},
		{"rebound.evil.test:8080", "http://rebound.evil.test:8080", false},
	} {
		for _, ws := range []bool{false, true} {
			want := map[bool]int{false: 201, true: 101}[ws]
			if !c.allowed {
				want = 403
			}
			status, code := call(ws, c.host, c.origin)
			if status != want || (want == 403 && code != "forbidden") {
				t.Errorf("Host %q, Origin %q, WebSocket %v: %d %q, want %d", c.host, c.origin, ws, status, code, want)
			}
		}
	}
	// With keys the key decides, whatever the page.
	k := newServer(t, 0, web.Config{Keys: map[string]web.Principal{"alice-key-0123456789": {Owner: "alice"}}}, nil)
	if st, raw := k.as("alice-key-0123456789").do(t, "POST", "/v1/sessions", body, nil, "Origin", "https://evil.test"); st != 201 {
		t.Errorf("with a key, from another site: %d %s", st, raw)
	}
}

// TestSSEPostAndResume streams a generation in the POST answer, then
// resumes the same generation by Last-Event-ID from the middle.
func TestSSEPostAndResume(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	body := `{"turns": [{"role": "user", "content": "/words 30"}], "generate": true}`
	req, _ := http.NewRequest("POST", s.URL+"/v1/sessions/"+sess.ID+"/turns", strings.NewReader(body))
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	events := readSSE(t, resp)
	var text strings.Builder
	var gid string
	// The posted turn, then the generation, then its events.
	var announced struct{ Type, Generation, Status string }
	if len(events) < 2 || events[1].event != "generation" || events[1].id != "" || json.Unmarshal([]byte(events[1].data), &announced) != nil {
		t.Fatalf("stream: %+v, want the turn then the generation", events)
	}
	if announced.Type != "generation" || announced.Status != "running" || !strings.HasPrefix(announced.Generation, "g_") {
		t.Fatalf("generation message %s", events[1].data)
	}
	for i, e := range events[2:] {
		if e.event == "delta" {
			if e.id != fmt.Sprint(i+1) {
				t.Fatalf("event %d has id %s", i+1, e.id)
			}
			var d struct{ Text, Generation string }
			json.Unmarshal([]byte(e.data), &d)
			text.WriteString(d.Text)
			gid = d.Generation
		}
	}
	if events[0].event != "turn" || events[len(events)-1].event != "done" || strings.TrimSpace(text.String()) != words(30) {
		t.Fatalf("stream: first %s last %s text %q", events[0].event, events[len(events)-1].event, text.String())
	}
	var posted struct {
		Type string
		Turn struct {
			ID      int64
			Role    string
			Content string
		}
	}
	if err := json.Unmarshal([]byte(events[0].data), &posted); err != nil || posted.Type != "turn" ||
		posted.Turn.ID == 0 || posted.Turn.Role != "user" || posted.Turn.Content != "/words 30" {
		t.Fatalf("posted turn message %s (%v)", events[0].data, err)
	}
	if gid != announced.Generation {
		t.Fatalf("the deltas are of %s, the generation message named %s", gid, announced.Generation)
	}
	// Resume after offset 10: deltas 11..30 and done (offset 31).
	req, _ = http.NewRequest("GET", s.URL+"/v1/sessions/"+sess.ID+"/generations/"+gid+"/stream", nil)
	req.Header.Set("Last-Event-ID", "10")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rest := readSSE(t, resp)
	if len(rest) != 21 || rest[0].id != "11" || rest[20].event != "done" || rest[20].id != "31" {
		t.Fatalf("resumed %d events, first id %s", len(rest), rest[0].id)
	}
	// An EventSource reconnecting after done: nothing left, and 204 stops
	// it from coming back (an empty stream would not).
	stream := "/v1/sessions/" + sess.ID + "/generations/" + gid + "/stream"
	req, _ = http.NewRequest("GET", s.URL+stream, nil)
	req.Header.Set("Last-Event-ID", "31")
	c := &http.Client{Timeout: 10 * time.Second}
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	left, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || len(left) != 0 {
		t.Fatalf("resumed after done: %d %q, want 204 and nothing", resp.StatusCode, left)
	}
	// Past the last event: a plain 400 before any stream.
	s.expectError(t, "GET", stream+"?after=32", nil, 400, "invalid_request")
}

// TestSSEPostLargeTurns: the turns a POST answers with as SSE are one
// burst, however far past the viewer's buffer bound they come, not a slow
// client: the stream carries them all, then the generation to its done.
// (Sent one by one, two 700 KiB turns dropped the stream before it wrote
// anything, in most runs.)
func TestSSEPostLargeTurns(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	big := strings.Repeat("x", 700<<10)
	for i := range 3 { // the drop was a race: give it several chances
		body, _ := json.Marshal(map[string]any{"generate": true, "turns": []any{
			map[string]any{"role": "user", "content": fmt.Sprint("small ", i)},
			map[string]any{"role": "user", "content": big},
			map[string]any{"role": "user", "content": big},
		}})
		req, _ := http.NewRequest("POST", s.URL+"/v1/sessions/"+sess.ID+"/turns", bytes.NewReader(body))
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		events := readSSE(t, resp)
		var kinds []string
		for _, e := range events {
			kinds = append(kinds, e.event)
		}
		if len(events) < 4 || kinds[0] != "turn" || kinds[1] != "turn" || kinds[2] != "turn" || kinds[len(kinds)-1] != "done" {
			t.Fatalf("post %d: events %v, want three turns, the generation's deltas and done", i, kinds)
		}
	}
}

// TestSSEPostOfSupersededGenerationEndsWithDone: a streamed post whose
// generation waits in the queue and is then superseded (the queued
// generation before it answers the same turns) ends with that
// generation's done — offset 1, turn null, error superseded — not with an
// empty stream; a resume after it gets 204, one past it 400.
func TestSSEPostOfSupersededGenerationEndsWithDone(t *testing.T) {
	s := newServer(t, 50, web.Config{}, nil)
	sess := s.createSession(t, nil)
	path := "/v1/sessions/" + sess.ID + "/turns"
	// The first generation runs for 4 s at 50 tokens/s; the second
	// queues behind it, and answers the head when it starts.
	for _, text := range []string{"/words 200", "/say queued one"} {
		if st, raw := s.do(t, "POST", path, map[string]any{"turns": []any{map[string]any{"role": "user", "content": text}}, "generate": true}, nil); st != 201 {
			t.Fatalf("post %q: %d %s", text, st, raw)
		}
	}
	req, _ := http.NewRequest("POST", s.URL+path, strings.NewReader(`{"generate": true}`))
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	events := readSSE(t, resp)
	// The generation, queued (so that the client could cancel it while it
	// waits), then its done at offset 1.
	var announced struct{ Generation, Status string }
	if len(events) != 2 || events[0].event != "generation" || events[0].id != "" ||
		json.Unmarshal([]byte(events[0].data), &announced) != nil || announced.Status != "queued" ||
		events[1].event != "done" || events[1].id != "1" {
		t.Fatalf("events %+v, want the generation, queued, then its done at 1", events)
	}
	events = events[1:]
	var done struct {
		Generation   string
		Offset       int64
		Turn         json.RawMessage
		FinishReason string `json:"finish_reason"`
		Error        struct{ Code string }
	}
	if err := json.Unmarshal([]byte(events[0].data), &done); err != nil {
		t.Fatal(err)
	}
	if string(done.Turn) != "null" || done.FinishReason != "cancelled" || done.Error.Code != "superseded" || done.Generation != announced.Generation {
		t.Fatalf("done %s", events[0].data)
	}
	stream := "/v1/sessions/" + sess.ID + "/generations/" + done.Generation + "/stream"
	if st, raw := s.do(t, "GET", stream+"?after=1", nil, nil); st != http.StatusNoContent {
		t.Fatalf("resume after the final event: %d %s", st, raw)
	}
	if st, raw := s.do(t, "GET", stream+"?after=2", nil, nil); st != http.StatusBadRequest {
		t.Fatalf("resume past the final event: %d %s", st, raw)
	}
}

func words(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteByte(' ')
		}
		fmt.Fprint(&b, i)
	}
	return b.String()
}

type sseEvent struct{ event, id, data string }

func readSSE(t *testing.T, resp *http.Response) []sseEvent {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("SSE answer %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.event != "" {
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.event = line[7:]
		case strings.HasPrefix(line, "id: "):
			cur.id = line[4:]
		case strings.HasPrefix(line, "data: "):
			cur.data += line[6:]
		}
	}
	return out
}

// TestOpenAPIMatchesRouter walks the router: every route is documented and
// every documented path is routed, with the same methods.
func TestOpenAPIMatchesRouter(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if st, raw := s.do(t, "GET", "/v1/openapi.json", nil, &doc); st != 200 || doc.OpenAPI == "" {
		t.Fatalf("%d %s", st, raw)
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	routed := map[string]bool{}
	h := web.NewHandler(s.svc, web.Config{AuthOff: true})
	err := chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		route = strings.TrimSuffix(route, "/")
		if strings.HasPrefix(route, "/v1/") {
			routed[method+" "+route] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for r := range routed {
		if !documented[r] {
			t.Errorf("route %s is not in the OpenAPI document", r)
		}
	}
	for d := range documented {
		if !routed[d] {
			t.Errorf("documented %s is not routed", d)
		}
	}
	if len(routed) < 15 {
		t.Fatalf("only %d routes walked", len(routed))
	}
}

// Pages of the allowed origins (loopback ones, --allowed-origins) may call
// the API from the browser: preflights are answered before authentication
// and answers carry CORS headers. Other origins' pages get none, so they
// cannot read an answer.
func TestCORSForAllowedOrigins(t *testing.T) {
	s := newServer(t, 0, web.Config{Keys: map[string]web.Principal{"alice-key-0123456789": {Owner: "alice"}}, AllowedOrigins: []string{"app.example.com"}}, nil)
	for _, c := range []struct {
		origin  string
		allowed bool
	}{{"http://localhost:5173", true}, {"https://app.example.com", true}, {"https://evil.test", false}} {
		pre, _ := http.NewRequest("OPTIONS", s.URL+"/v1/sessions", nil)
		pre.Header.Set("Origin", c.origin)
		pre.Header.Set("Access-Control-Request-Method", "POST")
		pre.Header.Set("Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
		resp, err := http.DefaultClient.Do(pre)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		okPre := resp.StatusCode == 204 && resp.Header.Get("Access-Control-Allow-Origin") == c.origin &&
			strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") && strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST")
		if okPre != c.allowed {
			t.Errorf("preflight from %s: %d, allow-origin %q; allowed %v, want %v", c.origin, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), okPre, c.allowed)
		}
		req, _ := http.NewRequest("POST", s.URL+"/v1/sessions", strings.NewReader(`{"title":"from a page"}`))
		req.Header.Set("Origin", c.origin)
		req.Header.Set("Authorization", "Bearer alice-key-0123456789")
		req.Header.Set("Content-Type", "application/json")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin") == c.origin; resp.StatusCode != 201 || got != c.allowed {
			t.Errorf("POST from %s: %d, readable by the page %v, want 201 and %v", c.origin, resp.StatusCode, got, c.allowed)
		}
	}
}

package web_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"sessiond/session"
	"sessiond/web"
)

// Every status an operation answers to a spread of requests (no key,
// another owner's key, unknown ids, malformed and ill-typed bodies, bad
// query parameters, a valid request) is among its documented responses.
// It checks what the router test does not: the statuses the handlers
// really answer against the document's lists.
func TestOpenAPIListsAnsweredStatuses(t *testing.T) {
	const alice, bob = "alice-key-0123456789", "bob-key-0123456789ab"
	s := newServer(t, 0, web.Config{Keys: map[string]web.Principal{alice: {Owner: "alice"}, bob: {Owner: "bob"}}}, nil)
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string                     `json:"operationId"`
			RequestBody json.RawMessage            `json:"requestBody"`
			Responses   map[string]json.RawMessage `json:"responses"`
		} `json:"paths"`
	}
	if st, raw := s.do(t, "GET", "/v1/openapi.json", nil, &doc); st != 200 {
		t.Fatalf("%d %s", st, raw)
	}
	// fresh makes a session with a finished generation: its id and the
	// generation's.
	fresh := func() (string, string) {
		sess := s.as(alice).createSession(t, nil)
		var res session.PostResult
		if st, raw := s.as(alice).do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", `{"turns":[{"role":"user","content":"hi"}],"generate":true}`, &res); st != 201 {
			t.Fatalf("post: %d %s", st, raw)
		}
		s.as(alice).waitGeneration(t, sess.ID, res.Generation.ID)
		return sess.ID, res.Generation.ID
	}
	valid := map[string]func(id string) string{
		"createSession": func(string) string { return `{"title":"t"}` },
		"updateSession": func(string) string { return `{"title":"t2"}` },
		"postTurns":     func(string) string { return `{"turns":[{"role":"user","content":"more"}]}` },
		"forkSession":   func(string) string { return `{"turn_id":1}` },
		"createTicket":  func(id string) string { return fmt.Sprintf(`{"session_id":%q}`, id) },
		"importSession": func(string) string { return `{"type":"session","session":{"title":"i"}}` + "\n" },
	}
	type attempt struct {
		name, key, id, gid, query, body string
		hdr                             []string
	}
	checked := 0
	for path, ops := range doc.Paths {
		for method, op := range ops {
			method = strings.ToUpper(method)
			id, gid := fresh()
			body := ""
			if v := valid[op.OperationID]; v != nil {
				body = v(id)
			}
			attempts := []attempt{
				{name: "no key", id: id, gid: gid, body: body},
				{name: "another owner", key: bob, id: id, gid: gid, body: body},
				{name: "unknown ids", key: alice, id: "nope", gid: "g_nope", body: body},
				{name: "bad query", key: alice, id: id, gid: gid, query: "?limit=abc", body: body},
				{name: "bad values", key: alice, id: id, gid: gid, query: "?cursor=!!&branch=999&after=999", body: body},
				{name: "valid", key: alice, id: id, gid: gid, body: body},
			}
			if op.RequestBody != nil {
				attempts = append(attempts,
					attempt{name: "malformed body", key: alice, id: id, gid: gid, body: "{bad"},
					attempt{name: "ill-typed body", key: alice, id: id, gid: gid, body: `{"title":5,"turns":5,"turn_id":"x","session_id":5}`},
					attempt{name: "empty object", key: alice, id: id, gid: gid, body: `{}`},
					attempt{name: "array", key: alice, id: id, gid: gid, body: `[]`},
				)
			}
			if strings.HasSuffix(path, "/stream") {
				attempts = append(attempts, attempt{name: "after the end", key: alice, id: id, gid: gid, hdr: []string{"Last-Event-ID", "999"}})
			}
			for _, a := range attempts {
				url := strings.NewReplacer("{id}", a.id, "{gid}", a.gid).Replace(path) + a.query
				var b any
				if a.body != "" {
					b = a.body
				}
				st, raw := s.as(a.key).do(t, method, url, b, nil, a.hdr...)
				checked++
				if _, ok := op.Responses[fmt.Sprint(st)]; !ok {
					t.Errorf("%s %s (%s, %s): answered %d, which the document does not list: %.200s", method, path, op.OperationID, a.name, st, raw)
				}
			}
		}
	}
	if checked < 100 {
		t.Fatalf("only %d requests checked", checked)
	}
}

// The document says what postTurns does: JSON under 201, the event stream
// under 200 (the status it is answered with), and turns optional (a post
// of {"generate": true} alone is answered 201); every operation lists 500
// (code internal).
func TestOpenAPIPostTurnsAsAnswered(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	var doc struct {
		Paths map[string]map[string]struct {
			Responses map[string]struct{ Content map[string]any }
		}
		Components struct {
			Schemas map[string]struct{ Required []string }
		}
	}
	s.do(t, "GET", "/v1/openapi.json", nil, &doc)
	post := doc.Paths["/v1/sessions/{id}/turns"]["post"].Responses
	if _, ok := post["201"].Content["text/event-stream"]; ok || post["201"].Content["application/json"] == nil {
		t.Errorf("postTurns 201 content: %v, want JSON only", post["201"].Content)
	}
	if _, ok := post["200"].Content["text/event-stream"]; !ok {
		t.Errorf("postTurns 200 content: %v, want text/event-stream", post["200"].Content)
	}
	for _, f := range doc.Components.Schemas["PostRequest"].Required {
		if f == "turns" {
			t.Errorf("PostRequest requires turns")
		}
	}
	for p, ops := range doc.Paths {
		for m, op := range ops {
			if _, ok := op.Responses["500"]; !ok {
				t.Errorf("%s %s does not list 500", m, p)
			}
		}
	}
	sess := s.createSession(t, nil)
	s.postTurn(t, sess.ID, "hi", nil)
	req, _ := http.NewRequest("POST", s.URL+"/v1/sessions/"+sess.ID+"/turns", strings.NewReader(`{"generate":true}`))
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("a streamed post: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var res session.PostResult
	if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", `{"generate":true}`, &res); st != 201 || res.Generation == nil {
		t.Fatalf("generate alone: %d %s", st, raw)
	}
}

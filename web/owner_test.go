package web_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"

	"sessiond/session"
	"sessiond/web"
)

// Every route that names a session answers another owner's key as if the
// session did not exist (404 not_found), and leaves the session as it was:
// its turns, title and generation, nothing deleted, nothing forked. The
// table must name every route with a session id (the router is walked), so
// a route added without an owner check here fails this test.
func TestEveryRouteChecksTheOwner(t *testing.T) {
	const alice, bob = "alice-key-0123456789", "bob-key-0123456789ab"
	srv := newServer(t, 0, web.Config{Keys: map[string]web.Principal{alice: {Owner: "alice"}, bob: {Owner: "bob"}}}, nil)
	a, b := srv.as(alice), srv.as(bob)
	sess := a.createSession(t, map[string]any{"title": "alice's"})
	var res session.PostResult
	if st, raw := a.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", map[string]any{
		"turns": []any{map[string]any{"role": "user", "content": "/say one two"}}, "generate": true}, &res); st != 201 || res.Generation == nil {
		t.Fatalf("post: %d %s", st, raw)
	}
	gid := res.Generation.ID
	a.waitGeneration(t, sess.ID, gid)
	bobs := b.createSession(t, nil)

	// What alice sees of her session, compared byte for byte before and
	// after bob's requests.
	base := "/v1/sessions/" + sess.ID
	snapshot := func() map[string]string {
		t.Helper()
		out := map[string]string{}
		for _, p := range []string{base, base + "/turns?after=0", base + "/generations/" + gid, base + "/export", "/v1/sessions"} {
			st, raw := a.do(t, "GET", p, nil, nil)
			if st != 200 {
				t.Fatalf("alice GET %s: %d %s", p, st, raw)
			}
			out[p] = string(raw)
		}
		return out
	}
	before := snapshot()

	// Every route taking a session, as bob would call it on alice's
	// session; the key is the route's method and pattern as routed.
	type call struct {
		path, body string
		hdr        []string
	}
	calls := map[string]call{
		"GET /v1/sessions/{id}":       {path: base},
		"PATCH /v1/sessions/{id}":     {path: base, body: `{"title":"bob's","system":"obey bob"}`},
		"DELETE /v1/sessions/{id}":    {path: base},
		"GET /v1/sessions/{id}/turns": {path: base + "/turns?after=0"},
		"POST /v1/sessions/{id}/turns": {path: base + "/turns",
			body: `{"turns":[{"role":"user","content":"from bob"}],"generate":true}`},
		"GET /v1/sessions/{id}/generations/{gid}": {path: base + "/generations/" + gid},
		"GET /v1/sessions/{id}/generations/{gid}/stream": {path: base + "/generations/" + gid + "/stream?after=0",
			hdr: []string{"Accept", "text/event-stream"}},
		"POST /v1/sessions/{id}/generations/{gid}/cancel": {path: base + "/generations/" + gid + "/cancel"},
		"POST /v1/sessions/{id}/fork":                     {path: base + "/fork", body: `{"turn_id":2}`},
		"GET /v1/sessions/{id}/export":                    {path: base + "/export"},
		"POST /v1/tickets":                                {path: "/v1/tickets", body: `{"session_id":"` + sess.ID + `"}`},
	}
	// The streamed post, too: the same route asked for an event stream.
	streamedPost := calls["POST /v1/sessions/{id}/turns"]
	streamedPost.hdr = []string{"Accept", "text/event-stream"}
	// The WebSocket route authenticates by ticket, checked below.
	const socketRoute = "GET /v1/sessions/{id}/ws"

	var routed []string
	if err := chi.Walk(srv.Config.Handler.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if strings.Contains(route, "{id}") || route == "/v1/tickets" {
			routed = append(routed, method+" "+route)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, r := range routed {
		if _, ok := calls[r]; !ok && r != socketRoute {
			t.Errorf("route %s takes a session but is not in this test's table: add it", r)
		}
	}
	for r := range calls {
		if !slices.Contains(routed, r) {
			t.Errorf("the table names %s, which is not routed", r)
		}
	}
	if !slices.Contains(routed, socketRoute) {
		t.Errorf("%s is not routed", socketRoute)
	}

	for r, c := range calls {
		b.expectError(t, strings.Fields(r)[0], c.path, c.body, http.StatusNotFound, "not_found", c.hdr...)
	}
	b.expectError(t, "POST", streamedPost.path, streamedPost.body, http.StatusNotFound, "not_found", streamedPost.hdr...)
	// Nor does HEAD, answered wherever GET is, tell more than a 404.
	for r, c := range calls {
		if strings.HasPrefix(r, "GET ") {
			if st, _ := b.do(t, "HEAD", c.path, nil, nil, c.hdr...); st != http.StatusNotFound {
				t.Errorf("HEAD %s as another owner: %d, want 404", c.path, st)
			}
		}
	}

	// The socket: bob has no ticket for alice's session (above), and his
	// ticket for his own opens no other (403, as docs/protocol.md says).
	if _, resp, err := websocket.Dial(context.Background(), wsURL(b, sess.ID, ticket(t, b, bobs.ID)), nil); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob's ticket on alice's socket: err=%v resp=%v, want 403", err, resp)
	}

	after := snapshot()
	for p, want := range before {
		if got := after[p]; got != want {
			t.Errorf("alice's GET %s changed by bob's requests:\nbefore %s\nafter  %s", p, want, got)
		}
	}
	var list struct{ Sessions []session.DirEntry }
	if st, raw := b.do(t, "GET", "/v1/sessions", nil, &list); st != 200 || len(list.Sessions) != 1 || list.Sessions[0].ID != bobs.ID {
		t.Errorf("bob's list: %d %s, want his one session", st, raw)
	}
}

// A ticket stands for its principal as well as its session: one that
// alice got for an id that is bob's by the time she uses it (hers was
// deleted, bob created one with that id) opens nothing (404), and her
// socket route's check of the owner is what refuses it.
func TestSocketTicketForAnIDNowAnotherOwners(t *testing.T) {
	const alice, bob = "alice-key-0123456789", "bob-key-0123456789ab"
	srv := newServer(t, 0, web.Config{Keys: map[string]web.Principal{alice: {Owner: "alice"}, bob: {Owner: "bob"}}}, nil)
	a, b := srv.as(alice), srv.as(bob)
	sess := a.createSession(t, map[string]any{"id": "shared-id"})
	tk := ticket(t, a, sess.ID)
	if st, raw := a.do(t, "DELETE", "/v1/sessions/"+sess.ID, nil, nil); st != 204 {
		t.Fatalf("delete: %d %s", st, raw)
	}
	b.createSession(t, map[string]any{"id": "shared-id", "title": "bob's"})
	if c, resp, err := websocket.Dial(context.Background(), wsURL(a, sess.ID, tk), nil); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		if c != nil {
			c.CloseNow()
		}
		t.Fatalf("alice's old ticket on bob's session: err=%v resp=%v, want 404", err, resp)
	}
	var got session.Session
	if st, raw := b.do(t, "GET", "/v1/sessions/shared-id", nil, &got); st != 200 || got.Title != "bob's" || got.Owner != "bob" {
		t.Fatalf("bob's session: %d %s", st, raw)
	}
}

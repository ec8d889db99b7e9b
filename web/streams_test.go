package web_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"sessiond/session"
	"sessiond/web"
)

// An owner holds at most MaxStreamsPerOwner WebSockets and event streams:
// one more is a 429 that changes nothing, other owners and administrators
// are not affected, and a stream closed or a session deleted frees its
// place.
func TestStreamsPerOwner(t *testing.T) {
	const alice, bob, root = "alice-key-0123456789", "bob-key-0123456789", "root-key-0123456789"
	srv := newServer(t, 20, web.Config{Keys: map[string]web.Principal{
		alice: {Owner: "alice"}, bob: {Owner: "bob"}, root: {Owner: "root", Admin: true}}}, nil)
	srv.svc.MaxStreamsPerOwner = 3
	s := srv.as(alice)
	sess := s.createSession(t, nil)

	// Three streams: two sockets and the event stream of a generation.
	// The clients read (CloseRead), so that a close handshake completes.
	ctx := t.Context()
	c1, c2 := s.dial(t, sess.ID), s.dial(t, sess.ID)
	defer c1.CloseNow()
	defer c2.CloseNow()
	c2.CloseRead(ctx)
	var res session.PostResult
	if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", map[string]any{
		"turns": []any{map[string]any{"role": "user", "content": "/words 2000"}}, "generate": true}, &res); st != 201 {
		t.Fatalf("post: %d %s", st, raw)
	}
	streamPath := "/v1/sessions/" + sess.ID + "/generations/" + res.Generation.ID + "/stream"
	sse := openSSE(t, s, "GET", streamPath, "")
	defer sse.Body.Close()
	if sse.StatusCode != 200 {
		t.Fatalf("event stream: %d", sse.StatusCode)
	}

	// A fourth of any kind is refused, and a refused post posts nothing.
	var tk struct{ Ticket string }
	s.do(t, "POST", "/v1/tickets", map[string]any{"session_id": sess.ID}, &tk)
	if _, resp, err := websocket.Dial(context.Background(), wsURL(s, sess.ID, tk.Ticket), nil); err == nil || resp == nil || resp.StatusCode != 429 {
		t.Fatalf("a fourth socket: err=%v resp=%v, want 429", err, resp)
	}
	s.expectError(t, "GET", streamPath, nil, 429, "rate_limited")
	post := openSSE(t, s, "POST", "/v1/sessions/"+sess.ID+"/turns", `{"turns":[{"role":"user","content":"refused"}],"generate":true}`)
	post.Body.Close()
	if post.StatusCode != 429 {
		t.Fatalf("a streamed post: %d, want 429", post.StatusCode)
	}
	var page struct{ Turns []session.Turn }
	s.do(t, "GET", "/v1/sessions/"+sess.ID+"/turns", nil, &page)
	for _, turn := range page.Turns {
		if strings.Contains(string(turn.Content), "refused") {
			t.Fatal("the refused streamed post appended its turn")
		}
	}

	// Other owners and administrators have their own places.
	b := srv.as(bob)
	cb := b.dial(t, b.createSession(t, nil).ID)
	cb.CloseNow()
	cr := srv.as(root).dial(t, sess.ID)
	defer cr.CloseNow()
	cr.CloseRead(ctx)

	// A closed socket frees its place (once the session has seen it close).
	c1.Close(websocket.StatusNormalClosure, "")
	var c4 *websocket.Conn
	checkFor(t, "a place after a close", func() bool {
		var tk struct{ Ticket string }
		s.do(t, "POST", "/v1/tickets", map[string]any{"session_id": sess.ID}, &tk)
		c, _, err := websocket.Dial(context.Background(), wsURL(s, sess.ID, tk.Ticket), nil)
		c4 = c
		return err == nil
	})
	defer c4.CloseNow()
	c4.CloseRead(ctx)

	// Deleting the session frees the places of its sockets and streams.
	if st, raw := s.do(t, "DELETE", "/v1/sessions/"+sess.ID, nil, nil); st != 204 {
		t.Fatalf("delete: %d %s", st, raw)
	}
	other := s.createSession(t, nil)
	checkFor(t, "three places after the delete", func() bool {
		var conns []*websocket.Conn
		defer func() {
			for _, c := range conns {
				c.CloseNow()
			}
		}()
		for range 3 {
			var tk struct{ Ticket string }
			s.do(t, "POST", "/v1/tickets", map[string]any{"session_id": other.ID}, &tk)
			c, _, err := websocket.Dial(context.Background(), wsURL(s, other.ID, tk.Ticket), nil)
			if err != nil {
				return false
			}
			conns = append(conns, c)
		}
		return true
	})
}

func wsURL(s *server, id, ticket string) string {
	return "ws" + strings.TrimPrefix(s.URL, "http") + "/v1/sessions/" + id + "/ws?ticket=" + ticket
}

// openSSE sends a request asking for an event stream and returns the
// response, its body unread.
func openSSE(t *testing.T, s *server, method, path, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

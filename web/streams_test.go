package web_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

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
	c1, c2 := mustJoin(t, s, sess.ID), mustJoin(t, s, sess.ID)
	defer c1.CloseNow()
	defer c2.CloseNow()
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
	tk := ticket(t, s, sess.ID)
	if _, resp, err := websocket.Dial(context.Background(), wsURL(s, sess.ID, tk), nil); err == nil || resp == nil || resp.StatusCode != 429 {
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
	mustJoin(t, b, b.createSession(t, nil).ID).CloseNow()
	cr := mustJoin(t, srv.as(root), sess.ID)
	defer cr.CloseNow()

	// A closed socket frees its place (once the session has seen it
	// close), and the ticket refused with 429 is still good for it.
	c1.Close(websocket.StatusNormalClosure, "")
	var c4 *websocket.Conn
	checkFor(t, "a place after a close", func() bool {
		c, err := join(s, sess.ID, tk)
		c4 = c
		return err == nil
	})
	defer c4.CloseNow()

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
			c, err := join(s, other.ID, ticket(t, s, other.ID))
			if err != nil {
				return false
			}
			conns = append(conns, c)
		}
		return true
	})
}

func ticket(t *testing.T, s *server, id string) string {
	t.Helper()
	var tk struct{ Ticket string }
	if st, raw := s.do(t, "POST", "/v1/tickets", map[string]any{"session_id": id}, &tk); st != 201 {
		t.Fatalf("ticket: %d %s", st, raw)
	}
	return tk.Ticket
}

// join opens a socket to session id with ticket tk and waits for its ready
// (the session counts the socket before it can answer); the socket then
// reads and drops what comes, so that a close handshake completes.
func join(s *server, id, tk string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, wsURL(s, id, tk), nil)
	if err != nil {
		return nil, err
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"hello"}`)); err != nil {
		c.CloseNow()
		return nil, err
	}
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			c.CloseNow()
			return nil, err
		}
		if strings.Contains(string(b), `"type":"ready"`) {
			break
		}
	}
	// Not CloseRead: it closes the socket at the first data message (a
	// delta). This reader ends with the connection.
	go func() {
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	return c, nil
}

func mustJoin(t *testing.T, s *server, id string) *websocket.Conn {
	t.Helper()
	c, err := join(s, id, ticket(t, s, id))
	if err != nil {
		t.Fatalf("join %s: %v", id, err)
	}
	return c
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

// The server pings its sockets: one whose client answers (it reads) keeps
// its place across many pings; one whose client stopped reading, so never
// answers, is dropped, and its place in the owner's count is freed.
func TestWebSocketPingDropsSilentClient(t *testing.T) {
	// Long enough that a loaded machine answers a ping within two of
	// them: a late pong would drop the live client.
	const interval = 100 * time.Millisecond
	srv := newServer(t, 0, web.Config{WSPing: interval}, nil)
	srv.svc.MaxStreamsPerOwner = 1
	sess := srv.createSession(t, nil)

	live := mustJoin(t, srv, sess.ID)
	time.Sleep(6 * interval) // pings, each answered
	if _, resp, err := websocket.Dial(context.Background(), wsURL(srv, sess.ID, ticket(t, srv, sess.ID)), nil); err == nil || resp == nil || resp.StatusCode != 429 {
		t.Fatalf("a second socket beside a live one: err=%v resp=%v, want 429 (the live one dropped?)", err, resp)
	}
	live.Close(websocket.StatusNormalClosure, "")

	// A client that reads its ready, then nothing more.
	var silent *websocket.Conn
	checkFor(t, "the closed socket's place to be free", func() bool {
		c, _, err := websocket.Dial(context.Background(), wsURL(srv, sess.ID, ticket(t, srv, sess.ID)), nil)
		if err != nil {
			return false
		}
		silent = c
		return true
	})
	defer silent.CloseNow()
	send(t, silent, map[string]any{"type": "hello"})
	if m := recv(t, silent); m.Type != "ready" {
		t.Fatalf("got %s, want ready", m.Type)
	}
	checkFor(t, "the silent socket to be dropped, freeing its place", func() bool {
		c, err := join(srv, sess.ID, ticket(t, srv, sess.ID))
		if err != nil {
			return false
		}
		c.CloseNow()
		return true
	})
}

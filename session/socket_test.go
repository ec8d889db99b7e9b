package session_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"sessiond/session"
	"sessiond/streaming"
)

// socketMsg is the union of the server → client messages' fields.
type socketMsg struct {
	Type       string          `json:"type"`
	Generation string          `json:"generation"`
	Offset     int64           `json:"offset"`
	Code       string          `json:"code"`
	Message    string          `json:"message"`
	Turn       json.RawMessage `json:"turn"`
}

// dialSession serves e's sessions' WebSockets (as owner "local") and opens
// one to session id.
func dialSession(tb testing.TB, e *env, id string) *websocket.Conn {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := streaming.Accept(w, r, nil)
		if err != nil {
			return
		}
		if err := e.svc.Accept(r.Context(), "local", r.URL.Query().Get("id"), ws); err != nil {
			ws.Conn().Close(websocket.StatusPolicyViolation, err.Error())
		}
	}))
	tb.Cleanup(srv.Close)
	c, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/?id="+id, nil)
	if err != nil {
		tb.Fatal(err)
	}
	c.SetReadLimit(64 << 20)
	tb.Cleanup(func() { c.CloseNow() })
	return c
}

func sendMsg(tb testing.TB, c *websocket.Conn, v any) {
	tb.Helper()
	b, _ := json.Marshal(v)
	if err := c.Write(context.Background(), websocket.MessageText, b); err != nil {
		tb.Fatal(err)
	}
}

func readMsg(tb testing.TB, c *websocket.Conn) socketMsg {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		tb.Fatalf("read: %v", err)
	}
	var m socketMsg
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatalf("decode %.200s: %v", b, err)
	}
	return m
}

// readUntil reads until a message of type typ and returns everything read.
func readUntil(tb testing.TB, c *websocket.Conn, typ string) []socketMsg {
	tb.Helper()
	var out []socketMsg
	for {
		m := readMsg(tb, c)
		out = append(out, m)
		if m.Type == typ {
			return out
		}
	}
}

// A viewer that reads is not dropped as slow when two turns posted
// together, broadcast back to back, pass its buffer bound: a burst is no
// evidence that it does not keep up. (It was closed with 4000 every time.)
func TestSocketLargeTurnsPostedTogether(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	c := dialSession(t, e, s.ID)
	sendMsg(t, c, map[string]any{"type": "hello"})
	if m := readMsg(t, c); m.Type != "ready" {
		t.Fatalf("first message %s", m.Type)
	}
	big := strings.Repeat("x", 700<<10)
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(big), user(big)}}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if m := readMsg(t, c); m.Type != "turn" {
			t.Fatalf("message %d: %s %s %s, want the posted turn", i, m.Type, m.Code, m.Message)
		}
	}
	sendMsg(t, c, map[string]any{"type": "ping"})
	if m := readMsg(t, c); m.Type != "pong" {
		t.Fatalf("after the turns: %s", m.Type)
	}
}

// A client that repeats hello with {"turn": 0} without reading holds one
// replay queued, not one per hello: each replaces what the one before has
// yet to write. (Each used to queue a page of up to 16 MiB more: 40 hellos
// replaying 8 MiB grew the heap by 322 MiB.)
func TestSocketRepeatedHelloHoldsOneReplay(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, func(svc *session.Service, _ *session.Registry) {
		// The first replay's write waits for the client to read.
		svc.ViewerOptions = &streaming.ViewerOptions{FlushInterval: 5 * time.Millisecond, WriteTimeout: -1}
	})
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	const turns, hellos = 8, 20
	big := strings.Repeat("x", 512<<10)
	for range turns {
		if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(big)}}); err != nil {
			t.Fatal(err)
		}
	}
	c := dialSession(t, e, s.ID)
	for range hellos {
		sendMsg(t, c, map[string]any{"type": "hello", "resume": map[string]any{"turn": 0}})
	}
	// Socket messages are answered in order: once the marker is posted,
	// every hello has queued its replay.
	sendMsg(t, c, map[string]any{"type": "send", "idempotency_key": "marker", "turns": []any{map[string]any{"role": "user", "content": "marker"}}})
	checkFor(t, "the marker turn", func() bool { return len(lastTurns(t, e, "local", s.ID, 1000)) == turns+1 })
	replayed, readies := 0, 0
	for {
		m := readMsg(t, c)
		if m.Type == "ready" {
			readies++
			continue
		}
		if m.Type != "turn" {
			t.Fatalf("got %s %s %s", m.Type, m.Code, m.Message)
		}
		if strings.Contains(string(m.Turn), `"content":"marker"`) {
			break
		}
		replayed++
	}
	t.Logf("%d turns replayed for %d hellos", replayed, hellos)
	if readies != hellos {
		t.Fatalf("%d ready messages for %d hellos", readies, hellos)
	}
	// The first replay may be under way, a later one too when the socket's
	// buffers took the first; the last is whole. Far fewer than one each.
	if replayed%turns != 0 || replayed > hellos/4*turns {
		t.Fatalf("%d turns replayed for %d hellos of %d turns each: want a few whole replays", replayed, hellos, turns)
	}
}

package session_test

import (
	"context"
	"encoding/json"
	"fmt"
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

// A hello resuming a generation after an offset past its last event is
// answered ready and an invalid_request error, as the SSE stream answers
// 400, and the socket does not follow that generation: a finished one
// (the log retained or not) and a running one alike. (The socket used to
// get ready alone, and followed a running generation from its end.)
func TestSocketResumePastTheEnd(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 5, nil) // 5 words/s: a long generation runs a while
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/say a b c d e")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	done := waitGen(t, e, "local", s.ID, res.Generation.ID)
	if done.Status != session.GenDone || done.Offset > 99 {
		t.Fatalf("generation %+v", done)
	}
	res, err = e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 5000")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	running := res.Generation.ID
	refused := func(gid string, after int64) *websocket.Conn {
		t.Helper()
		c := dialSession(t, e, s.ID)
		sendMsg(t, c, map[string]any{"type": "hello", "resume": map[string]any{"generation": gid, "after": after}})
		if m := readMsg(t, c); m.Type != "ready" {
			t.Fatalf("resume %s after %d: first message %s", gid, after, m.Type)
		}
		if m := readMsg(t, c); m.Type != "error" || m.Code != "invalid_request" || m.Generation != "" {
			t.Fatalf("resume %s after %d: got %+v, want an invalid_request error", gid, after, m)
		}
		return c
	}
	finished := refused(done.ID, 99)
	following := refused(running, 4000)

	// End the running generation, then ping: whatever a socket follows of
	// the generation it named is queued before the pong. (The socket
	// refused on the finished one follows the running one: any hub
	// viewer does.)
	if _, err := e.svc.Cancel(ctx, "local", s.ID, running); err != nil {
		t.Fatal(err)
	}
	waitGen(t, e, "local", s.ID, running)
	for c, gid := range map[*websocket.Conn]string{finished: done.ID, following: running} {
		sendMsg(t, c, map[string]any{"type": "ping"})
		for _, m := range readUntil(t, c, "pong") {
			if m.Generation == gid {
				t.Fatalf("got %s of generation %s, which the socket resumed past its end", m.Type, gid)
			}
		}
	}
}

// A hello resuming a finished generation whose events are no longer
// retained (here: the server restarted) gets its final event from the
// committed turn, exactly once and only if the client has not seen it:
// after = the last offset gets ready and nothing of the generation; after
// = the last offset - 1 gets ready, the turn, then done at the last
// offset. The same holds while the events are retained.
func TestSocketResumeFinishedGenerationAtItsEnd(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 0, nil)
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/say a b c")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	g := waitGen(t, e, "local", s.ID, res.Generation.ID)
	if g.Status != session.GenDone || g.Offset < 2 {
		t.Fatalf("generation %+v", g)
	}
	// resume says hello after offset after and returns what the socket
	// gets up to the pong of a ping sent behind it.
	resume := func(e *env, after int64) []socketMsg {
		t.Helper()
		c := dialSession(t, e, s.ID)
		sendMsg(t, c, map[string]any{"type": "hello", "resume": map[string]any{"generation": g.ID, "after": after}})
		if m := readMsg(t, c); m.Type != "ready" {
			t.Fatalf("resume after %d: first message %+v", after, m)
		}
		sendMsg(t, c, map[string]any{"type": "ping"})
		msgs := readUntil(t, c, "pong")
		return msgs[:len(msgs)-1]
	}
	check := func(what string, e *env) {
		t.Helper()
		if msgs := resume(e, g.Offset); len(msgs) != 0 {
			t.Errorf("%s: resume after the last offset %d got %s, want nothing", what, g.Offset, kinds(msgs))
		}
		var dones int
		for _, m := range resume(e, g.Offset-1) {
			switch {
			case m.Type == "done" && m.Generation == g.ID && m.Offset == g.Offset:
				dones++
			case m.Type == "turn":
			default:
				t.Errorf("%s: resume after %d got %s", what, g.Offset-1, kinds([]socketMsg{m}))
			}
		}
		if dones != 1 {
			t.Errorf("%s: resume after %d got done %d times, want once", what, g.Offset-1, dones)
		}
	}
	check("retained", e)
	e.close()
	check("after a restart", newEnv(t, dir, 0, nil))
}

// kinds describes messages by type, generation and offset.
func kinds(msgs []socketMsg) string {
	var b strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&b, "[%s %s@%d] ", m.Type, m.Generation, m.Offset)
	}
	return b.String()
}

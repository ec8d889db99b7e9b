package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"sessiond/objects"
	"sessiond/session"
	"sessiond/web"
)

type wsMsg struct {
	Type       string          `json:"type"`
	Generation string          `json:"generation"`
	Offset     int64           `json:"offset"`
	Text       string          `json:"text"`
	Code       string          `json:"code"`
	Message    string          `json:"message"`
	After      int64           `json:"after"`
	Turn       json.RawMessage `json:"turn"`
	Session    json.RawMessage `json:"session"`
	MoreTurns  bool            `json:"more_turns"`
	Status     string          `json:"status"` // of a generation message
}

// dial gets a ticket and opens the session's WebSocket.
func (s *server) dial(tb testing.TB, id string) *websocket.Conn {
	tb.Helper()
	var tk struct{ Ticket string }
	if st, raw := s.do(tb, "POST", "/v1/tickets", map[string]any{"session_id": id}, &tk); st != 201 {
		tb.Fatalf("ticket: %d %s", st, raw)
	}
	c, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(s.URL, "http")+"/v1/sessions/"+id+"/ws?ticket="+tk.Ticket, nil)
	if err != nil {
		tb.Fatal(err)
	}
	c.SetReadLimit(64 << 20)
	return c
}

// dialReady is dial, then hello and its ready: the socket is in the
// session's stream. It closes when the test ends.
func (s *server) dialReady(tb testing.TB, id string) *websocket.Conn {
	tb.Helper()
	c := s.dial(tb, id)
	tb.Cleanup(func() { c.CloseNow() })
	send(tb, c, map[string]any{"type": "hello"})
	recvUntil(tb, c, "ready")
	return c
}

func send(tb testing.TB, c *websocket.Conn, v any) {
	tb.Helper()
	b, _ := json.Marshal(v)
	if err := c.Write(context.Background(), websocket.MessageText, b); err != nil {
		tb.Fatal(err)
	}
}

func recv(tb testing.TB, c *websocket.Conn) wsMsg {
	tb.Helper()
	// Generous: a 32 MiB message takes seconds under the race detector.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		tb.Fatalf("read: %v", err)
	}
	var m wsMsg
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatalf("decode %s: %v", b, err)
	}
	return m
}

// recvUntil reads until a message of type typ and returns everything read.
func recvUntil(tb testing.TB, c *websocket.Conn, typ string) []wsMsg {
	tb.Helper()
	var out []wsMsg
	for {
		m := recv(tb, c)
		out = append(out, m)
		if m.Type == typ {
			return out
		}
	}
}

func TestWebSocketConversation(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	c := s.dial(t, sess.ID)
	defer c.CloseNow()
	send(t, c, map[string]any{"type": "hello"})
	if m := recv(t, c); m.Type != "ready" || !strings.Contains(string(m.Session), sess.ID) {
		t.Fatalf("first message %+v", m)
	}
	send(t, c, map[string]any{"type": "ping"})
	if m := recv(t, c); m.Type != "pong" {
		t.Fatalf("ping answered %+v", m)
	}
	send(t, c, map[string]any{"type": "send", "turns": []any{map[string]any{"role": "user", "content": "/words 20"}}, "generate": true, "idempotency_key": "k1"})
	msgs := recvUntil(t, c, "done")
	var text strings.Builder
	var off int64
	for _, m := range msgs {
		if m.Type == "delta" {
			if m.Offset != off+1 {
				t.Fatalf("offset %d after %d", m.Offset, off)
			}
			off = m.Offset
			text.WriteString(m.Text)
		}
	}
	if strings.TrimSpace(text.String()) != words(20) || msgs[0].Type != "turn" {
		t.Fatalf("streamed %q (first %s)", text.String(), msgs[0].Type)
	}
	if m := recv(t, c); m.Type != "turn" || !strings.Contains(string(m.Turn), `"status":"complete"`) {
		t.Fatalf("after done: %+v", m)
	}
	// Protocol errors are answered, the socket stays open.
	c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"bogus"}`))
	if m := recv(t, c); m.Type != "error" || m.Code != "unknown_type" {
		t.Fatalf("bogus answered %+v", m)
	}
	c.Write(context.Background(), websocket.MessageText, []byte(`{not json`))
	if m := recv(t, c); m.Type != "error" || m.Code != "invalid_json" {
		t.Fatalf("bad json answered %+v", m)
	}
	send(t, c, map[string]any{"type": "send", "turns": []any{map[string]any{"role": "wizard", "content": "x"}}, "idempotency_key": "k2"})
	if m := recv(t, c); m.Type != "error" || m.Code != "invalid_request" {
		t.Fatalf("bad turn answered %+v", m)
	}
	send(t, c, map[string]any{"type": "ping"})
	if m := recv(t, c); m.Type != "pong" {
		t.Fatalf("socket unusable after errors: %+v", m)
	}
}

// A send repeated with its idempotency key (a client that lost its socket
// before it heard back, retrying on a new one) stores nothing again and is
// answered on that socket: its turns, and its generation's end.
func TestWebSocketRepeatedSendIsAnswered(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	first := s.dialReady(t, sess.ID)
	msg := map[string]any{"type": "send", "turns": []any{map[string]any{"role": "user", "content": "/words 3"}}, "generate": true, "idempotency_key": "once"}
	send(t, first, msg)
	recvUntil(t, first, "done")
	first.CloseNow()

	again := s.dialReady(t, sess.ID)
	send(t, again, msg)
	var got []string
	for _, m := range recvUntil(t, again, "done") {
		var turn struct {
			Role    string `json:"role"`
			Content string `json:"content"`
			Status  string `json:"status"`
		}
		if m.Type == "turn" {
			json.Unmarshal(m.Turn, &turn)
		}
		got = append(got, m.Type+" "+turn.Role+" "+turn.Content+" "+turn.Status)
	}
	if want := []string{"turn user /words 3 complete", "turn assistant 1 2 3 complete", "done   "}; !slices.Equal(got, want) {
		t.Fatalf("the repeat answered %q, want %q", got, want)
	}
	var page struct {
		Turns []json.RawMessage `json:"turns"`
	}
	if code, body := s.do(t, "GET", "/v1/sessions/"+sess.ID+"/turns", nil, &page); code != http.StatusOK {
		t.Fatalf("list turns: %d %s", code, body)
	}
	if len(page.Turns) != 2 {
		t.Fatalf("%d turns stored after the repeat, want 2", len(page.Turns))
	}
	// The key with another request is refused, on the socket.
	msg["turns"] = []any{map[string]any{"role": "user", "content": "something else"}}
	send(t, again, msg)
	if m := recv(t, again); m.Type != "error" || m.Code != "conflict" {
		t.Fatalf("the key reused for another send answered %+v", m)
	}
}

// A send refused after its turns were written (an unknown model is found
// out after the insert) leaves nothing behind, as the REST call does.
func TestWebSocketRefusedSendWritesNothing(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	c := s.dialReady(t, sess.ID)
	send(t, c, map[string]any{"type": "send", "turns": []any{map[string]any{"role": "user", "content": "refused"}}, "generate": true, "model": "no-such-model", "idempotency_key": "k1"})
	if m := recv(t, c); m.Type != "error" || m.Code != "invalid_request" {
		t.Fatalf("unknown model answered %+v", m)
	}
	send(t, c, map[string]any{"type": "send", "turns": []any{map[string]any{"role": "user", "content": "kept"}}, "idempotency_key": "k2"})
	if m := recv(t, c); m.Type != "turn" {
		t.Fatalf("a valid send answered %+v", m)
	}
	var page struct {
		Turns []struct {
			ID       int64           `json:"id"`
			ParentID *int64          `json:"parent_id"`
			Content  json.RawMessage `json:"content"`
		} `json:"turns"`
	}
	if st, raw := s.do(t, "GET", "/v1/sessions/"+sess.ID+"/turns?limit=10", nil, &page); st != 200 {
		t.Fatalf("turns: %d %s", st, raw)
	}
	if len(page.Turns) != 1 || string(page.Turns[0].Content) != `"kept"` || page.Turns[0].ParentID != nil || page.Turns[0].ID != 1 {
		t.Fatalf("turns after a refused send: %+v", page.Turns)
	}
}

// queueBehind posts two generating turns to session id: the first
// generation runs for 20 s (the server's offline model at 50 tokens/s), so
// that the second waits in the queue for as long as a test needs. It
// returns their ids.
func queueBehind(t *testing.T, s *server, id string) (first, second string) {
	t.Helper()
	turns := "/v1/sessions/" + id + "/turns"
	var a, b struct{ Generation struct{ ID, Status string } }
	s.do(t, "POST", turns, map[string]any{"turns": []any{map[string]any{"role": "user", "content": "/words 1000"}}, "generate": true}, &a)
	s.do(t, "POST", turns, map[string]any{"turns": []any{map[string]any{"role": "user", "content": "/words 3"}}, "generate": true}, &b)
	if b.Generation.Status != "queued" {
		t.Fatalf("second generation %+v", b.Generation)
	}
	return a.Generation.ID, b.Generation.ID
}

// Resuming a generation that was cancelled while queued (it has no turn)
// gets ready and the generation's done (offset 1, turn null), not an
// error, and the socket goes on; resuming after that event gets nothing.
func TestWebSocketResumeGenerationCancelledWhileQueued(t *testing.T) {
	s := newServer(t, 50, web.Config{}, nil)
	sess := s.createSession(t, nil)
	_, second := queueBehind(t, s, sess.ID)
	if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/generations/"+second+"/cancel", nil, nil); st != 200 {
		t.Fatalf("cancel: %d %s", st, raw)
	}
	c := s.dial(t, sess.ID)
	defer c.CloseNow()
	send(t, c, map[string]any{"type": "hello", "resume": map[string]any{"generation": second, "after": 0}})
	if m := recv(t, c); m.Type != "ready" {
		t.Fatalf("hello answered %+v", m)
	}
	for {
		m := recv(t, c)
		if m.Type == "delta" && m.Generation != second {
			continue // the first generation's
		}
		if m.Type != "done" || m.Generation != second || m.Offset != 1 || string(m.Turn) != "null" {
			t.Fatalf("after ready: %+v (turn %s), want the cancelled generation's done at 1", m, m.Turn)
		}
		break
	}
	send(t, c, map[string]any{"type": "hello", "resume": map[string]any{"generation": second, "after": 1}})
	for { // the first generation's deltas may come before ready
		m := recv(t, c)
		if m.Type == "ready" {
			break
		}
		if m.Type != "delta" || m.Generation == second {
			t.Fatalf("second hello answered %+v", m)
		}
	}
	send(t, c, map[string]any{"type": "ping"})
	for {
		m := recv(t, c)
		if m.Type == "pong" {
			break
		}
		if m.Type == "error" || m.Generation == second {
			t.Fatalf("after ready: %+v", m)
		}
	}
}

// A socket waiting for a queued generation (resumed from it, or simply
// viewing the session) gets its done when it is cancelled in the queue:
// offset 1, turn null, finish_reason cancelled, as SSE sends it.
func TestWebSocketSeesQueuedGenerationCancelled(t *testing.T) {
	s := newServer(t, 50, web.Config{}, nil)
	sess := s.createSession(t, nil)
	first, second := queueBehind(t, s, sess.ID)
	resumed := s.dial(t, sess.ID)
	defer resumed.CloseNow()
	viewing := s.dial(t, sess.ID)
	defer viewing.CloseNow()
	send(t, resumed, map[string]any{"type": "hello", "resume": map[string]any{"generation": second, "after": 0}})
	send(t, viewing, map[string]any{"type": "hello"})
	for _, c := range []*websocket.Conn{resumed, viewing} {
		for {
			m := recv(t, c)
			if m.Type == "ready" {
				break
			}
			if m.Type != "delta" || m.Generation != first {
				t.Fatalf("before ready: %+v", m)
			}
		}
	}
	if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/generations/"+second+"/cancel", nil, nil); st != 200 {
		t.Fatalf("cancel: %d %s", st, raw)
	}
	for i, c := range []*websocket.Conn{resumed, viewing} {
		for {
			m := recv(t, c)
			if m.Type == "turn" || m.Generation == first && m.Type != "error" {
				continue // the first generation's, on a slow machine to its end
			}
			if m.Type != "done" || m.Generation != second || m.Offset != 1 || string(m.Turn) != "null" {
				t.Fatalf("socket %d after the cancel: %+v (turn %s), want the cancelled generation's done at 1", i, m, m.Turn)
			}
			break
		}
	}
}

func TestWebSocketTickets(t *testing.T) {
	const key = "alice-key-0123456789"
	s := newServer(t, 0, web.Config{Keys: map[string]web.Principal{key: {Owner: "alice"}}}, nil).as(key)
	a := s.createSession(t, nil)
	b := s.createSession(t, nil)
	var tk struct{ Ticket string }
	s.do(t, "POST", "/v1/tickets", map[string]any{"session_id": a.ID}, &tk)
	base := "ws" + strings.TrimPrefix(s.URL, "http") + "/v1/sessions/"
	for _, c := range []struct {
		url    string
		status int
	}{
		{base + a.ID + "/ws", 401},
		{base + a.ID + "/ws?ticket=forged." + tk.Ticket, 401},
		{base + b.ID + "/ws?ticket=" + tk.Ticket, 403},
	} {
		_, resp, err := websocket.Dial(context.Background(), c.url, nil)
		if err == nil || resp == nil || resp.StatusCode != c.status {
			t.Errorf("%s: err=%v resp=%v, want %d", c.url, err, resp, c.status)
		}
	}
	// A plain GET (no handshake) is a JSON 426 and leaves the ticket good.
	var e apiErr
	if st, raw := s.do(t, "GET", "/v1/sessions/"+a.ID+"/ws?ticket="+tk.Ticket, nil, &e); st != 426 || e.Error.Code != "invalid_request" {
		t.Fatalf("a GET without a handshake: %d %s, want 426 invalid_request", st, raw)
	}
	conn, _, err := websocket.Dial(context.Background(), base+a.ID+"/ws?ticket="+tk.Ticket, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	// A ticket opens one connection: a copy of it (a log, a proxy) is
	// worth nothing, even while the first is open and after it closed.
	for range 2 {
		if _, resp, err := websocket.Dial(context.Background(), base+a.ID+"/ws?ticket="+tk.Ticket, nil); err == nil || resp == nil || resp.StatusCode != 401 {
			t.Fatalf("the ticket again: err=%v resp=%v, want 401", err, resp)
		}
		conn.CloseNow()
	}
	// A new ticket opens a new connection.
	s.do(t, "POST", "/v1/tickets", map[string]any{"session_id": a.ID}, &tk)
	conn2, _, err := websocket.Dial(context.Background(), base+a.ID+"/ws?ticket="+tk.Ticket, nil)
	if err != nil {
		t.Fatalf("a new ticket: %v", err)
	}
	conn2.CloseNow()
}

// TestWebSocketResumeExactlyOnce has three viewers on their own
// connections; each drops its connection at random moments and resumes
// from the last offset it saw. Each must see the committed text exactly.
func TestWebSocketResumeExactlyOnce(t *testing.T) {
	s := newServer(t, 400, web.Config{}, nil)
	for round := range 3 {
		sess := s.createSession(t, nil)
		const n = 120
		var wg sync.WaitGroup
		results := make([]string, 3)
		start := make(chan string)
		for v := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[v] = watch(t, s, sess.ID, start, rand.New(rand.NewPCG(uint64(round), uint64(v))))
			}()
		}
		c := s.dial(t, sess.ID)
		send(t, c, map[string]any{"type": "send", "turns": []any{map[string]any{"role": "user", "content": fmt.Sprintf("/words %d", n)}}, "generate": true, "idempotency_key": "go"})
		var gid string
		for gid == "" {
			if m := recv(t, c); m.Type == "delta" {
				gid = m.Generation
			}
		}
		c.CloseNow()
		for range 3 {
			start <- gid
		}
		wg.Wait()
		for v, got := range results {
			if strings.TrimSpace(got) != words(n) {
				t.Fatalf("round %d viewer %d saw %q", round, v, got)
			}
		}
	}
}

// watch follows generation gid, reconnecting at random, and returns the
// text it assembled.
func watch(t *testing.T, s *server, id string, start chan string, r *rand.Rand) string {
	gid := <-start
	var text strings.Builder
	var after int64
	for {
		c := s.dial(t, id)
		send(t, c, map[string]any{"type": "hello", "resume": map[string]any{"generation": gid, "after": after}})
		budget := r.IntN(40) // messages before this connection is dropped
		for {
			m := recv(t, c)
			switch m.Type {
			case "delta":
				if m.Offset != after+1 {
					t.Errorf("offset %d after %d: gap or duplicate", m.Offset, after)
				}
				after = m.Offset
				text.WriteString(m.Text)
			case "done":
				c.CloseNow()
				return text.String()
			}
			if budget--; budget <= 0 && r.IntN(2) == 0 {
				break
			}
		}
		c.CloseNow()
	}
}

// TestWebSocketLargeMessages carries a 32 MiB message up and down whole and
// refuses one byte more with 1009, leaving the session usable. The limit
// is the runtime's default, as sessiond serves it: docs/protocol.md
// promises 32 MiB.
func TestWebSocketLargeMessages(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	c := s.dial(t, sess.ID)
	defer c.CloseNow()
	send(t, c, map[string]any{"type": "hello"})
	recv(t, c)
	frame := func(total int) []byte {
		head := `{"type":"send","idempotency_key":"big","turns":[{"role":"user","content":"`
		tail := `"}]}`
		content := make([]byte, total-len(head)-len(tail))
		for i := range content {
			content[i] = 'a' + byte(i%26)
		}
		return []byte(head + string(content) + tail)
	}
	up := frame(32 << 20)
	if err := c.Write(context.Background(), websocket.MessageText, up); err != nil {
		t.Fatal(err)
	}
	m := recv(t, c)
	if m.Type != "turn" {
		t.Fatalf("got %s (%s %s)", m.Type, m.Code, m.Message)
	}
	var turn struct{ Content string }
	json.Unmarshal(m.Turn, &turn)
	want := string(up[len(`{"type":"send","idempotency_key":"big","turns":[{"role":"user","content":"`) : len(up)-len(`"}]}`)])
	if turn.Content != want {
		t.Fatalf("content came back with %d bytes, want %d identical", len(turn.Content), len(want))
	}
	// A second viewer stays open while the first is refused.
	other := s.dial(t, sess.ID)
	defer other.CloseNow()
	send(t, other, map[string]any{"type": "hello"})
	recv(t, other)
	c.Write(context.Background(), websocket.MessageText, frame(32<<20+1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := c.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusMessageTooBig {
		t.Fatalf("oversized message: close %v (err %v), want 1009", got, err)
	}
	send(t, other, map[string]any{"type": "ping"})
	if m := recv(t, other); m.Type != "pong" {
		t.Fatalf("other viewer: %+v", m)
	}
	var page struct{ Turns []json.RawMessage }
	s.do(t, "GET", "/v1/sessions/"+sess.ID+"/turns", nil, &page)
	if len(page.Turns) != 1 {
		t.Fatalf("%d turns after the refused message, want 1", len(page.Turns))
	}
}

// TestSessionHibernatesWithViewers: a session with connected but quiet
// viewers hibernates, and wakes on their next message.
func TestSessionHibernatesWithViewers(t *testing.T) {
	s := newServer(t, 0, web.Config{}, func(rt *objects.Runtime) { rt.IdleTimeout = 20 * time.Millisecond })
	sess := s.createSession(t, nil)
	c := s.dial(t, sess.ID)
	defer c.CloseNow()
	send(t, c, map[string]any{"type": "hello"})
	recv(t, c)
	checkFor(t, "session hibernated", func() bool { return s.rt.Stats().Active == 0 })
	opens := s.rt.Stats().ObjectOpens
	send(t, c, map[string]any{"type": "send", "turns": []any{map[string]any{"role": "user", "content": "/say awake"}}, "generate": true, "idempotency_key": "w"})
	msgs := recvUntil(t, c, "done")
	if !strings.Contains(string(msgs[len(msgs)-1].Turn), `"content":"awake"`) {
		t.Fatalf("done %s", msgs[len(msgs)-1].Turn)
	}
	if s.rt.Stats().ObjectOpens <= opens {
		t.Fatal("the session never woke from disk")
	}
}

// hello with {"turn": N} replays the turns after N, a page's worth (16 MiB
// here); ready says when more were missed, and GET /turns?after= has them.
func TestWebSocketResumeFromTurn(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	post := func(text string) {
		if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", map[string]any{"turns": []any{map[string]any{"role": "user", "content": text}}}, nil); st != 201 {
			t.Fatalf("post: %d %s", st, raw)
		}
	}
	for range 3 {
		post("small")
	}
	for range 17 { // 17 MiB in all: past a page
		post(strings.Repeat("m", 1<<20))
	}
	replay := func(after int) (more bool, ids []int64) {
		t.Helper()
		c := s.dial(t, sess.ID)
		defer c.CloseNow()
		send(t, c, map[string]any{"type": "hello", "resume": map[string]any{"turn": after}})
		send(t, c, map[string]any{"type": "ping"})
		msgs := recvUntil(t, c, "pong")
		if msgs[0].Type != "ready" {
			t.Fatalf("first message %s", msgs[0].Type)
		}
		for _, m := range msgs[1 : len(msgs)-1] {
			var tn struct{ ID int64 }
			if m.Type != "turn" || json.Unmarshal(m.Turn, &tn) != nil {
				t.Fatalf("replayed %s %s", m.Type, m.Turn)
			}
			ids = append(ids, tn.ID)
		}
		return msgs[0].MoreTurns, ids
	}
	more, ids := replay(1)
	if !more || len(ids) < 3 || ids[0] != 2 || len(ids) >= 19 {
		t.Fatalf("replay after 1: more_turns %v, turns %v; want 2, 3 and the big turns up to 16 MiB, more_turns true", more, ids)
	}
	for i, id := range ids {
		if id != int64(i+2) {
			t.Fatalf("replayed %v: not every turn in order", ids)
		}
	}
	var page struct {
		Turns []struct{ ID int64 } `json:"turns"`
	}
	if st, raw := s.do(t, "GET", fmt.Sprintf("/v1/sessions/%s/turns?after=%d", sess.ID, ids[len(ids)-1]), nil, &page); st != 200 || len(page.Turns) == 0 || page.Turns[0].ID != ids[len(ids)-1]+1 {
		t.Fatalf("the rest: %d %.200s", st, raw)
	}
	if more, ids = replay(0); !more || len(ids) == 0 || ids[0] != 1 {
		t.Fatalf("replay after 0: more_turns %v, turns %v; want the first turn on", more, ids)
	}
	more, ids = replay(15)
	if more || len(ids) != 5 || ids[0] != 16 || ids[4] != 20 {
		t.Fatalf("replay after 15: more_turns %v, turns %v; want 16 to 20 and no more_turns", more, ids)
	}
}

// A WebSocket send is refused as POST /turns refuses it: an idempotency
// key over 256 bytes and a send with no turns and no generate are each
// answered with an error invalid_request, and nothing is stored.
func TestWebSocketSendCheckedAsPost(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	c := s.dialReady(t, sess.ID)
	long := strings.Repeat("k", 257)
	if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", `{"turns":[{"role":"user","content":"x"}]}`, nil, "Idempotency-Key", long); st != 422 {
		t.Fatalf("REST with a 257-byte key: %d %s", st, raw)
	}
	send(t, c, map[string]any{"type": "send", "turns": []any{map[string]any{"role": "user", "content": "long key"}}, "idempotency_key": long})
	if m := recv(t, c); m.Type != "error" || m.Code != "invalid_request" || !strings.Contains(m.Message, "256") {
		t.Fatalf("a 257-byte key answered %+v", m)
	}
	send(t, c, map[string]any{"type": "send", "turns": []any{}, "idempotency_key": "e1"})
	if m := recv(t, c); m.Type != "error" || m.Code != "invalid_request" || !strings.Contains(m.Message, "nothing to do") {
		t.Fatalf("an empty send answered %+v", m)
	}
	// A field a turn does not take is refused, as in a post's body (it
	// was ignored: a parent_id meant for a branch made none).
	send(t, c, map[string]any{"type": "send", "turns": []any{map[string]any{"role": "user", "content": "x", "parent_id": 1}}, "idempotency_key": "e1"})
	if m := recv(t, c); m.Type != "error" || m.Code != "invalid_request" || !strings.Contains(m.Message, `unknown field "parent_id"`) {
		t.Fatalf("a turn with parent_id answered %+v", m)
	}
	// The same key with a real turn is a new request, not a replay of the
	// refused one: the refused send recorded nothing.
	send(t, c, map[string]any{"type": "send", "turns": []any{map[string]any{"role": "user", "content": "kept"}}, "idempotency_key": "e1"})
	if m := recv(t, c); m.Type != "turn" || !strings.Contains(string(m.Turn), `"kept"`) {
		t.Fatalf("a valid send after the refusals answered %+v", m)
	}
	var page struct{ Turns []json.RawMessage }
	s.do(t, "GET", "/v1/sessions/"+sess.ID+"/turns?limit=10", nil, &page)
	if len(page.Turns) != 1 {
		t.Fatalf("%d turns stored, want 1: %s", len(page.Turns), page.Turns)
	}
}

// A page of another site is refused before its ticket is spent, with the
// API's JSON error (403 forbidden), not the library's plain text: the
// same ticket still opens the socket from a program (no Origin).
func TestWebSocketForeignOriginKeepsTicket(t *testing.T) {
	const key = "alice-key-0123456789"
	s := newServer(t, 0, web.Config{Keys: map[string]web.Principal{key: {Owner: "alice"}}}, nil).as(key)
	a := s.createSession(t, nil)
	var tk struct{ Ticket string }
	s.do(t, "POST", "/v1/tickets", map[string]any{"session_id": a.ID}, &tk)
	url := "ws" + strings.TrimPrefix(s.URL, "http") + "/v1/sessions/" + a.ID + "/ws?ticket=" + tk.Ticket
	_, resp, err := websocket.Dial(context.Background(), url, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("a foreign origin: err=%v resp=%v, want 403", err, resp)
	}
	raw, _ := io.ReadAll(resp.Body)
	var e apiErr
	if json.Unmarshal(raw, &e) != nil || e.Error.Code != "forbidden" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("a foreign origin answered %s %q, want JSON forbidden", resp.Header.Get("Content-Type"), raw)
	}
	conn, _, err := websocket.Dial(context.Background(), url, nil)
	if err != nil {
		t.Fatalf("the ticket after a refused origin: %v", err)
	}
	conn.CloseNow()
	// A same-origin page may connect.
	s.do(t, "POST", "/v1/tickets", map[string]any{"session_id": a.ID}, &tk)
	conn, _, err = websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(s.URL, "http")+"/v1/sessions/"+a.ID+"/ws?ticket="+tk.Ticket,
		&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {s.URL}}})
	if err != nil {
		t.Fatalf("a same-origin page: %v", err)
	}
	conn.CloseNow()
}

// A socket that resumes an ended generation while another one runs, which
// it has not seen start, gets all of the running one's deltas, from offset
// 1, as a hello without resume would: it got them only from the next one,
// and the start of that reply was missing.
func TestWebSocketResumeBesideARunningGeneration(t *testing.T) {
	s := newServer(t, 50, web.Config{}, nil)
	sess := s.createSession(t, nil)
	post := func(text string) string {
		var res struct{ Generation struct{ ID string } }
		if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", map[string]any{"turns": []any{map[string]any{"role": "user", "content": text}}, "generate": true}, &res); st != 201 {
			t.Fatalf("post: %d %s", st, raw)
		}
		return res.Generation.ID
	}
	g1 := post("/words 4")
	s.waitGeneration(t, sess.ID, g1)
	g2 := post("/words 40")
	for {
		var g struct{ Offset int64 }
		s.do(t, "GET", "/v1/sessions/"+sess.ID+"/generations/"+g2, nil, &g)
		if g.Offset >= 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := s.dial(t, sess.ID)
	defer c.CloseNow()
	send(t, c, map[string]any{"type": "hello", "resume": map[string]any{"generation": g1, "after": 2}})
	var msgs []wsMsg
	for {
		m := recv(t, c)
		if m.Generation != g2 {
			continue
		}
		msgs = append(msgs, m)
		if m.Type == "done" {
			break
		}
	}
	if got, want := deltasText(t, msgs), s.lastTurnText(t, sess.ID); got != want {
		t.Fatalf("the running generation's deltas make %q, its turn %q", got, want)
	}
}

// deltasText joins the text of the deltas among msgs (of one generation),
// which must run from offset 1 without a gap.
func deltasText(t *testing.T, msgs []wsMsg) string {
	t.Helper()
	var text strings.Builder
	var off int64
	for _, m := range msgs {
		if m.Type == "delta" {
			if m.Offset != off+1 {
				t.Fatalf("%s: delta at offset %d after %d", m.Generation, m.Offset, off)
			}
			off = m.Offset
			text.WriteString(m.Text)
		}
	}
	return text.String()
}

// lastTurnText is the text of the session's newest turn.
func (s *server) lastTurnText(t *testing.T, id string) string {
	t.Helper()
	var page struct{ Turns []session.Turn }
	s.do(t, "GET", "/v1/sessions/"+id+"/turns?limit=1", nil, &page)
	var text string
	json.Unmarshal(page.Turns[0].Content, &text)
	return text
}

// A send repeated on a new socket without hello (a client retrying after
// a reconnect) while its generation runs gets that generation's deltas
// from offset 1, not from the next one: the reply's start was missing.
func TestWebSocketRepeatedSendGetsTheRunningReplyWhole(t *testing.T) {
	s := newServer(t, 50, web.Config{}, nil)
	sess := s.createSession(t, nil)
	msg := map[string]any{"type": "send", "turns": []any{map[string]any{"role": "user", "content": "/words 40"}}, "generate": true, "idempotency_key": "retry"}
	first := s.dial(t, sess.ID)
	send(t, first, msg)
	var gid string
	for gid == "" {
		if m := recv(t, first); m.Type == "delta" && m.Offset >= 3 {
			gid = m.Generation
		}
	}
	first.CloseNow()

	again := s.dial(t, sess.ID)
	defer again.CloseNow()
	send(t, again, msg)
	if got, want := deltasText(t, recvUntil(t, again, "done")), s.lastTurnText(t, sess.ID); got != want {
		t.Fatalf("the repeat's deltas make %q, the reply is %q", got, want)
	}
}

// TestWebSocketQueuedGenerationIsAnnounced: a generation a post makes is
// announced to the session's sockets by a "generation" message with its
// id, so that a client that posts only over its socket can cancel one
// that waits in the queue: before the message, it had no id to cancel
// it by until the generation had ended. A repeated send gets it too.
func TestWebSocketQueuedGenerationIsAnnounced(t *testing.T) {
	s := newServer(t, 20, web.Config{}, nil)
	sess := s.createSession(t, nil)
	c, other := s.dialReady(t, sess.ID), s.dialReady(t, sess.ID)
	post := func(key, text string) map[string]any {
		msg := map[string]any{"type": "send", "turns": []any{map[string]any{"role": "user", "content": text}}, "generate": true, "idempotency_key": key}
		send(t, c, msg)
		return msg
	}
	// announced reads ws up to the next generation message and returns it.
	type genMsg struct{ Generation, Status string }
	announced := func(ws *websocket.Conn) genMsg {
		t.Helper()
		msgs := recvUntil(t, ws, "generation")
		m := msgs[len(msgs)-1]
		return genMsg{m.Generation, m.Status}
	}
	post("a", "/words 400") // runs for 20 s at 20 words/s
	running := announced(c)
	if running.Status != "running" || !strings.HasPrefix(running.Generation, "g_") {
		t.Fatalf("first generation announced as %+v", running)
	}
	if m := announced(other); m != running {
		t.Fatalf("the other socket got %+v, want %+v", m, running)
	}
	queuedSend := post("b", "/say waits")
	queued := announced(c)
	if queued.Status != "queued" || queued.Generation == running.Generation || queued.Generation == "" {
		t.Fatalf("second generation announced as %+v (the first: %s)", queued, running.Generation)
	}
	if m := announced(other); m != queued {
		t.Fatalf("the other socket got %+v, want %+v", m, queued)
	}
	// A REST post's generation is announced to the sockets too.
	var res struct{ Generation struct{ ID, Status string } }
	if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", map[string]any{"turns": []any{map[string]any{"role": "user", "content": "/say rest"}}, "generate": true}, &res); st != 201 {
		t.Fatalf("REST post: %d %s", st, raw)
	}
	for _, ws := range []*websocket.Conn{c, other} {
		if m := announced(ws); m.Generation != res.Generation.ID || m.Status != "queued" {
			t.Fatalf("the REST post's generation announced as %+v, want %s queued", m, res.Generation.ID)
		}
	}
	// The socket repeats its send (as after a reconnect): its turn, then
	// its generation, still queued.
	send(t, c, queuedSend)
	if m := announced(c); m != queued {
		t.Fatalf("repeated send: generation %+v, want %+v", m, queued)
	}
	// The id is enough to cancel it while it waits: it ends cancelled,
	// with its one event at offset 1, while the first runs on.
	send(t, c, map[string]any{"type": "cancel", "generation": queued.Generation})
	var g struct{ Status string }
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, raw := s.do(t, "GET", "/v1/sessions/"+sess.ID+"/generations/"+queued.Generation, nil, &g); st != 200 {
			t.Fatalf("generation: %d %s", st, raw)
		}
		if g.Status != "queued" || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if g.Status != "cancelled" {
		t.Fatalf("the queued generation is %s after its cancel, want cancelled", g.Status)
	}
	var first struct{ Status string }
	s.do(t, "GET", "/v1/sessions/"+sess.ID+"/generations/"+running.Generation, nil, &first)
	if first.Status != "running" {
		t.Fatalf("the running generation is %s, want running: the cancel was of the queued one", first.Status)
	}
}

// A WebSocket send takes parent_id and root as a post does, so that a
// client on a socket can edit a message (a branch) or its first one: the
// same turns, the same checks, the same idempotency.
func TestWebSocketSendBranches(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	c := s.dialReady(t, sess.ID)
	userTurn := func(text string) []any { return []any{map[string]any{"role": "user", "content": text}} }
	// sent reads up to the turn message of a send and returns the turn.
	sent := func() (turn struct {
		ID       int64
		ParentID *int64 `json:"parent_id"`
		Content  string
	}) {
		t.Helper()
		for {
			m := recv(t, c)
			if m.Type == "error" {
				t.Fatalf("send answered %+v", m)
			}
			if m.Type == "turn" {
				json.Unmarshal(m.Turn, &turn)
				return turn
			}
		}
	}
	send(t, c, map[string]any{"type": "send", "turns": userTurn("/say one"), "generate": true, "idempotency_key": "a"})
	first := sent()
	recvUntil(t, c, "done")
	recvUntil(t, c, "turn") // the assistant turn, complete
	// An edit of the first message: a new root.
	edit := map[string]any{"type": "send", "turns": userTurn("/say one, edited"), "root": true, "idempotency_key": "b"}
	send(t, c, edit)
	root := sent()
	if root.ParentID != nil || root.ID <= first.ID+1 || root.Content != "/say one, edited" {
		t.Fatalf("the root edit: %+v, want a turn with no parent", root)
	}
	// Under a given parent: the assistant turn of the first branch.
	send(t, c, map[string]any{"type": "send", "turns": userTurn("/say two"), "parent_id": first.ID + 1, "idempotency_key": "c"})
	if u := sent(); u.ParentID == nil || *u.ParentID != first.ID+1 {
		t.Fatalf("the send under turn %d: %+v", first.ID+1, u)
	}
	// The same key with another parent is another request.
	send(t, c, map[string]any{"type": "send", "turns": userTurn("/say two"), "parent_id": first.ID, "idempotency_key": "c"})
	if m := recvUntil(t, c, "error"); m[len(m)-1].Code != "conflict" {
		t.Fatalf("the key again, another parent: %+v, want conflict", m[len(m)-1])
	}
	// The post's checks: both at once, a parent that is not there, a
	// parent_id that is not an integer.
	for _, bad := range []map[string]any{
		{"type": "send", "turns": userTurn("x"), "root": true, "parent_id": first.ID, "idempotency_key": "d"},
		{"type": "send", "turns": userTurn("x"), "parent_id": 999, "idempotency_key": "e"},
		{"type": "send", "turns": userTurn("x"), "parent_id": "1", "idempotency_key": "f"},
		{"type": "send", "turns": userTurn("x"), "root": 1, "idempotency_key": "g"},
	} {
		send(t, c, bad)
		if m := recvUntil(t, c, "error"); m[len(m)-1].Code != "invalid_request" {
			t.Errorf("%v answered %+v, want invalid_request", bad, m[len(m)-1])
		}
	}
	var page struct{ Turns []struct{ ID int64 } }
	if st, raw := s.do(t, "GET", "/v1/sessions/"+sess.ID+"/turns?after=0&limit=100&branch="+fmt.Sprint(root.ID), nil, &page); st != 200 || len(page.Turns) != 1 || page.Turns[0].ID != root.ID {
		t.Fatalf("the root edit's branch: %d %s, want its one turn", st, raw)
	}
}

// A hello whose resume is refused (an unknown generation, or an offset
// past one's end) still gives the generation running from its first
// event, as a hello without resume does: it joined at the live point, the
// reply's start missing.
func TestWebSocketRefusedResumeGetsTheRunningReplyWhole(t *testing.T) {
	s := newServer(t, 20, web.Config{}, nil)
	sess := s.createSession(t, nil)
	var old, res struct{ Generation struct{ ID string } }
	if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", map[string]any{"turns": []any{map[string]any{"role": "user", "content": "/say a b"}}, "generate": true}, &old); st != 201 {
		t.Fatalf("post: %d %s", st, raw)
	}
	var g struct{ Status string }
	for deadline := time.Now().Add(10 * time.Second); g.Status != "done" && time.Now().Before(deadline); {
		s.do(t, "GET", "/v1/sessions/"+sess.ID+"/generations/"+old.Generation.ID, nil, &g)
		time.Sleep(20 * time.Millisecond)
	}
	if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", map[string]any{"turns": []any{map[string]any{"role": "user", "content": "/words 400"}}, "generate": true}, &res); st != 201 {
		t.Fatalf("post: %d %s", st, raw)
	}
	var running struct{ Offset int64 }
	deadline := time.Now().Add(10 * time.Second)
	for running.Offset < 5 && time.Now().Before(deadline) { // a few words out
		s.do(t, "GET", "/v1/sessions/"+sess.ID+"/generations/"+res.Generation.ID, nil, &running)
		time.Sleep(20 * time.Millisecond)
	}
	// An unknown generation; one that ended, past its end.
	for _, resume := range []map[string]any{{"generation": "g_NOPE", "after": 4}, {"generation": old.Generation.ID, "after": 100}} {
		c := s.dial(t, sess.ID)
		send(t, c, map[string]any{"type": "hello", "resume": resume})
		if m := recv(t, c); m.Type != "ready" {
			t.Fatalf("resume %v: first %+v", resume, m)
		}
		if m := recv(t, c); m.Type != "error" {
			t.Fatalf("resume %v: then %+v, want the refusal", resume, m)
		}
		m := recvUntil(t, c, "delta")
		if d := m[len(m)-1]; d.Generation != res.Generation.ID || d.Offset != 1 {
			t.Errorf("resume %v refused: the running reply from offset %d (%+v), want 1", resume, d.Offset, d)
		}
		c.CloseNow()
	}
}

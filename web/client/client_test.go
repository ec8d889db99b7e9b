package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"sessiond/session"
	"sessiond/web/client"
	"sessiond/web/webtest"
)

func newClient(t *testing.T) *client.Client {
	t.Helper()
	return client.New(webtest.New(t, nil).URL, "")
}

func TestClientConversation(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	s, err := c.CreateSession(ctx, session.CreateRequest{Title: "c"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Post(ctx, s.ID, session.PostRequest{Turns: []session.NewTurn{{Role: "user", Content: []byte(`"/words 12"`)}}, Generate: true, IdempotencyKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	var final *session.Turn
	var usage *session.Usage
	var last int64
	err = c.Follow(ctx, s.ID, res.Generation.ID, 0, func(ev client.Event) error {
		text.WriteString(ev.Text)
		if ev.Type == "done" {
			final, usage, last = ev.Turn, ev.Usage, ev.Offset
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(text.String()) != "1 2 3 4 5 6 7 8 9 10 11 12" || final == nil || final.Status != "complete" {
		t.Fatalf("followed %q, final %+v", text.String(), final)
	}
	if usage == nil || usage.CompletionTokens == 0 {
		t.Fatalf("done without usage: %+v", usage)
	}
	// Following again from the final event: nothing, and it returns.
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Follow(fctx, s.ID, res.Generation.ID, last, func(ev client.Event) error {
		t.Errorf("an event after done: %+v", ev)
		return nil
	}); err != nil {
		t.Fatalf("follow from the final event: %v", err)
	}
	// Resuming after offset 10 gives the last two words and done.
	var rest []string
	c.Follow(ctx, s.ID, res.Generation.ID, 10, func(ev client.Event) error { rest = append(rest, ev.Type+":"+ev.Text); return nil })
	if got := strings.Join(rest, ","); got != "delta:11 ,delta:12,done:" {
		t.Fatalf("resumed %s", got)
	}
	turns, more, err := c.Turns(ctx, s.ID, session.TurnQuery{Limit: 10})
	if err != nil || len(turns) != 2 || more {
		t.Fatalf("turns %v %v %v", turns, more, err)
	}
	list, next, err := c.Sessions(ctx, "", 10)
	if err != nil || len(list) != 1 || next != "" {
		t.Fatalf("sessions %v %q %v", list, next, err)
	}
	if list, _, err := c.Sessions(ctx, "", 0); err != nil || len(list) != 1 { // 0: the server's default
		t.Fatalf("sessions, no limit: %v %v", list, err)
	}
	_, err = c.Session(ctx, "nope")
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != "not_found" {
		t.Fatalf("missing session: %v", err)
	}
	if err := c.DeleteSession(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
}

// Follow resumes where a stream stopped: after a resume_required (a viewer
// too slow, closed by the server) and after a 429 (the owner's streams at
// their most), each event reaching fn once and resume_required never.
func TestFollowResumesAfterResumeRequiredAnd429(t *testing.T) {
	var mu sync.Mutex
	var asked []string // Last-Event-ID of each stream request, or "429"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") || !strings.HasSuffix(r.URL.Path, "/stream") {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		n := len(asked)
		last := r.Header.Get("Last-Event-ID")
		if n == 1 {
			last = "429"
		}
		asked = append(asked, last)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error":{"code":"rate_limited","message":"too many streams"}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		switch last {
		case "0":
			io.WriteString(w, "id: 1\ndata: {\"type\":\"delta\",\"generation\":\"g_1\",\"offset\":1,\"text\":\"a\"}\n\n")
			io.WriteString(w, "data: {\"type\":\"resume_required\",\"generation\":\"g_1\",\"after\":1}\n\n")
		case "1":
			io.WriteString(w, "id: 2\ndata: {\"type\":\"delta\",\"generation\":\"g_1\",\"offset\":2,\"text\":\"b\"}\n\n")
			io.WriteString(w, "id: 3\ndata: {\"type\":\"done\",\"generation\":\"g_1\",\"offset\":3}\n\n")
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	err := client.New(srv.URL, "").Follow(ctx, "s", "g_1", 0, func(ev client.Event) error {
		got = append(got, fmt.Sprint(ev.Type, ev.Offset, ev.Text))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "[delta1a delta2b done3]"; fmt.Sprint(got) != want {
		t.Fatalf("events %v, want %s", got, want)
	}
	if want := "[0 429 1]"; fmt.Sprint(asked) != want {
		t.Fatalf("requests %v, want %s", asked, want)
	}
}

// CreateSession sends req.IdempotencyKey as the Idempotency-Key header: a
// retry with the same key returns the session the first create made.
func TestCreateSessionIdempotencyKey(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	req := session.CreateRequest{Title: "once", IdempotencyKey: "create-1"}
	a, err := c.CreateSession(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.CreateSession(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != b.ID {
		t.Fatalf("one key made two sessions: %s and %s", a.ID, b.ID)
	}
	list, _, err := c.Sessions(ctx, "", 10)
	if err != nil || len(list) != 1 {
		t.Fatalf("sessions after two creates with one key: %v %v", list, err)
	}
}

// Follow reads SSE as the format allows, not only as sessiond writes it:
// "data:" with no space, and an event's data split over several lines
// (joined with "\n"), comments and other fields skipped.
func TestFollowParsesSSEDataLines(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ": a comment\nevent: delta\nid: 1\ndata:{\"type\":\"delta\",\"generation\":\"g_1\",\"offset\":1,\"text\":\"a\"}\n\n")
		io.WriteString(w, "event: delta\ndata: {\"type\":\"delta\",\ndata:\"generation\":\"g_1\",\"offset\":2,\ndata: \"text\":\"b\\nc\"}\n\n")
		io.WriteString(w, "data:{\"type\":\"done\",\"generation\":\"g_1\",\"offset\":3}\r\n\r\n")
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	err := client.New(srv.URL, "").Follow(ctx, "s", "g_1", 0, func(ev client.Event) error {
		got = append(got, fmt.Sprintf("%s%d%q", ev.Type, ev.Offset, ev.Text))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := `[delta1"a" delta2"b\nc" done3""]`; fmt.Sprint(got) != want {
		t.Fatalf("events %v, want %s", got, want)
	}
}

// Fork, Export, Import and Ticket reach their endpoints: a fork holds the
// history up to its turn, an import holds what the export wrote, a retry
// with the same key returns the same session, and a ticket opens the
// session's WebSocket.
func TestClientForkExportImportTicket(t *testing.T) {
	ctx := context.Background()
	srv := webtest.New(t, nil)
	c := client.New(srv.URL, "")
	s, err := c.CreateSession(ctx, session.CreateRequest{Title: "source"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{`"one"`, `"two"`, `"three"`} {
		if _, err := c.Post(ctx, s.ID, session.PostRequest{Turns: []session.NewTurn{{Role: "user", Content: []byte(m)}}}); err != nil {
			t.Fatal(err)
		}
	}

	f, err := c.Fork(ctx, s.ID, 2, "fork-key")
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Fork(ctx, s.ID, 2, "fork-key")
	if err != nil || again.ID != f.ID || f.ID == s.ID {
		t.Fatalf("fork %s, retried %+v %v: want one new session", f.ID, again, err)
	}
	if turns, _, err := c.Turns(ctx, f.ID, session.TurnQuery{Limit: 10}); err != nil || len(turns) != 2 || string(turns[1].Content) != `"two"` {
		t.Fatalf("the fork's turns %+v %v, want one and two", turns, err)
	}

	var export strings.Builder
	if err := c.Export(ctx, s.ID, &export); err != nil {
		t.Fatal(err)
	}
	imp, err := c.Import(ctx, strings.NewReader(export.String()), "import-key")
	if err != nil {
		t.Fatalf("import of %q: %v", export.String(), err)
	}
	if again, err := c.Import(ctx, strings.NewReader(export.String()), "import-key"); err != nil || again.ID != imp.ID {
		t.Fatalf("import retried: %+v %v, want %s", again, err, imp.ID)
	}
	turns, _, err := c.Turns(ctx, imp.ID, session.TurnQuery{Limit: 10})
	if err != nil || len(turns) != 3 || string(turns[2].Content) != `"three"` || imp.Title != "source" {
		t.Fatalf("imported %+v with turns %+v %v", imp, turns, err)
	}
	var e *client.Error
	if err := c.Export(ctx, "no-such-session", io.Discard); !errors.As(err, &e) || e.Status != 404 {
		t.Fatalf("export of a missing session: %v", err)
	}

	tk, exp, err := c.Ticket(ctx, s.ID)
	if err != nil || tk == "" || !exp.After(time.Now()) {
		t.Fatalf("ticket %q expiring %v: %v", tk, exp, err)
	}
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/sessions/"+s.ID+"/ws?ticket="+tk, nil)
	if err != nil {
		t.Fatalf("the ticket opened no socket: %v", err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"hello"}`)); err != nil {
		t.Fatal(err)
	}
	if _, m, err := ws.Read(ctx); err != nil || !strings.Contains(string(m), `"type":"ready"`) {
		t.Fatalf("hello answered %s %v", m, err)
	}
	if _, _, err := c.Ticket(ctx, "no-such-session"); !errors.As(err, &e) || e.Status != 404 {
		t.Fatalf("ticket of a missing session: %v", err)
	}
}

// A finished generation resumed is its turn then done, and the turn event
// has no offset: a connection broken between the two must not give fn the
// turn again on the reconnect (Follow's exactly once).
func TestFollowGivesAResumedTurnOnce(t *testing.T) {
	var streams atomic.Int32
	turn := `{"type":"turn","turn":{"id":2,"parent_id":1,"role":"assistant","content":"1 2","status":"interrupted"}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/stream") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: turn\ndata: %s\n\n", turn)
		if streams.Add(1) == 1 {
			return // broken before done
		}
		fmt.Fprint(w, "event: done\nid: 3\ndata: {\"type\":\"done\",\"generation\":\"g_1\",\"offset\":3,\"finish_reason\":\"interrupted\"}\n\n")
	}))
	defer srv.Close()
	c := &client.Client{BaseURL: srv.URL + "/"} // a trailing slash, as a literal may have
	var got []string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Follow(ctx, "s", "g_1", 0, func(ev client.Event) error {
		got = append(got, ev.Type)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "turn,done" || streams.Load() != 2 {
		t.Fatalf("fn got %q over %d streams, want turn then done over 2", got, streams.Load())
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"sessiond/session"
	"sessiond/web/client"
	"sessiond/web/webtest"
)

// TestChatThenResume chats in a new session, then resumes it by ID as a
// second terminal would: the history is printed and the chat goes on.
func TestChatThenResume(t *testing.T) {
	c := client.New(webtest.New(t, nil).URL, "")

	var out bytes.Buffer
	if err := chat(context.Background(), c, "", strings.NewReader("/say first reply\n"), &out); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`--session (\S+)\)`).FindStringSubmatch(out.String())
	if m == nil || !strings.Contains(out.String(), "assistant: first reply\n") {
		t.Fatalf("first run:\n%s", out.String())
	}
	out.Reset()
	if err := chat(context.Background(), c, m[1], strings.NewReader("/say second\n"), &out); err != nil {
		t.Fatal(err)
	}
	want := "user: /say first reply\nassistant: first reply\n> assistant: second\n"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("resumed run:\n%s\nwant it to contain:\n%s", out.String(), want)
	}
}

// syncBuffer is chat's output, read by the test while chat writes it.
type syncBuffer struct {
	mu   sync.Mutex
	b    bytes.Buffer
	want string        // when the output first contains it, hit is closed
	hit  chan struct{} // nil: nothing to watch for
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.b.Write(p)
	if w.hit != nil && strings.Contains(w.b.String(), w.want) {
		close(w.hit)
		w.hit = nil
	}
	return n, err
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// interruptWhen runs chat on input that never ends and cancels its context
// (Ctrl-C) once the output contains want: chat must then return nil.
func interruptWhen(t *testing.T, c *client.Client, input, want string) string {
	t.Helper()
	in, inw := io.Pipe()
	t.Cleanup(func() { inw.Close() }) // ends chat's line reader
	if input != "" {
		go inw.Write([]byte(input)) // returns when read, or at Close
	}
	out := &syncBuffer{want: want, hit: make(chan struct{})}
	hit := out.hit
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- chat(ctx, c, "", in, out) }()
	select {
	case <-hit:
	case err := <-errc:
		t.Fatalf("chat returned %v before printing %q:\n%s", err, want, out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("no %q printed:\n%s", want, out.String())
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("chat after Ctrl-C: %v, want nil (a quiet exit)\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second): // a bound for the bug: chat stuck reading stdin
		t.Fatalf("chat did not return after Ctrl-C:\n%s", out.String())
	}
	return out.String()
}

// Ctrl-C at the prompt ends chat at once and quietly, although no line
// (and no end of input) comes.
func TestChatInterruptAtPrompt(t *testing.T) {
	c := client.New(webtest.New(t, nil).URL, "")
	out := interruptWhen(t, c, "", "> ")
	if !strings.HasSuffix(out, "> \n") {
		t.Fatalf("output after Ctrl-C at the prompt:\n%q\nwant it to end the prompt's line", out)
	}
}

// Ctrl-C while a reply streams ends chat quietly too.
func TestChatInterruptDuringReply(t *testing.T) {
	c := client.New(webtest.New(t, &webtest.Options{OfflineTPS: 20}).URL, "")
	interruptWhen(t, c, "/words 100000\n", "assistant: 1 2")
}

// resumeAfter posts texts to a new session, each generating (at 20 words
// a second), and returns what chat prints resuming it at once.
func resumeAfter(t *testing.T, texts ...string) string {
	t.Helper()
	c := client.New(webtest.New(t, &webtest.Options{OfflineTPS: 20}).URL, "")
	ctx := context.Background()
	s, err := c.CreateSession(ctx, session.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range texts {
		content, _ := json.Marshal(text)
		if _, err := c.Post(ctx, s.ID, session.PostRequest{Turns: []session.NewTurn{{Role: "user", Content: content}}, Generate: true}); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := chat(ctx, c, s.ID, strings.NewReader(""), &out); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// Resuming while a reply is generated shows it once, in full: streamed,
// not also printed as history.
func TestChatResumeWhileGenerating(t *testing.T) {
	out := resumeAfter(t, "/words 30")
	if got := strings.Count(out, "assistant: 1 2 3"); got != 1 || !strings.Contains(out, " 29 30\n") {
		t.Fatalf("reply printed %d times, want once in full:\n%s", got, out)
	}
}

// Resuming while a reply runs with another queued behind it shows both:
// the queued one was never shown.
func TestChatResumeShowsAQueuedReply(t *testing.T) {
	out := resumeAfter(t, "/words 20", "/say second reply")
	if !strings.Contains(out, " 19 20\n") || !strings.Contains(out, "assistant: second reply\n") {
		t.Fatalf("output:\n%s", out)
	}
}

// A reply that finishes between the reads chat makes to resume is printed
// once. The proxy holds a read of the session until the generation runs,
// and a read of the turns until it has finished: reading the session
// first (running), then the turns (done), printed the reply as history
// and streamed it again.
func TestChatResumeAsReplyFinishes(t *testing.T) {
	ws := webtest.New(t, &webtest.Options{OfflineTPS: 20})
	direct := client.New(ws.URL, "")
	ctx := context.Background()
	s, err := direct.CreateSession(ctx, session.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := direct.Post(ctx, s.ID, session.PostRequest{Turns: []session.NewTurn{{Role: "user", Content: []byte(`"/words 30"`)}}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse(ws.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var until func(g *session.Generation) bool
		switch {
		case r.Method != "GET":
		case r.URL.Path == "/v1/sessions/"+s.ID:
			until = func(g *session.Generation) bool { return g.Status == session.GenRunning }
		case r.URL.Path == "/v1/sessions/"+s.ID+"/turns":
			until = (*session.Generation).Finished
		}
		for until != nil {
			g, err := direct.Generation(r.Context(), s.ID, res.Generation.ID)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			if until(g) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()

	var out bytes.Buffer
	if err := chat(ctx, client.New(front.URL, ""), s.ID, strings.NewReader(""), &out); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out.String(), "assistant: 1 2 3"); got != 1 {
		t.Fatalf("reply printed %d times, want once:\n%s", got, out.String())
	}
}

// A resume that finds the generation ended without its deltas (sessiond
// restarted: its saved turn and final event are all there is) prints the
// part of the saved reply not shown yet, or the whole reply as saved when
// it differs, and says that the reply was interrupted; before, the saved
// text and the interruption went unsaid.
func TestStreamShowsASavedInterruptedReply(t *testing.T) {
	for _, c := range []struct {
		name, saved, want string
	}{
		{"nothing shown", "1 2 3", "assistant: 1 2 3 [interrupted: the server stopped]\n"},
		{"saved differs", "1 2", "assistant: 1 2 3\n[as saved:] 1 2 [interrupted: the server stopped]\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			turn, _ := json.Marshal(map[string]any{"id": 2, "role": "assistant", "content": c.saved, "status": "interrupted",
				"error": map[string]string{"code": "interrupted", "message": "the server stopped"}})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				if c.name == "saved differs" {
					fmt.Fprint(w, "event: delta\nid: 1\ndata: {\"type\":\"delta\",\"generation\":\"g_1\",\"offset\":1,\"text\":\"1 2 3\"}\n\n")
				}
				fmt.Fprintf(w, "event: turn\ndata: {\"type\":\"turn\",\"turn\":%s}\n\n", turn)
				fmt.Fprintf(w, "event: done\nid: 65537\ndata: {\"type\":\"done\",\"generation\":\"g_1\",\"offset\":65537,\"turn\":%s,\"finish_reason\":\"interrupted\"}\n\n", turn)
			}))
			defer srv.Close()
			var out bytes.Buffer
			if err := stream(context.Background(), client.New(srv.URL, ""), "s1", "g_1", &out); err != nil {
				t.Fatal(err)
			}
			if out.String() != c.want {
				t.Fatalf("printed %q, want %q", out.String(), c.want)
			}
		})
	}
}

// A reply that ends before it starts, its turn answered by another
// (queued behind a running reply, then superseded), says so rather than
// print an empty reply.
func TestChatSupersededReplySaysSo(t *testing.T) {
	ws := webtest.New(t, &webtest.Options{OfflineTPS: 50})
	c := client.New(ws.URL, "")
	ctx := context.Background()
	s, err := c.CreateSession(ctx, session.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var gens []string
	for _, text := range []string{`"/words 20"`, `"bee"`, `"/say sea"`} {
		r, err := c.Post(ctx, s.ID, session.PostRequest{Turns: []session.NewTurn{{Role: "user", Content: []byte(text)}}, Generate: true})
		if err != nil {
			t.Fatal(err)
		}
		gens = append(gens, r.Generation.ID)
	}
	var out bytes.Buffer
	// The first queued reply starts from the session's head, answering
	// the last turn too: the second queued one has nothing left to answer.
	if err := stream(ctx, c, s.ID, gens[2], &out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasPrefix(got, "assistant: [superseded: ") {
		t.Fatalf("printed %q, want the reply to say it was superseded", got)
	}
}

// A tool call is shown whole, from the committed turn, not as the parts
// it streamed in.
func TestChatShowsAToolCallWhole(t *testing.T) {
	c := client.New(webtest.New(t, nil).URL, "")
	var out bytes.Buffer
	if err := chat(context.Background(), c, "", strings.NewReader(`/tool read_file {"path":"a.go"}`+"\n"), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `[tool call read_file({"path":"a.go"})]`) || strings.Contains(out.String(), `"index"`) {
		t.Fatalf("output:\n%s", out.String())
	}
}

package web_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sessiond/web"
)

// rawRequest opens a connection to s and writes head (a request line and
// headers, without the blank line) and the start of a body.
func rawRequest(t *testing.T, s *server, head, body string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, head+"\r\nHost: sessiond\r\n\r\n"+body); err != nil {
		t.Fatal(err)
	}
	return conn
}

// A body that stops arriving is answered 408 once its deadline passes,
// and nothing of it is posted.
func TestSlowBodyIsRefused(t *testing.T) {
	defer web.SetTransferLimits(200*time.Millisecond, 1<<30)()
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	for _, path := range []string{"/v1/sessions/" + sess.ID + "/turns", "/v1/sessions", "/v1/sessions/import"} {
		conn := rawRequest(t, s, "POST "+path+" HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 1000",
			`{"turns":[{"role":"user","content":"half`)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: no answer to a stalled body: %v", path, err)
		}
		var e apiErr
		json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode != http.StatusRequestTimeout || e.Error.Code != "request_timeout" {
			t.Fatalf("%s: %d %+v, want 408 request_timeout", path, resp.StatusCode, e)
		}
	}
	var page struct{ Turns []json.RawMessage }
	s.do(t, "GET", "/v1/sessions/"+sess.ID+"/turns", nil, &page)
	if len(page.Turns) != 0 {
		t.Fatalf("the stalled post left %d turns", len(page.Turns))
	}
}

// A client that stops reading a large answer loses its connection when the
// write's deadline passes; it does not hold the answer for ever.
func TestStalledReaderIsCut(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	big := strings.Repeat("x", 24<<20) // past the socket buffers of both ends
	if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", map[string]any{
		"turns": []any{map[string]any{"role": "user", "content": big}}}, nil); st != 201 {
		t.Fatalf("post: %d %.200s", st, raw)
	}
	defer web.SetTransferLimits(200*time.Millisecond, 1<<30)()
	conn := rawRequest(t, s, "GET /v1/sessions/"+sess.ID+"/turns HTTP/1.1", "")
	time.Sleep(3 * time.Second) // not reading, well past the page's build and its deadline
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("after %d bytes: %v, want the server to have closed the connection", n, err)
	}
	if n >= int64(len(big)) {
		t.Fatalf("read %d bytes, the whole answer: the write outlived its deadline", n)
	}
}

// The body's deadline ends with the body: an event stream answering a post
// lasts as long as its generation.
func TestStreamOutlivesBodyDeadline(t *testing.T) {
	s := newServer(t, 40, web.Config{}, nil)
	// A request without a body gets no deadline: a creation takes longer
	// than this one.
	restore := web.SetTransferLimits(time.Microsecond, 1<<30)
	s.createSession(t, nil)
	restore()
	defer web.SetTransferLimits(100*time.Millisecond, 1<<30)()
	sess := s.createSession(t, map[string]any{"title": "t"})
	resp := openSSE(t, s, "POST", "/v1/sessions/"+sess.ID+"/turns", `{"turns":[{"role":"user","content":"/words 30"}],"generate":true}`)
	defer resp.Body.Close()
	start := time.Now()
	b, _ := io.ReadAll(resp.Body)
	if took := time.Since(start); !bytes.Contains(b, []byte("event: done")) || took < 300*time.Millisecond {
		t.Fatalf("stream of %v ended without done, or too soon to test anything:\n%s", took, b)
	}
}

// Large bodies held at once are bounded (Config.MaxBodyMemory), counted as
// their bytes arrive: one that would pass the budget is refused with 503
// and Retry-After, nothing of it posted; small ones and a large one alone
// always pass; a body's place frees once its post is stored.
func TestBodyMemoryBudget(t *testing.T) {
	var held atomic.Int64
	defer web.OnBodiesHeld(func(n int64) { held.Store(n) })()
	s := newServer(t, 0, web.Config{MaxBodyMemory: 5 << 20}, nil)
	sess := s.createSession(t, nil)
	path := "/v1/sessions/" + sess.ID + "/turns"
	post := func(n int) string {
		return `{"turns":[{"role":"user","content":"` + strings.Repeat("b", n) + `"}]}`
	}
	if st, raw := s.do(t, "POST", path, post(3<<20), nil); st != 201 {
		t.Fatalf("a large post alone (twice over the budget): %d %.200s", st, raw)
	}
	checkFor(t, "its place freed", func() bool { return held.Load() == 0 })

	// A holds the whole budget while the rest of its body is awaited.
	a := post(3 << 20)
	conn := rawRequest(t, s, fmt.Sprintf("POST %s HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d", path, len(a)), a[:2200<<10])
	checkFor(t, "A to hold the budget", func() bool { return held.Load() >= 4<<20 })
	req, _ := http.NewRequest("POST", s.URL+path, strings.NewReader(post(2<<20)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var e apiErr
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != 503 || e.Error.Code != "overloaded" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a second large post: %d %+v, want 503 overloaded with Retry-After", resp.StatusCode, e)
	}
	if st, raw := s.do(t, "POST", path, post(100), nil); st != 201 {
		t.Fatalf("a small post meanwhile: %d %s", st, raw)
	}
	if _, err := io.WriteString(conn, a[2200<<10:]); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("A: %v %v", resp, err)
	}
	resp.Body.Close()
	checkFor(t, "A's place freed", func() bool { return held.Load() == 0 })
	if st, raw := s.do(t, "POST", path, post(2<<20), nil); st != 201 {
		t.Fatalf("a large post after A: %d %.200s", st, raw)
	}
	var page struct{ Turns []json.RawMessage }
	s.do(t, "GET", path+"?limit=1000", nil, &page)
	if len(page.Turns) != 4 {
		t.Fatalf("%d turns, want the 4 posts answered 201 and nothing of the refused one", len(page.Turns))
	}
}

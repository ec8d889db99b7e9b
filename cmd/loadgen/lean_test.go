package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestParseAnswer(t *testing.T) {
	whole := "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\ncontent-LENGTH: 5\r\n\r\nhello"
	status, n, err := parseAnswer([]byte(whole + "HTTP/1.1"))
	if err != nil || status != 201 || n != len(whole) {
		t.Fatalf("parseAnswer = %d, %d, %v; want 201, %d, nil", status, n, err, len(whole))
	}
	for cut := range len(whole) {
		if _, _, err := parseAnswer([]byte(whole[:cut])); !errors.Is(err, errIncomplete) {
			t.Fatalf("parseAnswer of the first %d bytes: %v, want errIncomplete", cut, err)
		}
	}
	for _, bad := range []string{
		"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTX/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 2x1 Created\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 201 Created\r\nContent-Length: -1\r\n\r\n",
	} {
		if _, _, err := parseAnswer([]byte(bad)); err == nil || errors.Is(err, errIncomplete) {
			t.Errorf("parseAnswer(%q) = %v, want a parse error", bad, err)
		}
	}
}

// TestLeanLoop runs the lean client against a real HTTP server: every
// answered call is counted once, with the right body on the wire, and an
// unwanted status is an error.
func TestLeanLoop(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the lean client is Linux-only")
	}
	var got, bad atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != "POST" || r.Header.Get("Content-Type") != "application/json" || string(b) != `{"n":1}` {
			bad.Add(1)
		}
		got.Add(1)
		if strings.HasSuffix(r.URL.Path, "/fail") {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"ok":true}`)
	}))
	defer srv.Close()
	spec := loopSpec{conns: 4, n: 200, duration: 20 * time.Second}
	res, err := runLeanLoop(context.Background(), spec, srv.URL, http.StatusCreated, func(dst []byte, host string, i int) []byte {
		path := "/x"
		if i%10 == 0 {
			path = "/x/fail"
		}
		return appendRequest(dst, "POST", host, path, []byte(`{"n":1}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.calls != 180 || res.errors != 20 {
		t.Errorf("calls %d, errors %d; want 180 and 20", res.calls, res.errors)
	}
	if got.Load() != 200 || bad.Load() != 0 {
		t.Errorf("server saw %d requests (%d malformed); want 200, 0 malformed", got.Load(), bad.Load())
	}
}

// TestLeanWebSocket reads a real coder/websocket server with the lean
// reader: the first messages arrive before ready, big and fragmented
// messages come whole and in order, and a ping is answered.
func TestLeanWebSocket(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the lean client is Linux-only")
	}
	big := strings.Repeat("x", 100<<10)
	pinged := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		_, hello, err := c.Read(ctx)
		if err != nil || string(hello) != `{"type":"hello"}` {
			t.Errorf("hello %q, %v", hello, err)
			return
		}
		ctx = c.CloseRead(ctx) // reads the pong
		c.Write(ctx, websocket.MessageText, []byte(`{"type":"ready"}`))
		c.Write(ctx, websocket.MessageText, []byte(`m1`))
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		pinged <- c.Ping(pctx) // the lean reader must answer
		cancel()
		c.Write(ctx, websocket.MessageText, []byte(big))
		fw, err := c.Writer(ctx, websocket.MessageText)
		if err != nil {
			return
		}
		fw.Write([]byte("frag-"))
		fw.Write([]byte("mented"))
		fw.Close()
		c.Write(ctx, websocket.MessageText, []byte(`done`))
		<-ctx.Done() // until the client goes
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := strings.TrimPrefix(srv.URL, "http://")
	v, err := leanWSDial(ctx, addr, "/ws", [][]byte{[]byte(`{"type":"hello"}`)}, isReady)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var got []string
	err = leanRead(ctx, []*leanViewer{v}, func(i int, at time.Time, msg []byte) bool {
		got = append(got, string(msg))
		return string(msg) == "done"
	}, func(i int, err error) { t.Errorf("viewer failed: %v", err) })
	if err != nil {
		t.Fatal(err)
	}
	if err := <-pinged; err != nil {
		t.Errorf("ping: %v", err)
	}
	want := []string{"m1", big, "frag-mented", "done"}
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d: %.40q, want %.40q", i, got[i], want[i])
		}
	}
}

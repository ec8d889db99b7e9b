package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// A server's stop sends a WebSocket viewer of a running generation its
// final event, done with error interrupted, before the close (1001): it
// was lost when a write was under way as the viewers closed, in most
// runs of a black-box round.
func TestShutdownSendsWebSocketViewersTheFinalEvent(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	pr, pw := io.Pipe()
	addr, logDone := watchLog(t, pr)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-logDone })
	errc := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		errc <- run(ctx, []string{"--addr", "127.0.0.1:0", "--log-format", "json", "--data", data, "--offline-tps", "50"}, noEnv, io.Discard, pw)
		pw.Close()
		close(exited)
	}()
	a := waitHealthy(t, addr, exited)
	base := "http://" + a + "/v1"

	resp, err := http.Post(base+"/sessions", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	var s struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()

	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer dcancel()
	ws, _, err := websocket.Dial(dctx, "ws://"+a+"/v1/sessions/"+s.ID+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := ws.Write(dctx, websocket.MessageText, []byte(`{"type":"hello"}`)); err != nil {
		t.Fatal(err)
	}
	resp, err = http.Post(base+"/sessions/"+s.ID+"/turns", "application/json",
		strings.NewReader(`{"turns":[{"role":"user","content":"/words 10000"}],"generate":true}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var done []byte // the generation's final event
	deltas := 0
	for {
		_, msg, err := ws.Read(dctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusGoingAway {
				t.Fatalf("read: %v, want a close with 1001", err)
			}
			break
		}
		var m struct{ Type string }
		json.Unmarshal(msg, &m)
		switch m.Type {
		case "delta":
			if deltas++; deltas == 2 {
				cancel() // the server stops, as on SIGTERM
			}
		case "done":
			done = msg
		}
	}
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	var d struct {
		Error *struct{ Code string }
	}
	json.Unmarshal(done, &d)
	if d.Error == nil || d.Error.Code != "interrupted" {
		t.Fatalf("the socket's done before its close: %.300q, want one with error interrupted", done)
	}
}

package main

import (
	"context"
	"encoding/json"
	"net/http"
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
	st := startStopping(t, "50")
	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer dcancel()
	ws, _, err := websocket.Dial(dctx, "ws://"+st.addr+"/v1/sessions/"+st.session+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := ws.Write(dctx, websocket.MessageText, []byte(`{"type":"hello"}`)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(st.base+"/sessions/"+st.session+"/turns", "application/json",
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
				st.stop() // the server stops, as on SIGTERM
			}
		case "done":
			done = msg
		}
	}
	st.stopped(t)
	var d struct {
		Error *struct{ Code string }
	}
	json.Unmarshal(done, &d)
	if d.Error == nil || d.Error.Code != "interrupted" {
		t.Fatalf("the socket's done before its close: %.300q, want one with error interrupted", done)
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A server's stop ends an SSE stream of a running generation with its
// final event, done with error interrupted, as it ends a WebSocket's: the
// stream is not cut before it.
func TestShutdownSendsSSEReadersTheFinalEvent(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	pr, pw := io.Pipe()
	addr, logDone := watchLog(t, pr)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-logDone })
	errc := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		errc <- run(ctx, []string{"--addr", "127.0.0.1:0", "--log-format", "json", "--data", data, "--offline-tps", "20"}, noEnv, io.Discard, pw)
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
	req, _ := http.NewRequest("POST", base+"/sessions/"+s.ID+"/turns",
		strings.NewReader(`{"turns":[{"role":"user","content":"/words 10000"}],"generate":true}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var last string
	deltas := 0
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		last = line
		if strings.Contains(line, `"type":"delta"`) {
			if deltas++; deltas == 2 {
				cancel() // the server stops, as on SIGTERM
			}
		}
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	var done struct {
		Type  string
		Error *struct{ Code string }
	}
	json.Unmarshal([]byte(last), &done)
	if done.Type != "done" || done.Error == nil || done.Error.Code != "interrupted" {
		t.Fatalf("the stream ended with %.300s, want done with error interrupted", last)
	}
}

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
// stopping is a server run in process (run) with the offline model at tps
// tokens a second, and a session: stop ends it as SIGTERM would, and
// stopped waits for run to return.
type stopping struct {
	addr, base, session string
	stop                context.CancelFunc
	errc                chan error
}

func startStopping(t *testing.T, tps string) *stopping {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	pr, pw := io.Pipe()
	addr, logDone := watchLog(t, pr)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-logDone })
	st := &stopping{stop: cancel, errc: make(chan error, 1)}
	exited := make(chan struct{})
	go func() {
		st.errc <- run(ctx, []string{"--addr", "127.0.0.1:0", "--log-format", "json", "--data", data, "--offline-tps", tps}, noEnv, io.Discard, pw)
		pw.Close()
		close(exited)
	}()
	st.addr = waitHealthy(t, addr, exited)
	st.base = "http://" + st.addr + "/v1"
	resp, err := http.Post(st.base+"/sessions", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	var s struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	st.session = s.ID
	return st
}

// stopped waits for run to return after stop, and fails on its error.
func (st *stopping) stopped(t *testing.T) {
	t.Helper()
	select {
	case err := <-st.errc:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after the stop")
	}
}

func TestShutdownSendsSSEReadersTheFinalEvent(t *testing.T) {
	st := startStopping(t, "20")
	req, _ := http.NewRequest("POST", st.base+"/sessions/"+st.session+"/turns",
		strings.NewReader(`{"turns":[{"role":"user","content":"/words 10000"}],"generate":true}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
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
				st.stop() // the server stops, as on SIGTERM
			}
		}
	}
	st.stopped(t)
	var done struct {
		Type  string
		Error *struct{ Code string }
	}
	json.Unmarshal([]byte(last), &done)
	if done.Type != "done" || done.Error == nil || done.Error.Code != "interrupted" {
		t.Fatalf("the stream ended with %.300s, want done with error interrupted", last)
	}
}

// A server's stop ends a generation still queued behind the running one
// as interrupted, and the SSE stream of the POST that queued it with that
// final event (done at offset 1, no turn, error interrupted): it ended
// after the posted turn, with nothing to say what became of the reply.
func TestShutdownEndsAQueuedGenerationsSSEStream(t *testing.T) {
	st := startStopping(t, "20")
	post := func(text string, sse bool) *http.Response {
		req, _ := http.NewRequest("POST", st.base+"/sessions/"+st.session+"/turns",
			strings.NewReader(`{"turns":[{"role":"user","content":"`+text+`"}],"generate":true}`))
		req.Header.Set("Content-Type", "application/json")
		if sse {
			req.Header.Set("Accept", "text/event-stream")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	post("/words 10000", false).Body.Close() // runs
	resp := post("/say queued", true)        // waits behind it
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var events []string
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		events = append(events, line)
		if len(events) == 2 {
			st.stop() // the posted turn and its generation are in: the server stops, as on SIGTERM
		}
	}
	st.stopped(t)
	var done struct {
		Type         string
		FinishReason string `json:"finish_reason"`
		Offset       int64
		Turn         json.RawMessage
		Error        *struct{ Code string }
	}
	json.Unmarshal([]byte(events[len(events)-1]), &done)
	if len(events) != 3 || !strings.Contains(events[1], `"status":"queued"`) || done.Type != "done" || done.FinishReason != "interrupted" || done.Offset != 1 || string(done.Turn) != "null" || done.Error == nil || done.Error.Code != "interrupted" {
		t.Fatalf("the queued generation's stream: %q, want its turn, the generation queued, then done interrupted at offset 1", events)
	}
}

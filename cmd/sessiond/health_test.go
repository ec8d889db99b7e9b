package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sessiond/objects"
	"sessiond/objects/natsbus"
)

// /healthz says ok while the server serves, shutting_down while it stops,
// and disk_failed (503, with the cause) once the runtime refuses calls
// after a failed disk flush: a supervisor then restarts it.
func TestHealthzReportsTheRuntimesFault(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		ready  bool
		fault  error
		status int
		want   string
	}{
		{true, nil, 200, "ok"},
		{false, nil, 503, "shutting_down"},
		{true, fmt.Errorf("%w (input/output error)", objects.ErrDiskFailed), 503, "disk_failed"},
	} {
		h := newHandler(config{}, logger, nil, func() bool { return c.ready }, func() error { return c.fault }, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		var body struct{ Status, Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("healthz body %q: %v", rec.Body, err)
		}
		if rec.Code != c.status || body.Status != c.want {
			t.Errorf("ready=%v fault=%v: %d %q, want %d %q", c.ready, c.fault, rec.Code, body.Status, c.status, c.want)
		}
		if c.fault != nil && !strings.Contains(body.Error, "input/output error") {
			t.Errorf("disk_failed without its cause: %q", body.Error)
		}
	}
}

// /healthz stays 200 while the event bus is down (requests are served;
// events wait in the outboxes) and says so in its body, as events.health
// finds it: disconnected once the NATS server is gone.
func TestHealthzReportsTheEventBus(t *testing.T) {
	ctx := context.Background()
	emb, err := natsbus.StartEmbedded(ctx, natsbus.EmbeddedOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	conn, err := emb.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ev := &events{conn: conn}
	h := newHandler(config{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, func() bool { return true }, func() error { return nil }, ev.health)
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		return rec.Code, strings.TrimSpace(rec.Body.String())
	}
	if code, body := get(); code != 200 || body != `{"status":"ok"}` {
		t.Fatalf("with NATS up: %d %s", code, body)
	}
	emb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get()
		if code == 200 && body == `{"events":"disconnected","status":"ok"}` {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("with NATS gone: %d %s, want 200 and events disconnected", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A data folder deleted from under the running server (every request then
// fails) turns /healthz to 503 disk_failed, naming the node index, so that
// a supervisor restarts it rather than keep a server that answers 500.
func TestHealthzReportsADeletedDataFolder(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	pr, pw := io.Pipe()
	addr, logDone := watchLog(t, pr)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-logDone })
	exited := make(chan struct{})
	go func() {
		run(ctx, []string{"--addr", "127.0.0.1:0", "--data", data, "--log-format", "json"}, noEnv, io.Discard, pw)
		pw.Close()
		close(exited)
	}()
	a := waitHealthy(t, addr, exited)
	// Moved away whole: the server's own writes (spares, NATS) race a
	// removal file by file, and to the server the folder is gone either way.
	if err := os.Rename(data, data+".gone"); err != nil {
		t.Fatal(err)
	}
	// The runtime notices within its check interval (a second).
	var status int
	var body struct{ Status, Error string }
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get("http://" + a + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		body.Status, body.Error = "", ""
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		status = resp.StatusCode
		if status != http.StatusOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if status != http.StatusServiceUnavailable || body.Status != "disk_failed" || !strings.Contains(body.Error, "node index") {
		t.Fatalf("healthz after the data folder was deleted: %d %+v", status, body)
	}
	cancel()
	<-exited
}

package main

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// The profiler answers requests to loopback names only (a web page can
// reach it through a DNS name of its own pointing at 127.0.0.1), and never
// shows the command line, which holds secrets given as flags.
func TestDebugListenerAnswersLoopbackOnly(t *testing.T) {
	addr, stop, err := startDebug("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	get := func(path, host string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	_, port, _ := strings.Cut(addr, ":")
	for _, host := range []string{addr, "localhost:" + port, "[::1]:" + port} {
		if st, body := get("/debug/pprof/", host); st != 200 || !strings.Contains(body, "goroutine") {
			t.Errorf("index with Host %s: %d", host, st)
		}
	}
	for _, host := range []string{"attacker.example:" + port, "127.0.0.1.example:" + port} {
		if st, _ := get("/debug/pprof/goroutine?debug=1", host); st != 403 {
			t.Errorf("Host %s: %d, want 403", host, st)
		}
	}
	if st, body := get("/debug/pprof/cmdline", addr); st != 404 || strings.Contains(body, "test") {
		t.Errorf("cmdline: %d %q, want 404", st, body)
	}
}

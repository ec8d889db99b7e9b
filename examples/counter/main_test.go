package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"sessiond/objects"
)

type testLogWriter struct{ tb testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) { w.tb.Log(string(p)); return len(p), nil }

// start opens a runtime on dir and serves the app from an httptest server.
// stop closes both; it is also run at cleanup.
func start(t *testing.T, dir string, limit int64, window time.Duration) (srv *httptest.Server, a *app, stop func()) {
	t.Helper()
	rt := objects.NewRuntime(dir)
	rt.IdleTimeout = 20 * time.Millisecond // hibernate quickly: alarms must wake the object
	rt.Logger = slog.New(slog.NewTextHandler(testLogWriter{t}, nil))
	a, err := newApp(rt, limit, window)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv = httptest.NewServer(a.routes())
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			srv.Close()
			if err := rt.Close(); err != nil {
				t.Errorf("close runtime: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return srv, a, stop
}

// do sends a request and decodes the JSON answer into a map.
func do(t *testing.T, method, url string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("%s %s: decode: %v", method, url, err)
	}
	return resp, body
}

func checkFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, timeout)
		}
	}
}

func TestCountingSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	srv, a, stop := start(t, dir, 5, time.Minute)
	for want := 1.0; want <= 3; want++ {
		resp, body := do(t, "POST", srv.URL+"/counters/visits/incr")
		if resp.StatusCode != http.StatusOK || body["value"] != want {
			t.Fatalf("incr: %s %v, want value %v", resp.Status, body, want)
		}
	}
	if _, body := do(t, "GET", srv.URL+"/counters/never"); body["value"] != 0.0 {
		t.Fatalf("GET a counter never incremented: %v, want 0", body)
	}
	if ok, err := a.counters.Exists(context.Background(), "never"); err != nil || ok {
		t.Fatalf("GET created the counter (exists=%v, err=%v)", ok, err)
	}
	stop()

	srv, _, _ = start(t, dir, 5, time.Minute)
	if _, body := do(t, "GET", srv.URL+"/counters/visits"); body["value"] != 3.0 {
		t.Fatalf("after restart GET: %v, want 3", body)
	}
	if _, body := do(t, "POST", srv.URL+"/counters/visits/incr"); body["value"] != 4.0 {
		t.Fatalf("after restart incr: %v, want 4", body)
	}
}

func TestLimiterRefusesThenAlarmResets(t *testing.T) {
	ctx := context.Background()
	const window = 300 * time.Millisecond
	srv, a, _ := start(t, t.TempDir(), 2, window)
	url := srv.URL + "/limits/client-1"
	for want := 1.0; want >= 0; want-- {
		resp, body := do(t, "POST", url)
		if resp.StatusCode != http.StatusOK || body["remaining"] != want {
			t.Fatalf("hit: %s %v, want 200 with remaining %v", resp.Status, body, want)
		}
	}
	resp, body := do(t, "POST", url)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("over the limit: %s Retry-After=%q, want 429 with Retry-After 1", resp.Status, resp.Header.Get("Retry-After"))
	}
	if e, _ := body["error"].(map[string]any); e["code"] != "rate_limited" {
		t.Fatalf("over the limit: body %v, want error code rate_limited", body)
	}
	// Another key has its own window.
	if resp, _ := do(t, "POST", srv.URL+"/limits/client-2"); resp.StatusCode != http.StatusOK {
		t.Fatalf("other key: %s, want 200", resp.Status)
	}

	// Nobody calls client-1 now: its alarm alone must fire (waking it if it
	// hibernated), reset the count and clear itself.
	checkFor(t, 10*time.Second, "alarm delivery", func() bool {
		oi, err := a.limits.Info(ctx, "client-1")
		return err == nil && oi.Alarm.IsZero()
	})
	stub, err := a.limits.Get("client-1")
	if err != nil {
		t.Fatal(err)
	}
	n, err := objects.Do(ctx, stub, func(ctx context.Context, _ limiter, tx *objects.Tx) (n int64, err error) {
		err = tx.QueryRow(ctx, `SELECT n FROM state WHERE id = 1`).Scan(&n)
		return n, err
	})
	if err != nil || n != 0 {
		t.Fatalf("stored count after the alarm: %d (err %v), want 0", n, err)
	}
	if resp, body := do(t, "POST", url); resp.StatusCode != http.StatusOK || body["remaining"] != 1.0 {
		t.Fatalf("after reset: %s %v, want 200 with remaining 1", resp.Status, body)
	}
}

func TestBadNameIsRefused(t *testing.T) {
	srv, _, _ := start(t, t.TempDir(), 5, time.Minute)
	resp, body := do(t, "POST", srv.URL+"/counters/%00/incr")
	if e, _ := body["error"].(map[string]any); resp.StatusCode != http.StatusBadRequest || e["code"] != "invalid_request" {
		t.Fatalf("NUL in a name: %s %v, want 400 invalid_request", resp.Status, body)
	}
}

// A limit that could never be met or a window that never ends is refused
// at start, rather than a limiter that refuses everything or nothing.
func TestNonsenseLimitsAreRefused(t *testing.T) {
	for _, c := range []struct {
		limit  int64
		window time.Duration
	}{{0, time.Second}, {-3, time.Second}, {5, 0}, {5, -time.Second}} {
		if _, err := newApp(objects.NewRuntime(t.TempDir()), c.limit, c.window); err == nil {
			t.Errorf("limit %d per %v: started, want an error", c.limit, c.window)
		}
	}
}

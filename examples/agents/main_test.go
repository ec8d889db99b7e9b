package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"sessiond/objects/natsbus"
	"sessiond/session"
	"sessiond/web/webtest"
)

// startSessiond runs a whole sessiond (runtime, embedded NATS listening on
// loopback, API) in the test, with opts for the API server (its Bus is set
// here). It returns the API server and the NATS URL for the example.
func startSessiond(t *testing.T, ctx context.Context, opts *webtest.Options) (*webtest.Server, string) {
	t.Helper()
	e, err := natsbus.StartEmbedded(ctx, natsbus.EmbeddedOptions{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	nc, err := e.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	bus, err := natsbus.New(nc, &natsbus.BusOptions{Subjects: []string{"sessiond.>"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	if opts == nil {
		opts = &webtest.Options{}
	}
	opts.Bus = &natsbus.Objects{Bus: bus, Durable: "node-test"}
	return webtest.New(t, opts), e.ClientURL()
}

// TestCoordinatorResumesOnEvents runs the example against a sessiond in the
// test.
func TestCoordinatorResumesOnEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, natsURL := startSessiond(t, ctx, nil)

	c := &client{base: srv.URL, http: http.DefaultClient}
	out, err := coordinate(ctx, c, natsURL, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	requireResults(t, out, "a", "b", "c")
	if last := out[len(out)-1]; !strings.HasPrefix(last, "assistant: ") || !strings.Contains(last, "offline model") {
		t.Fatalf("the coordinator did not summarise: %q", last)
	}
}

// The transcript holds every turn, however many pages they take.
func TestTranscriptReadsEveryPage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, _ := startSessiond(t, ctx, nil)
	c := &client{base: srv.URL, http: http.DefaultClient}
	var s struct{ ID string }
	if err := c.do(ctx, "POST", "/v1/sessions", map[string]any{}, &s); err != nil {
		t.Fatal(err)
	}
	const n = 230
	for i := 0; i < n; i += 100 {
		var turns []any
		for j := i; j < min(i+100, n); j++ {
			turns = append(turns, map[string]any{"role": "user", "content": fmt.Sprint("t", j)})
		}
		if err := c.do(ctx, "POST", "/v1/sessions/"+s.ID+"/turns", map[string]any{"turns": turns}, nil); err != nil {
			t.Fatal(err)
		}
	}
	out, err := c.transcript(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != n || out[0] != "user: t0" || out[n-1] != fmt.Sprint("user: t", n-1) {
		t.Fatalf("transcript of %d lines (%q … %q), want %d", len(out), out[0], out[len(out)-1], n)
	}
}

// failingModel is the offline model, except that it fails every generation
// whose last message contains fail.
type failingModel struct {
	session.Model
	fail string
}

func (m failingModel) Stream(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
	if n := len(req.Messages); n > 0 && strings.Contains(req.Messages[n-1].Text(), m.fail) {
		return &session.ModelResult{FinishReason: "error"}, &session.ModelError{Code: "upstream_error", Message: "the model is down", Status: 500}
	}
	return m.Model.Stream(ctx, req, emit)
}

// TestCoordinatorReportsFailedWorker: a worker whose generation fails
// (generation.failed, not generation.done) ends the wait for it at once; the
// coordinator still summarises the other results, and the error names the
// worker with the event's error code and message.
func TestCoordinatorReportsFailedWorker(t *testing.T) {
	// Far below the example's own timeout: a run that waits for the failed
	// worker's generation.done would hang until it.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, natsURL := startSessiond(t, ctx, &webtest.Options{Models: func(r *session.Registry) {
		if err := r.Register("failing", failingModel{session.NewOfflineModel(0), "done: b"}, session.ModelInfo{}); err != nil {
			t.Fatal(err)
		}
		if err := r.SetDefault("failing"); err != nil {
			t.Fatal(err)
		}
	}})

	c := &client{base: srv.URL, http: http.DefaultClient}
	out, err := coordinate(ctx, c, natsURL, []string{"a", "b", "c"})
	if err == nil {
		t.Fatalf("no error for the failed worker; transcript:\n%s", strings.Join(out, "\n"))
	}
	if ctx.Err() != nil {
		t.Fatalf("the run waited until its deadline: %v", err)
	}
	for _, want := range []string{`worker 2`, `task "b"`, "failed", "upstream_error", "the model is down"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "worker 1") || strings.Contains(err.Error(), "worker 3") || strings.Contains(err.Error(), "coordinator") {
		t.Errorf("error names more than worker 2: %v", err)
	}
	text := strings.Join(out, "\n")
	for _, want := range []string{`Result of "a" (done): done: a`, `No result for "b": its worker's generation failed (upstream_error: the model is down).`, `Result of "c" (done): done: c`} {
		if !strings.Contains(text, want) {
			t.Errorf("transcript lacks %q:\n%s", want, text)
		}
	}
	if last := out[len(out)-1]; !strings.HasPrefix(last, "assistant: ") || !strings.Contains(last, "offline model") {
		t.Errorf("the coordinator did not summarise: %q", last)
	}
}

// TestCoordinatorReadsEventsMissedWhileDisconnected: the example reaches
// NATS through a proxy that drops its connection just before the first task
// is posted and lets it back only once every worker's generation.done has
// been published. The example must still read them (a core NATS
// subscription never would) and finish.
func TestCoordinatorReadsEventsMissedWhileDisconnected(t *testing.T) {
	// Far below the example's own timeout; reconnecting takes about 2s.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, natsURL := startSessiond(t, ctx, nil)
	p := startProxy(t, strings.TrimPrefix(natsURL, "nats://"))

	// The test's own connection, not through the proxy, sees the events.
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ended := make(chan *nats.Msg, 16)
	if _, err := nc.ChanSubscribe("sessiond.session.*.generation.done", ended); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Only the workers generate until the example reads their events.
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() {
		for range 3 {
			select {
			case <-ended:
			case <-ctx.Done():
				return
			}
		}
		p.setDown(false)
	})

	var cutOnce sync.Once
	c := &client{base: srv.URL, http: &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.GetBody != nil {
			body, err := r.GetBody()
			if err != nil {
				return nil, err
			}
			b, _ := io.ReadAll(body)
			if strings.Contains(string(b), "/say done: ") {
				cutOnce.Do(func() { p.setDown(true) })
			}
		}
		return http.DefaultTransport.RoundTrip(r)
	})}}
	out, err := coordinate(ctx, c, "nats://"+p.ln.Addr().String(), []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	requireResults(t, out, "a", "b", "c")
	if n := p.accepted(); n < 2 {
		t.Fatalf("the proxy relayed %d connections: the example did not reconnect", n)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// proxy relays TCP connections to target. While down it has dropped the
// connections it carried and closes new ones at once.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and the relays

	mu      sync.Mutex
	down    bool
	conns   []net.Conn
	relayed int // connections relayed
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.setDown(true)
		p.wg.Wait()
	})
	return p
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, s)
		p.relayed++
		p.wg.Go(func() { relay(s, c) })
		p.wg.Go(func() { relay(c, s) })
		p.mu.Unlock()
	}
}

func relay(dst, src net.Conn) {
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

func (p *proxy) accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.relayed
}

// requireResults fails the test unless the coordinator's transcript out
// holds the result of each task.
func requireResults(t *testing.T, out []string, tasks ...string) {
	t.Helper()
	text := strings.Join(out, "\n")
	for _, task := range tasks {
		if want := fmt.Sprintf("Result of %q (done): done: %s", task, task); !strings.Contains(text, want) {
			t.Fatalf("transcript lacks %q:\n%s", want, text)
		}
	}
}

// While sessiond restarts, the example's requests wait for it: 503s, and
// refused connections once it has answered before, are tried again, a
// POST with one Idempotency-Key over its tries (none is applied twice); a
// sessiond never reached (a wrong --url) fails without waiting.
func TestClientWaitsForARestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		if len(keys) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable) // stopping, or not open yet
			return
		}
		w.Write([]byte(`{"id":"s1"}`))
	}))
	defer srv.Close()
	c := &client{base: srv.URL, http: http.DefaultClient}
	if id, err := c.createSession(ctx, "t"); err != nil || id != "s1" {
		t.Fatalf("create through two 503s: %q %v", id, err)
	}
	if len(keys) != 3 || keys[0] == "" || keys[1] != keys[0] || keys[2] != keys[0] {
		t.Fatalf("Idempotency-Keys of the tries: %q, want one key three times", keys)
	}

	// Connections are refused for a while, as during a restart: the
	// request waits for them to be taken again.
	back := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"id":"s2"}`)) }))
	defer back.Close()
	var dials atomic.Int32
	c.base = back.URL
	c.http = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) <= 3 {
			return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}}
	if id, err := c.createSession(ctx, "t"); err != nil || id != "s2" || dials.Load() != 4 {
		t.Fatalf("create across a restart: %q %v after %d dials, want s2 after 4", id, err, dials.Load())
	}

	var tries atomic.Int32
	never := &client{base: back.URL, http: &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		tries.Add(1)
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}}}}
	if _, err := never.createSession(ctx, "t"); err == nil || tries.Load() != 1 {
		t.Fatalf("a sessiond never reached: %v after %d tries, want an error after one", err, tries.Load())
	}
}

func TestSplitTasks(t *testing.T) {
	if got, err := splitTasks(" collect the logs ;summarise"); err != nil || !slices.Equal(got, []string{"collect the logs", "summarise"}) {
		t.Errorf("splitTasks = %q, %v", got, err)
	}
	for _, bad := range []string{"", "only one;;", "a; ;b", ";a"} {
		if got, err := splitTasks(bad); err == nil || !strings.Contains(err.Error(), "is empty") {
			t.Errorf("splitTasks(%q) = %q, %v; want an empty task refused", bad, got, err)
		}
	}
}

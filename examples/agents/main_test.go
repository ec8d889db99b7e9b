package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

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
	text := strings.Join(out, "\n")
	for _, want := range []string{`Result of "a" (done): done: a`, `Result of "b" (done): done: b`, `Result of "c" (done): done: c`} {
		if !strings.Contains(text, want) {
			t.Fatalf("transcript lacks %q:\n%s", want, text)
		}
	}
	if last := out[len(out)-1]; !strings.HasPrefix(last, "assistant: ") || !strings.Contains(last, "offline model") {
		t.Fatalf("the coordinator did not summarise: %q", last)
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

package web_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"sessiond/session"
	"sessiond/web"
	"sessiond/web/webtest"
)

// stallingWriter passes writes through until stalled; then every write
// and flush fails, as on a client that stopped reading once the write
// deadline passed, while the connection stays up (its request's context
// does not end).
type stallingWriter struct {
	http.ResponseWriter
	stalled *atomic.Bool
}

var errStalled = errors.New("the client stopped reading")

func (w *stallingWriter) Write(b []byte) (int, error) {
	if w.stalled.Load() {
		return 0, errStalled
	}
	return w.ResponseWriter.Write(b)
}

func (w *stallingWriter) FlushError() error {
	if w.stalled.Load() {
		return errStalled
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *stallingWriter) Flush() { w.FlushError() }

func (w *stallingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// The event stream of a queued generation, whose client stops reading,
// ends at the first heartbeat that cannot be written: its handler returns
// (releasing its viewer and its place among the owner's streams) without
// waiting for the generation to start.
func TestSSEStreamEndsWhenHeartbeatFails(t *testing.T) {
	const alice = "alice-key-0123456789"
	cfg := web.Config{SSEHeartbeat: 20 * time.Millisecond, Keys: map[string]web.Principal{alice: {Owner: "alice"}}}
	ws := webtest.New(t, &webtest.Options{OfflineTPS: 1, Config: cfg})
	var stalled atomic.Bool
	handlerDone := make(chan struct{}, 8)
	api := web.NewHandler(ws.Service, cfg)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.ServeHTTP(&stallingWriter{ResponseWriter: w, stalled: &stalled}, r)
		handlerDone <- struct{}{}
	}))
	defer srv.Close()
	s := &server{Server: srv, rt: ws.Runtime, svc: ws.Service, key: alice}
	sess := s.createSession(t, nil)
	var running, queued session.PostResult
	for _, res := range []*session.PostResult{&running, &queued} {
		if st, raw := s.do(t, "POST", "/v1/sessions/"+sess.ID+"/turns", map[string]any{
			"turns": []any{map[string]any{"role": "user", "content": "/words 2000"}}, "generate": true}, res); st != 201 {
			t.Fatalf("post: %d %s", st, raw)
		}
	}
	drain := func() {
		for {
			select {
			case <-handlerDone:
			default:
				return
			}
		}
	}
	drain() // the posts' handlers
	if running.Generation == nil || queued.Generation == nil || queued.Generation.Status != session.GenQueued {
		t.Fatalf("want a running and a queued generation: %+v, %+v", running.Generation, queued.Generation)
	}
	resp := openSSE(t, s, "GET", "/v1/sessions/"+sess.ID+"/generations/"+queued.Generation.ID+"/stream", "")
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("event stream: %d", resp.StatusCode)
	}
	drain()
	stalled.Store(true)
	select {
	case <-handlerDone:
	case <-time.After(30 * time.Second): // the running generation takes half an hour
		t.Fatal("the event stream's handler still waits for its generation after a heartbeat failed")
	}
}

package web_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"sessiond/objects"
	"sessiond/session"
	"sessiond/web"
	"sessiond/web/webtest"
)

type server struct {
	*httptest.Server
	rt  *objects.Runtime
	svc *session.Service
	key string // sent as Bearer when set
}

// newServer serves the whole API over a real HTTP server with a runtime in
// a temp dir and the offline model at tps words/s.
func newServer(tb testing.TB, tps float64, cfg web.Config, configure func(*objects.Runtime)) *server {
	tb.Helper()
	ws := webtest.New(tb, &webtest.Options{OfflineTPS: tps, Config: cfg, Runtime: configure})
	return &server{Server: ws.Server, rt: ws.Runtime, svc: ws.Service}
}

func (s *server) as(key string) *server { c := *s; c.key = key; return &c }

// do sends a request and decodes a JSON answer into out (if non-nil). It
// returns the status and the raw body.
func (s *server) do(tb testing.TB, method, path string, body any, out any, hdr ...string) (int, []byte) {
	tb.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, s.URL+path, r)
	req.Header.Set("Content-Type", "application/json")
	if s.key != "" {
		req.Header.Set("Authorization", "Bearer "+s.key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			tb.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, raw
}

// apiErr is the error answer's shape.
type apiErr struct {
	Error struct{ Code, Message string } `json:"error"`
}

func (s *server) expectError(tb testing.TB, method, path string, body any, status int, code string, hdr ...string) {
	tb.Helper()
	var e apiErr
	got, raw := s.do(tb, method, path, body, &e, hdr...)
	if got != status || e.Error.Code != code || e.Error.Message == "" {
		tb.Fatalf("%s %s: %d %s, want %d %s", method, path, got, raw, status, code)
	}
}

func (s *server) createSession(tb testing.TB, body any) session.Session {
	tb.Helper()
	var sess session.Session
	if st, raw := s.do(tb, "POST", "/v1/sessions", body, &sess); st != 201 {
		tb.Fatalf("create: %d %s", st, raw)
	}
	return sess
}

func (s *server) waitGeneration(tb testing.TB, id, gid string) session.Generation {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var g session.Generation
		s.do(tb, "GET", "/v1/sessions/"+id+"/generations/"+gid, nil, &g)
		if g.Finished() {
			return g
		}
		if time.Now().After(deadline) {
			tb.Fatalf("generation %s still %s", gid, g.Status)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func checkFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

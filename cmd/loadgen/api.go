package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// call sends a JSON request and decodes a JSON answer into out (when not
// nil). A status other than want is an error.
func (t *target) call(ctx context.Context, method, path string, body any, want int, out any) error {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return err
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.base+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, truncate(raw, 300))
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// createSession creates a session and returns its id.
func (t *target) createSession(ctx context.Context) (string, error) {
	var s struct{ ID string }
	err := t.call(ctx, "POST", "/v1/sessions", map[string]any{}, http.StatusCreated, &s)
	return s.ID, err
}

// createSessions creates n sessions, conc at a time.
func (t *target) createSessions(ctx context.Context, n, conc int) ([]string, error) {
	ids := make([]string, n)
	err := parallel(ctx, n, conc, func(ctx context.Context, i int) error {
		var err error
		ids[i], err = t.createSession(ctx)
		return err
	})
	return ids, err
}

// turnsBody is a POST /turns body of n user turns with the given text.
func turnsBody(n int, text string, generate bool) []byte {
	turns := make([]map[string]string, n)
	for i := range turns {
		turns[i] = map[string]string{"role": "user", "content": text}
	}
	b, _ := json.Marshal(map[string]any{"turns": turns, "generate": generate})
	return b
}

// wsURL is the WebSocket address of a session for a ticket.
func (t *target) wsURL(id, ticket string) string {
	return "ws" + strings.TrimPrefix(t.base, "http") + "/v1/sessions/" + id + "/ws?ticket=" + ticket
}

// helloRetry is how long dial waits for ready before it says hello again.
const helloRetry = 3 * time.Second

// helloRetries counts the hellos dial had to repeat because no ready came
// (see the report: the server can drop a socket's first message).
var helloRetries atomic.Int64

// dial gets a ticket, opens the session's WebSocket and says hello; it
// returns once the server answered ready. Without ready after helloRetry,
// it says hello again (counted in helloRetries).
func (t *target) dial(ctx context.Context, id string, readLimit int64) (*websocket.Conn, error) {
	var tk struct{ Ticket string }
	if err := t.call(ctx, "POST", "/v1/tickets", map[string]any{"session_id": id}, http.StatusCreated, &tk); err != nil {
		return nil, err
	}
	c, _, err := websocket.Dial(ctx, t.wsURL(id, tk.Ticket), &websocket.DialOptions{HTTPClient: t.http})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", id, err)
	}
	c.SetReadLimit(readLimit)
	hello := func() error { return writeJSON(ctx, c, map[string]any{"type": "hello"}) }
	if err := hello(); err != nil {
		c.CloseNow()
		return nil, err
	}
	retry := time.AfterFunc(helloRetry, func() {
		helloRetries.Add(1)
		hello()
	})
	defer retry.Stop()
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			c.CloseNow()
			return nil, fmt.Errorf("wait for ready on %s: %w", id, err)
		}
		var m wsMsg
		if json.Unmarshal(b, &m) == nil && m.Type == "ready" {
			return c, nil
		}
	}
}

// dialManyLean is dialMany with lean viewers (leanws_linux.go).
func dialManyLean(ctx context.Context, t *target, ids []string, n, conc int) ([]*leanViewer, error) {
	addr, err := leanAddr(t.base)
	if err != nil {
		return nil, err
	}
	hello := [][]byte{[]byte(`{"type":"hello"}`)}
	vs := make([]*leanViewer, n)
	err = parallel(ctx, n, conc, func(ctx context.Context, i int) error {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		id := ids[i%len(ids)]
		var tk struct{ Ticket string }
		if err := t.call(dctx, "POST", "/v1/tickets", map[string]any{"session_id": id}, http.StatusCreated, &tk); err != nil {
			return err
		}
		v, err := leanWSDial(dctx, addr, "/v1/sessions/"+id+"/ws?ticket="+url.QueryEscape(tk.Ticket), hello, isReady)
		vs[i] = v
		return err
	})
	return vs, err
}

// isReady reports whether msg is the server's ready message.
func isReady(msg []byte) bool {
	var m wsMsg
	return json.Unmarshal(msg, &m) == nil && m.Type == "ready"
}

func writeJSON(ctx context.Context, c *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Write(ctx, websocket.MessageText, b)
}

// wsMsg is the part of a server → client message loadgen reads.
type wsMsg struct {
	Type       string          `json:"type"`
	Generation string          `json:"generation"`
	Offset     int64           `json:"offset"`
	Text       string          `json:"text"`
	Code       string          `json:"code"`
	Message    string          `json:"message"`
	Turn       json.RawMessage `json:"turn"`
}

// parallel runs fn(ctx, i) for i in [0, n) on conc goroutines and returns
// the first error (which stops the others from taking new work).
func parallel(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx) // nil unless fn or the parent ended it
}

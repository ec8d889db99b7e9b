// Command agents shows sessions handing work to each other through
// sessiond's public API alone: a coordinator session posts tasks to worker
// sessions over REST, and resumes — appends each result and, once all are
// in, generates its summary — when the events that end the workers'
// generations (generation.done or generation.failed) arrive over NATS. It
// reads those events from sessiond's JetStream stream, so that none is lost
// while its connection is down (sessiond restarting, say): when the
// connection comes back, it reads on from the last event it had.
//
// A worker whose generation ends without a result (generation.failed, or a
// generation.done whose status is cancelled or interrupted) does not stop
// the others: the coordinator is told that the task has no result, says so
// in its summary, and the program prints the transcript, then names each
// such worker with the event's error code and message on stderr and exits
// with status 1.
//
// Run sessiond with its embedded NATS reachable, then this:
//
//	go run ./cmd/sessiond --nats-listen 127.0.0.1:4222
//	go run ./examples/agents --url http://127.0.0.1:8080 --nats nats://127.0.0.1:4222
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "sessiond base URL")
	natsURL := flag.String("nats", "nats://127.0.0.1:4222", "NATS URL of sessiond's event stream (sessiond --nats-listen)")
	key := flag.String("key", "", "API key, if sessiond has keys (default: the variable SESSIOND_KEY)")
	tasks := flag.String("tasks", "collect the logs;summarise the errors;propose a fix", "tasks for the workers, separated by ;")
	flag.Parse()
	if *key == "" {
		// Read after the flags, not as the flag's default: -h and a
		// mistyped flag print the defaults, and would show the key.
		*key = os.Getenv("SESSIOND_KEY")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	list, err := splitTasks(*tasks)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agents:", err)
		os.Exit(2)
	}
	c := &client{base: strings.TrimRight(*url, "/"), key: *key, http: http.DefaultClient}
	out, err := coordinate(ctx, c, *natsURL, list)
	for _, line := range out {
		fmt.Println(line)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agents:", err)
		os.Exit(1)
	}
}

// splitTasks splits the -tasks flag on ";", each task trimmed: an empty
// one (";;", a trailing ";") is a mistake, not a task for a worker.
func splitTasks(s string) ([]string, error) {
	var tasks []string
	for i, t := range strings.Split(s, ";") {
		t = strings.TrimSpace(t)
		if t == "" {
			return nil, fmt.Errorf("-tasks: task %d is empty (tasks are separated by ;)", i+1)
		}
		tasks = append(tasks, t)
	}
	return tasks, nil
}

// coordinate runs the whole exchange and returns the coordinator's
// transcript, one line per turn. When some workers produced no result, it
// returns the transcript together with an error naming each of them.
func coordinate(ctx context.Context, c *client, natsURL string, tasks []string) ([]string, error) {
	// Reconnect for as long as ctx lasts, however long sessiond is down.
	nc, err := nats.Connect(natsURL, nats.Name("agents-example"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("JetStream: %w", err)
	}

	coord, err := c.createSession(ctx, "coordinator")
	if err != nil {
		return nil, err
	}
	if err := c.post(ctx, coord, "user", fmt.Sprintf("Plan: %d tasks for %d workers.", len(tasks), len(tasks)), false); err != nil {
		return nil, err
	}
	type worker struct{ id, name, task string }
	var all []worker
	for i, task := range tasks {
		w := worker{name: fmt.Sprintf("worker %d", i+1), task: task}
		if w.id, err = c.createSession(ctx, w.name); err != nil {
			return nil, err
		}
		all = append(all, w)
	}
	// Every generation ends with one generation.done or generation.failed
	// event. Read those of these sessions from SESSIOND_EVENTS, the stream
	// of all sessiond's events, from its start (the sessions are new, so
	// every one of their events is wanted). Whenever the connection comes
	// back, an ordered consumer resumes after the last event it delivered:
	// one published while the connection was down is still read.
	subjects := []string{"sessiond.session." + coord + ".generation.done", "sessiond.session." + coord + ".generation.failed"}
	for _, w := range all {
		subjects = append(subjects, "sessiond.session."+w.id+".generation.done", "sessiond.session."+w.id+".generation.failed")
	}
	cons, err := js.OrderedConsumer(ctx, "SESSIOND_EVENTS", jetstream.OrderedConsumerConfig{FilterSubjects: subjects})
	if err != nil {
		return nil, fmt.Errorf("consume the events: %w", err)
	}
	events, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("consume the events: %w", err)
	}
	defer events.Stop()
	// Stop also ends a wait for the connection to come back.
	defer context.AfterFunc(ctx, events.Stop)()

	workers := map[string]worker{} // session id → worker still to report
	for _, w := range all {
		workers[w.id] = w
		// The offline model answers "/say TEXT" with TEXT; a real model
		// would be given the task itself.
		if err := c.post(ctx, w.id, "user", "/say done: "+w.task, true); err != nil {
			return nil, err
		}
	}
	var failed []error // one per worker that ended without a result
	for len(workers) > 0 {
		e, err := next(ctx, events)
		if err != nil {
			return nil, fmt.Errorf("waiting for %d workers: %w", len(workers), err)
		}
		w, ok := workers[e.SessionID]
		if !ok {
			continue // the coordinator's, or an event read twice
		}
		delete(workers, e.SessionID)
		var msg string
		if e.Status == "done" {
			result, err := c.turnText(ctx, e.SessionID, e.TurnID)
			if err != nil {
				return nil, fmt.Errorf("%s's result: %w", w.name, err)
			}
			msg = fmt.Sprintf("Result of %q (%s): %s", w.task, e.Status, result)
		} else {
			failed = append(failed, fmt.Errorf("%s (session %s, task %q): %s", w.name, e.SessionID, w.task, e.problem()))
			msg = fmt.Sprintf("No result for %q: its worker's generation %s.", w.task, e.problem())
		}
		// The coordinator resumes: the result becomes its next turn, and
		// the last one asks it to summarise.
		if err := c.post(ctx, coord, "user", msg, len(workers) == 0); err != nil {
			return nil, err
		}
	}
	// Wait for the coordinator's own summary, again by event.
	for {
		e, err := next(ctx, events)
		if err != nil {
			return nil, fmt.Errorf("waiting for the coordinator's summary: %w", err)
		}
		if e.SessionID != coord {
			continue
		}
		if e.Status != "done" {
			failed = append(failed, fmt.Errorf("coordinator (session %s), its summary: %s", coord, e.problem()))
		}
		out, err := c.transcript(ctx, coord)
		if err != nil {
			return nil, err
		}
		return out, errors.Join(failed...)
	}
}

// event is the payload of sessiond.session.<id>.generation.done and
// generation.failed.
type event struct {
	SessionID    string `json:"session_id"`
	GenerationID string `json:"generation_id"`
	TurnID       int64  `json:"turn_id"`
	Status       string `json:"status"` // done, cancelled, interrupted or failed
	Error        *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// next waits for the next event of events until ctx ends.
func next(ctx context.Context, events jetstream.MessagesContext) (event, error) {
	m, err := events.Next(jetstream.NextContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			return event{}, ctx.Err() // rather than the iterator's Stop
		}
		return event{}, err
	}
	var e event
	if err := json.Unmarshal(m.Data(), &e); err != nil {
		return event{}, fmt.Errorf("event on %s: %w", m.Subject(), err)
	}
	return e, nil
}

// problem describes a generation that ended without a result: "failed
// (upstream_error: …)".
func (e event) problem() string {
	if e.Error == nil {
		return e.Status
	}
	return fmt.Sprintf("%s (%s: %s)", e.Status, e.Error.Code, e.Error.Message)
}

// client is a minimal client of sessiond's REST API.
type client struct {
	base, key string
	http      *http.Client
	reached   atomic.Bool // sessiond has answered once (see do)
}

// do sends one API request and decodes its answer into out. While
// sessiond answers 503, or cannot be reached once it has answered before
// (restarting, say: the events that wake the coordinator may come before
// its HTTP port is back), it tries again, backing off, for up to
// retryFor; a POST carries one Idempotency-Key over its tries, so that
// none is applied twice. A sessiond never reached (a wrong --url) fails
// at once.
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	key := ""
	if method == "POST" {
		key = rand.Text()
	}
	ctx, cancel := context.WithTimeout(ctx, retryFor)
	defer cancel()
	backoff := 100 * time.Millisecond
	for {
		raw, status, err := c.once(ctx, method, path, b, key)
		if err == nil {
			c.reached.Store(true)
		}
		again := status == http.StatusServiceUnavailable || err != nil && c.reached.Load()
		if !again || ctx.Err() != nil {
			switch {
			case err != nil:
				return err
			case status >= 300:
				return fmt.Errorf("%s %s: %d %s: %s", method, path, status, http.StatusText(status), raw)
			case out != nil:
				return json.Unmarshal(raw, out)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("%s %s: %d %s: %s", method, path, status, http.StatusText(status), raw)
			}
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// retryFor bounds how long do tries one request again.
const retryFor = 30 * time.Second

// once is one try of do: the answer's body and status, or the error of a
// request that got none.
func (c *client) once(ctx context.Context, method, path string, body []byte, key string) ([]byte, int, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return raw, resp.StatusCode, err
}

func (c *client) createSession(ctx context.Context, title string) (string, error) {
	var s struct{ ID string }
	err := c.do(ctx, "POST", "/v1/sessions", map[string]any{"title": title}, &s)
	return s.ID, err
}

func (c *client) post(ctx context.Context, id, role, text string, generate bool) error {
	return c.do(ctx, "POST", "/v1/sessions/"+id+"/turns",
		map[string]any{"turns": []any{map[string]any{"role": role, "content": text}}, "generate": generate}, nil)
}

type turn struct {
	ID      int64           `json:"id"`
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

func (t turn) text() string {
	var s string
	json.Unmarshal(t.Content, &s)
	return s
}

func (c *client) turnText(ctx context.Context, id string, turnID int64) (string, error) {
	var page struct{ Turns []turn }
	if err := c.do(ctx, "GET", fmt.Sprintf("/v1/sessions/%s/turns?after=%d&limit=1", id, turnID-1), nil, &page); err != nil {
		return "", err
	}
	if len(page.Turns) != 1 || page.Turns[0].ID != turnID {
		return "", errors.New("result turn not found")
	}
	return page.Turns[0].text(), nil
}

// transcript returns every turn of session id, a page of up to 100 at a
// time.
func (c *client) transcript(ctx context.Context, id string) ([]string, error) {
	var out []string
	var after int64
	for {
		var page struct {
			Turns   []turn
			HasMore bool `json:"has_more"`
		}
		if err := c.do(ctx, "GET", fmt.Sprintf("/v1/sessions/%s/turns?after=%d&limit=100", id, after), nil, &page); err != nil {
			return nil, err
		}
		for _, t := range page.Turns {
			out = append(out, t.Role+": "+t.text())
			after = t.ID
		}
		if !page.HasMore || len(page.Turns) == 0 {
			return out, nil
		}
	}
}

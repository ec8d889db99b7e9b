package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

func setupBig(fs *flag.FlagSet, c *common) runFunc {
	size := fs.Int("size", 32<<20, "bytes of the whole client message (the server accepts at most 32 MiB)")
	reps := fs.Int("reps", 5, "repetitions (also bounded by -n and -duration)")
	raw := fs.Bool("raw", false, "first make the same round trips to a plain coder/websocket echo server in its own process (the floor), for a side-by-side row")
	rest := fs.Bool("rest", false, "also POST a turn of the same content over REST (the answer, which carries the turn, read whole and checked), then GET the newest turn back: two rows of their own")
	return func(ctx context.Context, e *env) ([]row, error) {
		var rows []row
		if *raw {
			r, err := rawBig(ctx, e, *size, *reps)
			if err != nil {
				return nil, err
			}
			rows = append(rows, r)
		}
		t, err := e.server(ctx, serverOptions{})
		if err != nil {
			return nil, err
		}
		id, err := t.createSession(ctx)
		if err != nil {
			return nil, err
		}
		conn, err := t.dial(ctx, id, 64<<20)
		if err != nil {
			return nil, err
		}
		defer conn.CloseNow()
		msg, content := bigMessage(*size)
		lctx, cancel := context.WithTimeout(ctx, e.duration)
		defer cancel()
		var rtt, first samples
		for i := range min(*reps, e.n) {
			f, d, err := roundTrip(lctx, conn, msg, content, i)
			if err != nil {
				if lctx.Err() != nil && rtt.len() > 0 {
					break
				}
				return nil, err
			}
			first.add(f)
			rtt.add(d)
		}
		rows = append(rows, bigRow("", len(msg), &first, &rtt))
		if *rest {
			rs, err := restBig(lctx, t, id, content, min(*reps, e.n))
			if err != nil {
				return nil, err
			}
			rows = append(rows, rs...)
		}
		return rows, nil
	}
}

// restBig POSTs content as a user turn over REST reps times and times each
// call until its answer is read whole; the answer must carry the content.
// It then GETs the newest turn reps times, timed the same way.
func restBig(ctx context.Context, t *target, id string, content []byte, reps int) ([]row, error) {
	body := make([]byte, 0, len(content)+64)
	body = append(body, `{"turns":[{"role":"user","content":"`...)
	body = append(body, content...)
	body = append(body, `"}]}`...)
	path := t.base + "/v1/sessions/" + id + "/turns"
	var post, postFirst, get, getFirst samples
	for i := range reps {
		f, d, err := timedCall(ctx, t, "POST", path, body, fmt.Sprintf("big-rest-%06d", i), http.StatusCreated, content)
		if err != nil {
			return nil, fmt.Errorf("rest: POST: %w", err)
		}
		postFirst.add(f)
		post.add(d)
	}
	// Reading it back: the newest turn, as a client resuming the session
	// gets it.
	for range reps {
		f, d, err := timedCall(ctx, t, "GET", path+"?limit=1", nil, "", http.StatusOK, content)
		if err != nil {
			return nil, fmt.Errorf("rest: GET the newest turn: %w", err)
		}
		getFirst.add(f)
		get.add(d)
	}
	return []row{bigRow("REST POST ", len(body), &postFirst, &post), bigRow("REST GET newest turn ", len(content), &getFirst, &get)}, nil
}

// timedCall makes one call (body nil for none, key the Idempotency-Key if
// not empty) and returns the times until its answer's header arrived and
// until the answer was read whole. The answer must have status want and
// carry content.
func timedCall(ctx context.Context, t *target, method, url string, body []byte, key string, want int, content []byte) (first, total time.Duration, err error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return 0, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	start := time.Now()
	resp, err := t.http.Do(req)
	if err != nil {
		return 0, 0, err
	}
	first = time.Since(start)
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	total = time.Since(start)
	switch {
	case err != nil:
		return 0, 0, fmt.Errorf("read answer: %w", err)
	case resp.StatusCode != want:
		return 0, 0, fmt.Errorf("%d %s", resp.StatusCode, truncate(answer, 300))
	case !bytes.Contains(answer, content):
		return 0, 0, fmt.Errorf("the answer (%d bytes) does not carry the %d bytes of content", len(answer), len(content))
	}
	return first, total, nil
}

// bigRow reports size bytes moved: rtt until the answer was read whole,
// first until its first byte (for a send or a POST: the message received,
// stored and committed, and the answer begun; the "one way" column).
func bigRow(prefix string, size int, first, rtt *samples) row {
	mib := float64(size) / (1 << 20)
	r := row{Case: fmt.Sprintf("%ssize=%.0fMiB", prefix, mib)}
	r.add("one way MiB/s p50", mib/first.quantile(0.5).Seconds(), "")
	r.add("MiB/s p50", mib/rtt.quantile(0.5).Seconds(), "")
	r.add("MiB/s best", mib/rtt.quantile(0).Seconds(), "")
	r.add("time p50", ms(rtt.quantile(0.5)), "ms")
	r.add("time max", ms(rtt.quantile(1)), "ms")
	r.add("reps", float64(rtt.len()), "")
	return r
}

// rawBig makes the round trips of big to the raw server's echo: the same
// message up and the same bytes back, with nothing in between.
func rawBig(ctx context.Context, e *env, size, reps int) (row, error) {
	rt, err := startRawServer(ctx, e.serverCPUs())
	if err != nil {
		return row{}, err
	}
	defer rt.close()
	c, _, err := websocket.Dial(ctx, "ws://"+rt.addr+"/echo", nil)
	if err != nil {
		return row{}, fmt.Errorf("raw server: %w", err)
	}
	defer c.CloseNow()
	c.SetReadLimit(64 << 20)
	msg, _ := bigMessage(size)
	lctx, cancel := context.WithTimeout(ctx, e.duration)
	defer cancel()
	var rtt, first samples
	for i := range min(reps, e.n) {
		copy(msg, fmt.Sprintf(bigHead, i))
		start := time.Now()
		if err := c.Write(lctx, websocket.MessageText, msg); err != nil {
			return row{}, fmt.Errorf("raw echo: write: %w", err)
		}
		f, b, err := readTimed(lctx, c, start)
		if err != nil {
			return row{}, fmt.Errorf("raw echo: read: %w", err)
		}
		first.add(f)
		rtt.add(time.Since(start))
		if !bytes.Equal(b, msg) {
			return row{}, fmt.Errorf("raw echo: %d bytes came back, not the %d sent", len(b), len(msg))
		}
	}
	e.logf("big: raw floor: %d round trips of %d bytes", rtt.len(), size)
	return bigRow("raw coder/websocket echo ", size, &first, &rtt), nil
}

// Envelope of the big send; the content fills the rest of the message.
const (
	bigHead = `{"type":"send","idempotency_key":"big-%06d","turns":[{"role":"user","content":"`
	bigTail = `"}]}`
)

// bigMessage returns a send message of exactly size bytes (for repetition
// 0; others differ only in the key's digits) and its content.
func bigMessage(size int) ([]byte, []byte) {
	head := fmt.Sprintf(bigHead, 0)
	content := make([]byte, max(size-len(head)-len(bigTail), 1))
	for i := range content {
		content[i] = 'a' + byte(i%26)
	}
	msg := make([]byte, 0, size)
	msg = append(msg, head...)
	msg = append(msg, content...)
	msg = append(msg, bigTail...)
	return msg, content
}

// readTimed reads one message and returns it with the time from start
// until its first frame arrived.
func readTimed(ctx context.Context, c *websocket.Conn, start time.Time) (time.Duration, []byte, error) {
	_, r, err := c.Reader(ctx)
	if err != nil {
		return 0, nil, err
	}
	first := time.Since(start)
	b, err := io.ReadAll(r)
	return first, b, err
}

// roundTrip sends msg (with key number i) and waits for the turn it
// created to come back; it checks the content and returns the times until
// the turn message began to arrive and until it was read whole.
func roundTrip(ctx context.Context, c *websocket.Conn, msg, content []byte, i int) (first, total time.Duration, err error) {
	copy(msg, fmt.Sprintf(bigHead, i))
	start := time.Now()
	if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
		return 0, 0, fmt.Errorf("write: %w", err)
	}
	for {
		f, b, err := readTimed(ctx, c, start)
		if err != nil {
			return 0, 0, fmt.Errorf("read: %w", err)
		}
		d := time.Since(start)
		var m wsMsg
		if err := json.Unmarshal(b, &m); err != nil {
			return 0, 0, err
		}
		switch m.Type {
		case "turn":
			var turn struct{ Content string }
			if err := json.Unmarshal(m.Turn, &turn); err != nil {
				return 0, 0, err
			}
			if !bytes.Equal([]byte(turn.Content), content) {
				return 0, 0, fmt.Errorf("the turn came back with %d bytes, want the %d sent", len(turn.Content), len(content))
			}
			return f, d, nil
		case "error":
			return 0, 0, fmt.Errorf("server: %s: %s", m.Code, m.Message)
		}
	}
}

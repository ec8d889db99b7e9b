package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

func setupTokenLatency(fs *flag.FlagSet, c *common) runFunc {
	var uf upstreamFlags
	uf.register(fs, 250, 50)
	gens := fs.Int("gens", 20, "concurrent generations, each on its own session and SSE response")
	return func(ctx context.Context, e *env) ([]row, error) {
		up, err := uf.start()
		if err != nil {
			return nil, err
		}
		defer up.close()
		t, err := e.server(ctx, serverOptions{extra: up.serverArgs(), conns: *gens})
		if err != nil {
			return nil, err
		}
		ids, err := t.createSessions(ctx, *gens, 16)
		if err != nil {
			return nil, err
		}
		e.logf("token-latency: %d generations of %d tokens at %g tokens/s, for up to %s or %d tokens", *gens, uf.tokens, uf.rate, e.duration, e.n)
		lat, gensDone, err := streamTokens(ctx, t, ids, e.n, e.duration)
		if err != nil {
			return nil, err
		}
		if lat.len() == 0 {
			return nil, fmt.Errorf("no token arrived (%d completions served)", up.streams.Load())
		}
		r := row{Case: fmt.Sprintf("gens=%d rate=%g/s", *gens, uf.rate)}
		r.addLatency("", lat)
		r.add("tokens", float64(lat.len()), "")
		r.add("generations", float64(gensDone), "")
		return []row{r}, nil
	}
}

// streamTokens runs one generation after another on each session, each
// streamed back as the SSE answer of its POST, and returns the latency of
// every token from the upstream's write to its arrival here.
func streamTokens(ctx context.Context, t *target, ids []string, n int, d time.Duration) (*samples, int, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	all := &samples{}
	var tokens, gens atomic.Int64
	var firstErr error
	var wg sync.WaitGroup
	body := turnsBody(1, "stream me some tokens", true)
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine samples
			for ctx.Err() == nil && tokens.Load() < int64(n) {
				err := sseGeneration(ctx, t, id, body, func(sent int64, at time.Time) {
					mine.add(at.Sub(time.Unix(0, sent)))
					tokens.Add(1)
				})
				if err != nil && ctx.Err() == nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				if err == nil {
					gens.Add(1)
				}
			}
			mu.Lock()
			all.merge(&mine)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all, int(gens.Load()), firstErr
}

// sseGeneration posts a turn with generate and reads the SSE answer to its
// done event, calling onToken for every stamped token of every delta.
func sseGeneration(ctx context.Context, t *target, id string, body []byte, onToken func(sent int64, at time.Time)) error {
	req, err := http.NewRequestWithContext(ctx, "POST", t.base+"/v1/sessions/"+id+"/turns", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := t.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("post with generate: status %d", resp.StatusCode)
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("read stream: %w", err)
		}
		at := time.Now()
		data, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue
		}
		var m wsMsg
		if err := json.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("decode event %q: %w", data, err)
		}
		switch m.Type {
		case "delta":
			stamps(m.Text, func(sent int64) { onToken(sent, at) })
		case "done":
			return nil
		case "error":
			return fmt.Errorf("generation failed: %s: %s", m.Code, m.Message)
		}
	}
}

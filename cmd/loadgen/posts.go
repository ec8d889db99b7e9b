package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// postCase is one mode of post-turns: how many sessions the calls spread
// over and how many connections make them.
type postCase struct{ sessions, conns int }

func (c postCase) String() string { return fmt.Sprintf("sessions=%d conns=%d", c.sessions, c.conns) }

// parseCases reads "1x1,1x64,1000x64" (sessions x conns).
func parseCases(s string) ([]postCase, error) {
	var out []postCase
	for _, f := range strings.Split(s, ",") {
		a, b, ok := strings.Cut(strings.TrimSpace(f), "x")
		sn, err1 := strconv.Atoi(a)
		cn, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || sn <= 0 || cn <= 0 {
			return nil, fmt.Errorf("case %q: want SESSIONSxCONNS, e.g. 1000x64", f)
		}
		out = append(out, postCase{sn, cn})
	}
	return out, nil
}

func setupPostTurns(fs *flag.FlagSet, c *common) runFunc {
	cases := fs.String("cases", "1x1,1x64,1000x64", "comma-separated SESSIONSxCONNS modes: calls spread uniformly over SESSIONS sessions from CONNS keep-alive connections")
	warmup := fs.Duration("warmup", time.Second, "time at the start of each case whose calls are not counted")
	text := fs.String("text", "hello, this is a user turn of a load test", "content of each posted user turn")
	clients := fs.String("client", "lean", "comma-separated HTTP clients to run each case with: lean (one thread drives every connection through epoll; ~28 µs of CPU per call here) or std (Go's net/http client; ~50 µs). "+
		"Compare clients in separate runs: a later case shares its server with the sessions of the earlier ones, which hibernate meanwhile")
	raw := fs.Bool("raw", false, rawPostsLabel)
	return func(ctx context.Context, e *env) ([]row, error) {
		cs, err := parseCases(*cases)
		if err != nil {
			return nil, err
		}
		kinds, err := parseClients(*clients)
		if err != nil {
			return nil, err
		}
		maxConns := 0
		for _, pc := range cs {
			maxConns = max(maxConns, pc.conns)
		}
		t, err := e.server(ctx, serverOptions{conns: maxConns})
		if err != nil {
			return nil, err
		}
		body := turnsBody(1, *text, false)
		var rows []row
		for _, pc := range cs {
			for _, k := range kinds {
				if *raw {
					for _, store := range rawPostStores {
						r, err := rawPostCase(ctx, e, pc, k, store, body, *warmup)
						if err != nil {
							return nil, fmt.Errorf("raw floor (%s): %w", store, err)
						}
						rows = append(rows, r)
					}
				}
				r, err := postTurnsCase(ctx, e, t, pc, k, body, *warmup)
				if err != nil {
					return nil, err
				}
				rows = append(rows, r)
			}
		}
		return rows, nil
	}
}

// parseClients reads -client.
func parseClients(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		switch f = strings.TrimSpace(f); f {
		case "std", "lean":
			out = append(out, f)
		default:
			return nil, fmt.Errorf("-client %q: want std or lean", f)
		}
	}
	return out, nil
}

// postTurnsCase creates pc.sessions sessions and posts to them at random
// from pc.conns connections of the client kind (std or lean).
func postTurnsCase(ctx context.Context, e *env, t *target, pc postCase, kind string, body []byte, warmup time.Duration) (row, error) {
	start := time.Now()
	ids, err := t.createSessions(ctx, pc.sessions, 16)
	if err != nil {
		return row{}, err
	}
	e.logf("post-turns %s: %d sessions created in %s; posting for up to %s", pc, len(ids), time.Since(start).Round(time.Millisecond), e.duration)
	paths := make([]string, len(ids))
	for i, id := range ids {
		paths[i] = "/v1/sessions/" + id + "/turns"
	}
	spec := loopSpec{conns: pc.conns, n: e.n, duration: e.duration, warmup: warmup, pid: t.pid}
	// A fixed stride spreads calls evenly without a shared random source.
	pick := func(i int) string { return paths[(i*7919)%len(paths)] }
	var res *loopResult
	if kind == "lean" {
		var err error
		res, err = runLeanLoop(ctx, spec, t.base, http.StatusCreated, func(dst []byte, host string, i int) []byte {
			return appendRequest(dst, "POST", host, pick(i), body)
		})
		if err != nil {
			return row{}, err
		}
	} else {
		res = runLoop(ctx, spec, func(ctx context.Context, worker, i int) error {
			return postOnce(ctx, t.http, t.base+pick(i), body)
		})
	}
	if res.calls == 0 {
		return row{}, fmt.Errorf("no call succeeded (%d errors, last %v)", res.errors, res.lastErr)
	}
	if endedByCount(res.elapsed, spec.duration) {
		// Still a measurement, but one that a profile or a clock outside
		// loadgen, expecting -duration, would miss the end of.
		e.logf("post-turns %s: -n %d calls reached after %s of the %s of -duration: the case ended early (raise -n to run the whole duration)",
			pc, spec.n, res.elapsed.Round(time.Millisecond), spec.duration)
	}
	r := row{Case: pc.String() + " client=" + kind}
	r.addLatency("", &res.lat)
	r.add("calls/s", res.perSecond(), "")
	r.add("errors", float64(res.errors), "")
	res.addCPU(&r)
	return r, nil
}

// endedByCount reports whether a closed loop measured for clearly less
// than its duration, that is stopped at its call count (-n).
func endedByCount(elapsed, duration time.Duration) bool {
	return elapsed < duration*95/100
}

func postOnce(ctx context.Context, hc *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

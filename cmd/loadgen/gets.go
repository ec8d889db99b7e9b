package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// prefillPerPost is how many turns one prefill POST appends (the server's
// per-request limit is 100).
const prefillPerPost = 100

func setupGetTurns(fs *flag.FlagSet, c *common) runFunc {
	lengths := fs.String("lengths", "100,10000,100000", "comma-separated session lengths in turns, each prefilled with 100 turns per POST")
	conns := fs.String("conns", "1,16", "comma-separated connection counts to read with")
	limit := fs.Int("limit", 50, "turns per GET (?limit=)")
	warmup := fs.Duration("warmup", time.Second, "time at the start of each case whose calls are not counted")
	prefillTimeout := fs.Duration("prefill-timeout", 3*time.Minute, "most time to prefill one session")
	return func(ctx context.Context, e *env) ([]row, error) {
		ls, err := parseInts(*lengths)
		if err != nil {
			return nil, fmt.Errorf("-lengths: %w", err)
		}
		cs, err := parseInts(*conns)
		if err != nil {
			return nil, fmt.Errorf("-conns: %w", err)
		}
		t, err := e.server(ctx, serverOptions{conns: maxOf(cs)})
		if err != nil {
			return nil, err
		}
		var rows []row
		for _, n := range ls {
			id, err := prefill(ctx, e, t, n, *prefillTimeout)
			if err != nil {
				return nil, err
			}
			url := fmt.Sprintf("%s/v1/sessions/%s/turns?limit=%d", t.base, id, *limit)
			if err := checkPage(ctx, t, id, *limit, min(n, *limit)); err != nil {
				return nil, err
			}
			for _, cn := range cs {
				spec := loopSpec{conns: cn, n: e.n, duration: e.duration, warmup: *warmup, pid: t.pid}
				res := runLoop(ctx, spec, func(ctx context.Context, worker, i int) error { return getOnce(ctx, t.http, url) })
				if res.calls == 0 {
					return nil, fmt.Errorf("no GET succeeded (%d errors, last %v)", res.errors, res.lastErr)
				}
				r := row{Case: fmt.Sprintf("turns=%d conns=%d", n, cn)}
				r.addLatency("", &res.lat)
				r.add("calls/s", res.perSecond(), "")
				r.add("errors", float64(res.errors), "")
				res.addCPU(&r)
				rows = append(rows, r)
			}
		}
		return rows, nil
	}
}

// prefill creates a session with n user turns.
func prefill(ctx context.Context, e *env, t *target, n int, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id, err := t.createSession(ctx)
	if err != nil {
		return "", err
	}
	start := time.Now()
	text := "a prefilled user turn of about a hundred bytes, so that pages have a realistic size: lorem ipsum."
	full := turnsBody(prefillPerPost, text, false)
	for done := 0; done < n; done += prefillPerPost {
		body := full
		if k := n - done; k < prefillPerPost {
			body = turnsBody(k, text, false)
		}
		if err := t.call(ctx, "POST", "/v1/sessions/"+id+"/turns", body, http.StatusCreated, nil); err != nil {
			return "", fmt.Errorf("prefill %d turns (at %d): %w", n, done, err)
		}
	}
	e.logf("get-turns: prefilled %d turns in %s", n, time.Since(start).Round(time.Millisecond))
	return id, nil
}

// checkPage makes sure the measured GET answers the newest want turns.
func checkPage(ctx context.Context, t *target, id string, limit, want int) error {
	var page struct {
		Turns []struct{ ID int64 } `json:"turns"`
	}
	if err := t.call(ctx, "GET", fmt.Sprintf("/v1/sessions/%s/turns?limit=%d", id, limit), nil, http.StatusOK, &page); err != nil {
		return err
	}
	if len(page.Turns) != want {
		return fmt.Errorf("GET turns?limit=%d answered %d turns, want %d", limit, len(page.Turns), want)
	}
	return nil
}

func getOnce(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: want positive integers separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

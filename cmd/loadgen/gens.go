package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

func setupGens(fs *flag.FlagSet, c *common) runFunc {
	gens := fs.Int("gens", 1000, "concurrent generations, each on its own session with one WebSocket viewer")
	ramp := fs.Duration("ramp", 5*time.Second, "time after the sends before the measured window (-duration) starts")
	dialConc := fs.Int("dial-concurrency", 32, "viewers connecting at once")
	model := fs.String("model", "offline", "offline: the server's offline model at -offline-tps (default 50), latency estimated from its fixed cadence; "+
		"fake: the fake upstream at -rate, latency from the send stamp of every token")
	client := fs.String("client", "std", "viewer client: std (a coder/websocket reader goroutine per viewer; ~0.7 of a core here) or lean (one thread reads every viewer through epoll; ~0.4 of a core, but the server's CPU rose by ~0.07 cores in two alternating pairs, likely from waking a reader asleep in epoll_wait on every write)")
	var uf upstreamFlags
	uf.register(fs, 0, 50)
	return func(ctx context.Context, e *env) ([]row, error) {
		if *client != "lean" && *client != "std" {
			return nil, fmt.Errorf("-client %q: want lean or std", *client)
		}
		tps, err := strconv.ParseFloat(pick(e.offlineTPS, "50"), 64)
		if err != nil || tps <= 0 {
			return nil, fmt.Errorf("-offline-tps %q: want a positive number (the server's rate)", e.offlineTPS)
		}
		opts := serverOptions{offlineTPS: "50"}
		switch *model {
		case "offline":
		case "fake":
			tps = uf.rate
			if uf.tokens == 0 { // enough that no generation ends before the window does
				uf.tokens = int(tps * (*ramp + e.duration + 10*time.Second).Seconds())
			}
			up, err := uf.start()
			if err != nil {
				return nil, err
			}
			defer up.close()
			opts.extra = up.serverArgs()
		default:
			return nil, fmt.Errorf("-model %q: want offline or fake", *model)
		}
		t, err := e.server(ctx, opts)
		if err != nil {
			return nil, err
		}
		ids, err := t.createSessions(ctx, *gens, 16)
		if err != nil {
			return nil, err
		}
		vs, err := dialViewers(ctx, t, *client, ids, *gens, *dialConc)
		defer vs.close()
		if err != nil {
			return nil, err
		}
		// Enough words that no generation ends before the window does.
		words := int(tps * (*ramp + e.duration + 10*time.Second).Seconds())
		e.logf("gens: %d %s viewers ready; %d generations of %d words at %g words/s; window %s after %s", vs.len(), *client, *gens, words, tps, e.duration, *ramp)
		g := &genRun{model: *model, client: *client, tps: tps, period: time.Duration(float64(time.Second) / tps), arrivals: make([][]arrival, vs.len())}
		return g.measure(ctx, e, t, ids, vs, words, *ramp)
	}
}

// arrival is when delta number offset reached a viewer, and for the fake
// upstream when its token was sent.
type arrival struct {
	offset int64
	at     time.Time
	sent   int64 // unix nanoseconds; 0 for the offline model
}

// genRun is one gens measurement: the arrivals of every viewer.
type genRun struct {
	model    string        // offline or fake
	client   string        // std or lean
	tps      float64       // deltas per second of each generation
	period   time.Duration // the offline model's time between two deltas
	arrivals [][]arrival
	gids     []string
	mu       sync.Mutex
	failures int
}

func (g *genRun) measure(ctx context.Context, e *env, t *target, ids []string, vs *viewerSet, words int, ramp time.Duration) ([]row, error) {
	rctx, stop := context.WithTimeout(ctx, ramp+e.duration+5*time.Second)
	defer stop()
	n := vs.len()
	g.gids = make([]string, n)
	for i := range g.arrivals {
		g.arrivals[i] = make([]arrival, 0, words)
	}
	var wg sync.WaitGroup
	if vs.lean != nil {
		for i, v := range vs.lean {
			if err := v.send(g.sendMessage(i, words)); err != nil {
				return nil, fmt.Errorf("start generation %d: %w", i, err)
			}
		}
		wg.Go(func() {
			leanRead(rctx, vs.lean, g.handle, func(int, error) {
				if rctx.Err() == nil {
					g.fail()
				}
			})
		})
	} else {
		for i, c := range vs.std {
			wg.Go(func() { g.follow(rctx, i, c, words) })
		}
	}
	if err := sleepCtx(ctx, ramp); err != nil {
		return nil, err
	}
	meter, err := startCPU(t.pid)
	if err != nil {
		return nil, err
	}
	self, _ := startCPU(os.Getpid())
	w0 := time.Now()
	if err := sleepCtx(ctx, e.duration); err != nil {
		return nil, err
	}
	cores, err := meter.cores()
	if err != nil {
		return nil, err
	}
	w1 := time.Now()
	selfCores, _ := self.cores()
	rss, _ := rssKiB(t.pid)
	stop()
	wg.Wait()
	g.cancelAll(ctx, t, ids)
	lat, got := g.lateness(w0, w1)
	if g.model == "fake" {
		lat, got = g.stamped(w0, w1)
	}
	r := row{Case: fmt.Sprintf("gens=%d model=%s tps=%g client=%s", n, g.model, g.tps, g.client)}
	perSec := float64(got) / w1.Sub(w0).Seconds()
	if want := float64(n) * g.tps; perSec < 0.8*want {
		// Added latency is measured against the rate the generations were
		// meant to have: far below it, the figure is not one.
		why := "the server is overloaded"
		if g.model == "offline" {
			why += fmt.Sprintf(", or (with -url) its --offline-tps is not this -offline-tps (%g; sessiond's default is 30)", g.tps)
		}
		e.logf("gens: WARNING: %.0f deltas/s reached the viewers, %.0f were expected: %s; the added latency is then no measurement", perSec, want, why)
	}
	r.add("server cpu", cores, "cores")
	r.addLatency("added ", lat)
	r.add("deltas/s", perSec, "")
	r.add("want/s", float64(n)*g.tps, "")
	r.add("server cpu/delta", cores/perSec*1e6, "µs")
	r.add("server rss", float64(rss)/1024, "MiB")
	r.add("loadgen cpu", selfCores, "cores")
	r.add("failed", float64(g.failures), "")
	r.add("hello retries", float64(helloRetries.Load()), "")
	return []row{r}, nil
}

// sendMessage is viewer i's send: a user turn asking the offline model for
// words words (the fake upstream ignores it), with generate.
func (g *genRun) sendMessage(i, words int) []byte {
	b, _ := json.Marshal(map[string]any{"type": "send", "generate": true, "idempotency_key": fmt.Sprintf("gens-%d", i),
		"turns": []any{map[string]any{"role": "user", "content": fmt.Sprintf("/words %d", words)}}})
	return b
}

// follow starts a generation from viewer i and records its deltas, with
// coder/websocket.
func (g *genRun) follow(ctx context.Context, i int, c *websocket.Conn, words int) {
	if err := c.Write(ctx, websocket.MessageText, g.sendMessage(i, words)); err != nil {
		g.fail()
		return
	}
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			if ctx.Err() == nil {
				g.fail()
			}
			return
		}
		if g.handle(i, time.Now(), b) {
			return
		}
	}
}

// handle records viewer i's message msg, read at at; it reports whether
// the viewer is finished (its generation ended or failed: counted as a
// failure, since generations outlast the run). Only viewer i's reader
// calls it for i.
func (g *genRun) handle(i int, at time.Time, msg []byte) (finished bool) {
	var m wsMsg
	if bytes.HasPrefix(msg, deltaPrefix) {
		// The server's own field order: read offset (and the generation
		// once) without decoding the message.
		off, ok := jsonInt(msg, `"offset":`)
		if !ok {
			return false
		}
		m.Type, m.Offset = "delta", off
		if g.gids[i] == "" {
			g.gids[i] = jsonString(msg, `"generation":"`)
		}
	} else if json.Unmarshal(msg, &m) != nil {
		return false
	} else if m.Type == "delta" {
		g.gids[i] = m.Generation
	}
	switch m.Type {
	case "delta":
		if g.model == "offline" {
			g.arrivals[i] = append(g.arrivals[i], arrival{offset: m.Offset, at: at})
			return false
		}
		scanStamps(msg, func(sent int64) { g.arrivals[i] = append(g.arrivals[i], arrival{offset: m.Offset, at: at, sent: sent}) })
	case "done", "error", "resume_required":
		g.fail()
		return true
	}
	return false
}

// jsonInt reads the integer after key in msg.
func jsonInt(msg []byte, key string) (int64, bool) {
	i := bytes.Index(msg, []byte(key))
	if i < 0 {
		return 0, false
	}
	j := i + len(key)
	var n int64
	k := j
	for ; k < len(msg) && msg[k] >= '0' && msg[k] <= '9'; k++ {
		n = n*10 + int64(msg[k]-'0')
	}
	return n, k > j
}

// jsonString reads the string after key (which ends with its opening
// quote) in msg, up to the next quote (ids have no escapes).
func jsonString(msg []byte, key string) string {
	i := bytes.Index(msg, []byte(key))
	if i < 0 {
		return ""
	}
	rest := msg[i+len(key):]
	if j := bytes.IndexByte(rest, '"'); j >= 0 {
		return string(rest[:j])
	}
	return ""
}

func (g *genRun) fail() {
	g.mu.Lock()
	g.failures++
	g.mu.Unlock()
}

// latenessWindow is how many earlier deltas lateness looks back over for
// its reference: 50 deltas, one second at 50 per second.
const latenessWindow = 50

// lateness estimates each delta's added latency from the offline model's
// cadence: it emits delta k at start + (k−1)·period (a time.Ticker), so
// arrival − (k−1)·period is the same for every delta that was not delayed.
// A delta's lateness is that value less its minimum over the delta and the
// latenessWindow deltas before it (the best-served recent delta stands for
// the schedule). The window keeps a tick the ticker dropped, which shifts
// the schedule for good, from counting against every later delta; delays
// longer than the window are under-counted. It returns the lateness of the
// deltas that arrived in [w0, w1], and their count.
func (g *genRun) lateness(w0, w1 time.Time) (*samples, int) {
	out := &samples{}
	for _, seen := range g.arrivals {
		grid := make([]time.Time, len(seen))
		for k, a := range seen {
			grid[k] = a.at.Add(-time.Duration(a.offset-1) * g.period)
		}
		for k, a := range seen {
			if a.at.Before(w0) || a.at.After(w1) {
				continue
			}
			ref := grid[k]
			for j := max(0, k-latenessWindow); j < k; j++ {
				if grid[j].Before(ref) {
					ref = grid[j]
				}
			}
			out.add(grid[k].Sub(ref))
		}
	}
	return out, out.len()
}

// stamped returns the latency of every token of the fake upstream that
// arrived in [w0, w1]: arrival − send stamp.
func (g *genRun) stamped(w0, w1 time.Time) (*samples, int) {
	out := &samples{}
	for _, seen := range g.arrivals {
		for _, a := range seen {
			if !a.at.Before(w0) && !a.at.After(w1) {
				out.add(a.at.Sub(time.Unix(0, a.sent)))
			}
		}
	}
	return out, out.len()
}

// cancelAll cancels every generation over REST (the sockets are closed by
// now), so that a server given with -url is left idle.
func (g *genRun) cancelAll(ctx context.Context, t *target, ids []string) {
	parallel(ctx, len(ids), 16, func(ctx context.Context, i int) error {
		if g.gids[i] != "" {
			t.call(ctx, "POST", "/v1/sessions/"+ids[i]+"/generations/"+g.gids[i]+"/cancel", nil, http.StatusOK, nil)
		}
		return nil
	})
}

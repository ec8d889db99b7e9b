package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/coder/websocket"
)

func setupFanout(fs *flag.FlagSet, c *common) runFunc {
	var uf upstreamFlags
	uf.register(fs, 400, 50)
	viewers := fs.String("viewers", "1000", "comma-separated viewer counts, one case each (a new session per case)")
	dialConc := fs.Int("dial-concurrency", 32, "viewers connecting at once")
	perChunk := fs.Bool("per-chunk", false, "also print, to stderr, each chunk's send time (ms from the first) and its last-viewer latency (ms)")
	return func(ctx context.Context, e *env) ([]row, error) {
		counts, err := parseInts(*viewers)
		if err != nil {
			return nil, fmt.Errorf("-viewers: %w", err)
		}
		up, err := uf.start()
		if err != nil {
			return nil, err
		}
		defer up.close()
		t, err := e.server(ctx, serverOptions{extra: up.serverArgs()})
		if err != nil {
			return nil, err
		}
		var rows []row
		for _, n := range counts {
			r, err := fanoutCase(ctx, e, t, &uf, n, *dialConc, *perChunk)
			if err != nil {
				return nil, err
			}
			rows = append(rows, r)
		}
		return rows, nil
	}
}

// fanoutCase connects n viewers to a new session, runs one generation and
// measures it.
func fanoutCase(ctx context.Context, e *env, t *target, uf *upstreamFlags, n, dialConc int, perChunk bool) (row, error) {
	id, err := t.createSession(ctx)
	if err != nil {
		return row{}, err
	}
	retries := helloRetries.Load()
	conns, err := dialMany(ctx, t, []string{id}, n, dialConc)
	defer closeAll(conns)
	if err != nil {
		return row{}, err
	}
	e.logf("ws-fanout: %d viewers ready; one generation of %d tokens at %g tokens/s", len(conns), uf.tokens, uf.rate)
	fo := newFanout()
	server, _ := startCPU(t.pid)
	self, _ := startCPU(os.Getpid())
	if err := fo.run(ctx, t, id, conns, e.duration); err != nil {
		return row{}, err
	}
	if perChunk {
		fo.printPerChunk(e.log)
	}
	r := fo.row(len(conns), uf.tokens)
	r.add("server cpu", server.coresOr(-1), "cores")
	r.add("loadgen cpu", self.coresOr(-1), "cores")
	r.add("hello retries", float64(helloRetries.Load()-retries), "")
	return r, nil
}

// dialMany opens n viewers, spread round-robin over the sessions ids,
// conc at a time; each has said hello and got ready.
func dialMany(ctx context.Context, t *target, ids []string, n, conc int) ([]*websocket.Conn, error) {
	conns := make([]*websocket.Conn, n)
	err := parallel(ctx, n, conc, func(ctx context.Context, i int) error {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := t.dial(dctx, ids[i%len(ids)], 64<<20)
		conns[i] = c
		return err
	})
	return conns, err
}

func closeAll(conns []*websocket.Conn) {
	for _, c := range conns {
		if c != nil {
			c.CloseNow()
		}
	}
}

// fanout collects, for every token (keyed by its send stamp), the latest
// arrival over all viewers, and every single arrival.
type fanout struct {
	mu       sync.Mutex
	last     map[int64]time.Duration // stamp → max over viewers of arrival − stamp
	each     samples
	got      []int // tokens seen per viewer
	resumes  int   // resume_required messages
	failures int   // viewers whose socket failed before done
}

func newFanout() *fanout { return &fanout{last: make(map[int64]time.Duration)} }

// run starts one generation and reads every viewer until its done event
// (or until limit).
func (f *fanout) run(ctx context.Context, t *target, id string, conns []*websocket.Conn, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	f.got = make([]int, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.watch(ctx, i, c)
		}()
	}
	if err := t.call(ctx, "POST", "/v1/sessions/"+id+"/turns", turnsBody(1, "fan this out", true), http.StatusCreated, nil); err != nil {
		cancel()
		wg.Wait()
		return err
	}
	wg.Wait()
	return nil
}

// watch reads one viewer until done; latencies are kept locally and
// merged at the end, so viewers do not contend on every token.
func (f *fanout) watch(ctx context.Context, i int, c *websocket.Conn) {
	type arrival struct {
		sent int64
		lat  time.Duration
	}
	seen := make([]arrival, 0, 1024)
	defer func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, a := range seen {
			f.each.add(a.lat)
			if a.lat > f.last[a.sent] {
				f.last[a.sent] = a.lat
			}
		}
		f.got[i] = len(seen)
	}()
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			f.mu.Lock()
			f.failures++
			f.mu.Unlock()
			return
		}
		at := time.Now()
		var m wsMsg
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		switch m.Type {
		case "delta":
			stamps(m.Text, func(sent int64) {
				seen = append(seen, arrival{sent, at.Sub(time.Unix(0, sent))})
			})
		case "resume_required":
			f.mu.Lock()
			f.resumes++
			f.mu.Unlock()
		case "done":
			return
		}
	}
}

// printPerChunk writes one line per chunk: its send time in ms from the
// first chunk's, and its last-viewer latency in ms.
func (f *fanout) printPerChunk(w io.Writer) {
	keys := slices.Sorted(maps.Keys(f.last))
	for _, k := range keys {
		fmt.Fprintf(w, "%d %.2f\n", (k-keys[0])/1e6, ms(f.last[k]))
	}
}

func (f *fanout) row(viewers, tokens int) row {
	var perChunk samples
	for _, d := range f.last {
		perChunk.add(d)
	}
	complete := 0
	for _, n := range f.got {
		if n == tokens {
			complete++
		}
	}
	r := row{Case: fmt.Sprintf("viewers=%d tokens=%d", viewers, tokens)}
	r.addLatency("last-viewer ", &perChunk)
	r.add("any-viewer p50", ms(f.each.quantile(0.5)), "ms")
	r.add("any-viewer p99", ms(f.each.quantile(0.99)), "ms")
	r.add("viewers complete", float64(complete), "")
	r.add("dropped", float64(f.resumes), "")
	r.add("failed", float64(f.failures), "")
	return r
}

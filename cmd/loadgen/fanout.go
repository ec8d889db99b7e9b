package main

import (
	"bytes"
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
	raw := fs.Bool("raw", false, "before each case, run the same fan-out from a plain coder/websocket server in its own process (the floor), for a side-by-side row")
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
			if *raw {
				r, err := rawFanoutCase(ctx, e, &uf, n, *dialConc)
				if err != nil {
					return nil, err
				}
				rows = append(rows, r)
			}
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
	start := func(ctx context.Context) error {
		return t.call(ctx, "POST", "/v1/sessions/"+id+"/turns", turnsBody(1, "fan this out", true), http.StatusCreated, nil)
	}
	r, err := measureFanout(ctx, e, conns, uf.tokens, t.pid, start, perChunk)
	r.add("hello retries", float64(helloRetries.Load()-retries), "")
	return r, err
}

// measureFanout runs one generation (start) to conns, the viewers of a
// server with process id pid, and returns its row with both processes' CPU.
func measureFanout(ctx context.Context, e *env, conns []*websocket.Conn, tokens, pid int, start func(context.Context) error, perChunk bool) (row, error) {
	fo := newFanout()
	server, _ := startCPU(pid)
	self, _ := startCPU(os.Getpid())
	if err := fo.run(ctx, conns, e.duration, start); err != nil {
		return row{}, err
	}
	if perChunk {
		fo.printPerChunk(e.log)
	}
	r := fo.row(len(conns), tokens)
	r.add("server cpu", server.coresOr(-1), "cores")
	r.add("loadgen cpu", self.coresOr(-1), "cores")
	return r, nil
}

// rawFanoutCase is fanoutCase against the raw coder/websocket server.
func rawFanoutCase(ctx context.Context, e *env, uf *upstreamFlags, n, dialConc int) (row, error) {
	rt, err := startRawServer(ctx)
	if err != nil {
		return row{}, err
	}
	defer rt.close()
	conns := make([]*websocket.Conn, n)
	defer closeAll(conns)
	err = parallel(ctx, n, dialConc, func(ctx context.Context, i int) error {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := rt.dial(dctx)
		conns[i] = c
		return err
	})
	if err != nil {
		return row{}, err
	}
	e.logf("ws-fanout: raw floor: %d viewers ready; %d tokens at %g tokens/s", n, uf.tokens, uf.rate)
	start := func(ctx context.Context) error { return rt.start(ctx, uf.tokens, uf.rate) }
	r, err := measureFanout(ctx, e, conns, uf.tokens, rt.cmd.Process.Pid, start, false)
	r.Case = "raw coder/websocket " + r.Case
	r.add("hello retries", 0, "")
	return r, err
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

// run starts one generation (start) and reads every viewer until its done
// event (or until limit).
func (f *fanout) run(ctx context.Context, conns []*websocket.Conn, limit time.Duration, start func(context.Context) error) error {
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
	if err := start(ctx); err != nil {
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
	// The reader costs as little as it can (a reused buffer, deltas
	// recognised by their prefix, no JSON decoding): it shares the two
	// cores with the server, so its cost shows up as the server's latency.
	buf := make([]byte, 0, 4096)
	for {
		_, r, err := c.Reader(ctx)
		if err == nil {
			buf, err = readInto(r, buf[:0])
		}
		if err != nil {
			f.mu.Lock()
			f.failures++
			f.mu.Unlock()
			return
		}
		at := time.Now()
		if bytes.HasPrefix(buf, deltaPrefix) {
			scanStamps(buf, func(sent int64) {
				seen = append(seen, arrival{sent, at.Sub(time.Unix(0, sent))})
			})
			continue
		}
		var m wsMsg
		if json.Unmarshal(buf, &m) != nil {
			continue
		}
		switch m.Type {
		case "delta": // not in the usual field order: decoded
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

// deltaPrefix starts every delta message sessiond (and the raw server) sends.
var deltaPrefix = []byte(`{"type":"delta",`)

// readInto appends everything r has to buf.
func readInto(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// scanStamps finds the stamps of the fake upstream ("t" and 16 or more
// digits, after a space or a quote) in a raw message and calls fn with each.
func scanStamps(b []byte, fn func(sent int64)) {
	for i := 1; i+1 < len(b); i++ {
		if b[i] != 't' || (b[i-1] != ' ' && b[i-1] != '"') {
			continue
		}
		j := i + 1
		var ns int64
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			ns = ns*10 + int64(b[j]-'0')
			j++
		}
		if j-i-1 >= 16 {
			fn(ns)
		}
		i = j - 1
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

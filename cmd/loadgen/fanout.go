package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
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
	sockets := fs.Bool("sockets", false, "before each viewer count, the kernel's floor (Linux): one thread writes each chunk to as many plain loopback TCP sockets, with write(2) per socket and then with io_uring, while one thread reads them all through epoll on another CPU; no WebSocket, no server")
	clients := fs.String("client", "std,lean", "comma-separated viewer clients to run each case with: std (a coder/websocket reader goroutine per viewer) or lean (one thread reads every viewer through epoll; costs the shared cores less)")
	return func(ctx context.Context, e *env) ([]row, error) {
		counts, err := parseInts(*viewers)
		if err != nil {
			return nil, fmt.Errorf("-viewers: %w", err)
		}
		kinds, err := parseClients(*clients)
		if err != nil {
			return nil, err
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
			for _, mode := range socketModes(*sockets) {
				e.logf("ws-fanout: socket floor: %d sockets, %s; %d tokens at %g tokens/s", n, mode, uf.tokens, uf.rate)
				r, err := socketFloorCase(ctx, n, uf.tokens, uf.rate, mode)
				if err != nil {
					return nil, err
				}
				rows = append(rows, r)
			}
			for _, k := range kinds {
				if *raw {
					r, err := rawFanoutCase(ctx, e, &uf, n, *dialConc, k)
					if err != nil {
						return nil, err
					}
					rows = append(rows, r)
				}
				r, err := fanoutCase(ctx, e, t, &uf, n, *dialConc, k, *perChunk)
				if errors.Is(err, errNoStamps) && e.url != "" {
					return nil, fmt.Errorf("%w: with -url, start sessiond with %s (choose the address with -upstream-addr)", err, strings.Join(up.serverArgs(), " "))
				}
				if err != nil {
					return nil, err
				}
				rows = append(rows, r)
			}
		}
		return rows, nil
	}
}

// socketModes are the floors -sockets runs (see socketFloorCase).
func socketModes(on bool) []string {
	if !on {
		return nil
	}
	return []string{"write", "io_uring"}
}

// fanoutCase connects n viewers (client kind std or lean) to a new
// session, runs one generation and measures it.
func fanoutCase(ctx context.Context, e *env, t *target, uf *upstreamFlags, n, dialConc int, kind string, perChunk bool) (row, error) {
	id, err := t.createSession(ctx)
	if err != nil {
		return row{}, err
	}
	retries := helloRetries.Load()
	vs, err := dialViewers(ctx, t, kind, []string{id}, n, dialConc)
	defer vs.close()
	if err != nil {
		return row{}, err
	}
	e.logf("ws-fanout: %d %s viewers ready; one generation of %d tokens at %g tokens/s", n, kind, uf.tokens, uf.rate)
	start := func(ctx context.Context) error {
		return t.call(ctx, "POST", "/v1/sessions/"+id+"/turns", turnsBody(1, "fan this out", true), http.StatusCreated, nil)
	}
	r, err := measureFanout(ctx, e, vs, uf.tokens, t.pid, start, perChunk)
	r.Case += " client=" + kind
	r.add("hello retries", float64(helloRetries.Load()-retries), "")
	return r, err
}

// viewerSet is the viewers of one case: coder/websocket connections (std)
// or lean ones.
type viewerSet struct {
	std  []*websocket.Conn
	lean []*leanViewer
}

// dialViewers opens n viewers of client kind (std or lean) over the
// sessions ids, as dialMany.
func dialViewers(ctx context.Context, t *target, kind string, ids []string, n, conc int) (*viewerSet, error) {
	vs := &viewerSet{}
	var err error
	if kind == "lean" {
		vs.lean, err = dialManyLean(ctx, t, ids, n, conc)
	} else {
		vs.std, err = dialMany(ctx, t, ids, n, conc)
	}
	return vs, err
}

func (vs *viewerSet) len() int { return len(vs.std) + len(vs.lean) }

func (vs *viewerSet) close() {
	closeAll(vs.std)
	for _, v := range vs.lean {
		if v != nil {
			v.Close()
		}
	}
}

// errNoStamps is measureFanout's error when no viewer received a chunk of
// the fake upstream: the generation came from another model, or never
// reached the viewers.
var errNoStamps = errors.New("no viewer received a chunk of the fake upstream")

// measureFanout runs one generation (start) to the viewers of a server
// with process id pid, and returns its row with both processes' CPU.
func measureFanout(ctx context.Context, e *env, vs *viewerSet, tokens, pid int, start func(context.Context) error, perChunk bool) (row, error) {
	fo := newFanout(vs.len())
	server, _ := startCPU(pid)
	self, _ := startCPU(os.Getpid())
	if err := fo.run(ctx, vs, e.duration, start); err != nil {
		return row{}, err
	}
	if err := fo.check(); err != nil {
		return row{}, err
	}
	if perChunk {
		fo.printPerChunk(e.log)
	}
	r := fo.row(vs.len(), tokens)
	r.add("server cpu", server.coresOr(-1), "cores")
	r.add("loadgen cpu", self.coresOr(-1), "cores")
	return r, nil
}

// rawFanoutCase is fanoutCase against the raw coder/websocket server.
func rawFanoutCase(ctx context.Context, e *env, uf *upstreamFlags, n, dialConc int, kind string) (row, error) {
	rt, err := startRawServer(ctx, e.serverCPUs())
	if err != nil {
		return row{}, err
	}
	defer rt.close()
	var vs viewerSet
	if kind == "lean" {
		vs.lean = make([]*leanViewer, n)
	} else {
		vs.std = make([]*websocket.Conn, n)
	}
	defer vs.close()
	err = parallel(ctx, n, dialConc, func(ctx context.Context, i int) error {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var err error
		if kind == "lean" {
			vs.lean[i], err = leanWSDial(dctx, rt.addr, "/ws", nil, func([]byte) bool { return true })
		} else {
			vs.std[i], err = rt.dial(dctx)
		}
		return err
	})
	if err != nil {
		return row{}, err
	}
	e.logf("ws-fanout: raw floor: %d %s viewers ready; %d tokens at %g tokens/s", n, kind, uf.tokens, uf.rate)
	start := func(ctx context.Context) error { return rt.start(ctx, uf.tokens, uf.rate) }
	r, err := measureFanout(ctx, e, &vs, uf.tokens, rt.cmd.Process.Pid, start, false)
	r.Case = "raw coder/websocket " + r.Case + " client=" + kind
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
	seen     [][]fanArrival // per viewer; each viewer's own reader appends
	resumes  int            // resume_required messages
	failures int            // viewers whose socket failed before done
}

// fanArrival is one token reaching one viewer.
type fanArrival struct {
	sent int64
	lat  time.Duration
}

func newFanout(viewers int) *fanout {
	return &fanout{last: make(map[int64]time.Duration), seen: make([][]fanArrival, viewers)}
}

// run starts one generation (start) and reads every viewer until its done
// event (or until limit).
func (f *fanout) run(ctx context.Context, vs *viewerSet, limit time.Duration, start func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if vs.lean != nil {
		started := make(chan error, 1)
		go func() { started <- start(ctx) }()
		err := leanRead(ctx, vs.lean, func(i int, at time.Time, msg []byte) bool {
			return f.handle(i, at, msg)
		}, func(int, error) { f.fail() })
		if serr := <-started; serr != nil {
			return serr
		}
		f.merge()
		return err
	}
	var wg sync.WaitGroup
	for i, c := range vs.std {
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
	f.merge()
	return nil
}

// watch reads one viewer with coder/websocket until done. The reader costs
// as little as it can (a reused buffer, deltas recognised by their prefix,
// no JSON decoding): it shares the two cores with the server, so its cost
// shows up as the server's latency.
func (f *fanout) watch(ctx context.Context, i int, c *websocket.Conn) {
	f.seen[i] = make([]fanArrival, 0, 1024)
	buf := make([]byte, 0, 4096)
	for {
		_, r, err := c.Reader(ctx)
		if err == nil {
			buf, err = readInto(r, buf[:0])
		}
		if err != nil {
			f.fail()
			return
		}
		if f.handle(i, time.Now(), buf) {
			return
		}
	}
}

// handle records viewer i's message msg, read at at, and reports whether
// it was the generation's done. Only viewer i's reader calls it for i.
func (f *fanout) handle(i int, at time.Time, msg []byte) (done bool) {
	add := func(sent int64) { f.seen[i] = append(f.seen[i], fanArrival{sent, at.Sub(time.Unix(0, sent))}) }
	if bytes.HasPrefix(msg, deltaPrefix) {
		scanStamps(msg, add)
		return false
	}
	var m wsMsg
	if json.Unmarshal(msg, &m) != nil {
		return false
	}
	switch m.Type {
	case "delta": // not in the usual field order: decoded
		stamps(m.Text, add)
	case "resume_required":
		f.mu.Lock()
		f.resumes++
		f.mu.Unlock()
	case "done":
		return true
	}
	return false
}

// check returns errNoStamps, wrapped, if no viewer received a chunk of the
// fake upstream: a row of zeros would otherwise look like a measurement.
func (f *fanout) check() error {
	if len(f.last) > 0 {
		return nil
	}
	return fmt.Errorf("%w (%d of %d viewers failed)", errNoStamps, f.failures, len(f.seen))
}

func (f *fanout) fail() {
	f.mu.Lock()
	f.failures++
	f.mu.Unlock()
}

// merge folds the viewers' arrivals into last and each.
func (f *fanout) merge() {
	for _, seen := range f.seen {
		for _, a := range seen {
			f.each.add(a.lat)
			if a.lat > f.last[a.sent] {
				f.last[a.sent] = a.lat
			}
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
	for _, seen := range f.seen {
		if len(seen) == tokens {
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

package streaming_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"sessiond/streaming"
)

// BenchmarkFanout1000 measures one generation streamed to 1,000 viewers:
// per op the producer appends one delta. It reports the latency from the
// append (the chunk leaving the model) to the last viewer receiving it
// ("p50-last-ns", "p99-last-ns": the project's figure), and over every
// single delivery ("p50-each-ns", "p99-each-ns").
//
// Sub-benchmarks:
//
//	mem/…  in-memory sinks: the package's own cost
//	ws/…   real coder/websocket connections over loopback, the receiving
//	       clients in the same process (so they share its CPUs)
//
//	closed      FlushInterval 0; the next delta is appended once every viewer
//	            has the previous one: pure latency, ns/op is one full fan-out
//	50tps       default options (15 ms coalescing), a delta every 20 ms, like
//	            a fast model; run with -benchtime=500x or so
//	50tps-immediate  the same with FlushInterval 0
//	burst       default options, deltas appended as fast as possible: the
//	            throughput case that coalescing is for (latency includes
//	            queueing)
//
// Run: go test -run '^$' -bench Fanout1000 -benchtime=2000x ./streaming/
func BenchmarkFanout1000(b *testing.B) {
	const viewers = 1000
	closed := &streaming.ViewerOptions{FlushInterval: 0}
	for _, tr := range []struct {
		name string
		run  func(b *testing.B, n int, opts *streaming.ViewerOptions, pace time.Duration, closedLoop bool)
	}{
		{"mem", fanoutMem},
		{"ws", fanoutWS},
	} {
		b.Run(tr.name+"/closed", func(b *testing.B) { tr.run(b, viewers, closed, 0, true) })
		b.Run(tr.name+"/50tps", func(b *testing.B) { tr.run(b, viewers, nil, 20*time.Millisecond, false) })
		b.Run(tr.name+"/burst", func(b *testing.B) { tr.run(b, viewers, nil, 0, false) })
		b.Run(tr.name+"/50tps-immediate", func(b *testing.B) { tr.run(b, viewers, closed, 20*time.Millisecond, false) })
	}
}

// latencies collects receive times by offset.
type latencies struct {
	sent   []atomic.Int64 // by offset: unix ns of the append
	last   []atomic.Int64 // by offset: latest receive, unix ns
	each   []atomic.Int64 // histogram of every delivery, µs buckets
	total  atomic.Int64   // deliveries
	target atomic.Int64
	reach  chan struct{}
	writes atomic.Int64
}

const histBuckets = 200_000 // 200 ms in µs; beyond goes in the last bucket

func newLatencies(ops int) *latencies {
	return &latencies{
		sent:  make([]atomic.Int64, ops+2),
		last:  make([]atomic.Int64, ops+2),
		each:  make([]atomic.Int64, histBuckets),
		reach: make(chan struct{}, 1),
	}
}

// received records frames received at now. Frames other than deltas
// (done) are counted but not timed.
func (lt *latencies) received(now int64, frames [][]byte) {
	for _, f := range frames {
		off := offsetOf(f)
		if off > 0 && off < int64(len(lt.last)) {
			p := &lt.last[off]
			for {
				old := p.Load()
				if now <= old || p.CompareAndSwap(old, now) {
					break
				}
			}
		}
	}
	if n := lt.total.Add(int64(len(frames))); n == lt.target.Load() {
		select {
		case lt.reach <- struct{}{}:
		default:
		}
	}
}

// waitFor blocks until total deliveries reach n.
func (lt *latencies) waitFor(n int64) {
	lt.target.Store(n)
	for lt.total.Load() < n {
		select {
		case <-lt.reach:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// report computes the percentiles once every delivery is in: for the
// "each" histogram each viewer's receive time of each offset is needed, so
// it is filled by the sinks through record.
func (lt *latencies) report(b *testing.B, ops int) {
	lastLat := make([]float64, 0, ops)
	for off := 1; off <= ops; off++ {
		if r := lt.last[off].Load(); r > 0 {
			lastLat = append(lastLat, float64(r-lt.sent[off].Load()))
		}
	}
	slices.Sort(lastLat)
	if len(lastLat) > 0 {
		b.ReportMetric(pct(lastLat, 0.50), "p50-last-ns")
		b.ReportMetric(pct(lastLat, 0.99), "p99-last-ns")
	}
	var count int64
	for i := range lt.each {
		count += lt.each[i].Load()
	}
	if count > 0 {
		b.ReportMetric(histPct(lt.each, count, 0.50), "p50-each-ns")
		b.ReportMetric(histPct(lt.each, count, 0.99), "p99-each-ns")
	}
	if w := lt.writes.Load(); w > 0 {
		b.ReportMetric(float64(lt.total.Load())/float64(w), "frames/write")
	}
}

// record adds one delivery latency to the histogram.
func (lt *latencies) record(now int64, frames [][]byte) {
	for _, f := range frames {
		off := offsetOf(f)
		if off <= 0 || off >= int64(len(lt.sent)) {
			continue
		}
		sent := lt.sent[off].Load()
		if sent == 0 {
			continue
		}
		us := (now - sent) / 1000
		lt.each[min(max(us, 0), histBuckets-1)].Add(1)
	}
}

func pct(sorted []float64, p float64) float64 {
	return sorted[min(int(p*float64(len(sorted))), len(sorted)-1)]
}

func histPct(h []atomic.Int64, count int64, p float64) float64 {
	want := int64(p * float64(count))
	var seen int64
	for i := range h {
		seen += h[i].Load()
		if seen > want {
			return float64(i) * 1000
		}
	}
	return float64(len(h)) * 1000
}

var offsetKey = []byte(`"offset":`)

func offsetOf(f []byte) int64 {
	i := bytes.Index(f, offsetKey)
	if i < 0 {
		return 0
	}
	var n int64
	for _, c := range f[i+len(offsetKey):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// timeSink records when frames reach it.
type timeSink struct{ lt *latencies }

func (s timeSink) WriteFrame(_ context.Context, frames [][]byte) error {
	now := time.Now().UnixNano()
	s.lt.writes.Add(1)
	s.lt.record(now, frames)
	s.lt.received(now, frames)
	return nil
}

func (timeSink) Close(int, string) error { return nil }

// produce appends b.N deltas (and a done) to a new generation of hub,
// paced or closed-loop, and reports the latencies.
func produce(b *testing.B, hub *streaming.Hub, lt *latencies, n int, pace time.Duration, closedLoop bool) {
	l, err := hub.StartGeneration("g_bench")
	if err != nil {
		b.Fatal(err)
	}
	var tick *time.Ticker
	if pace > 0 {
		tick = time.NewTicker(pace)
		defer tick.Stop()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		if tick != nil {
			<-tick.C
		}
		if closedLoop {
			lt.target.Store(int64(i * n))
		}
		lt.sent[i].Store(time.Now().UnixNano())
		if _, err := l.AppendText("tok "); err != nil {
			b.Fatal(err)
		}
		if closedLoop {
			lt.waitFor(int64(i * n))
		}
	}
	lt.waitFor(int64(b.N * n))
	b.StopTimer()
	if _, err := l.Finish(testDone); err != nil {
		b.Fatal(err)
	}
	lt.report(b, b.N)
}

func fanoutMem(b *testing.B, n int, opts *streaming.ViewerOptions, pace time.Duration, closedLoop bool) {
	lt := newLatencies(b.N)
	hub := streaming.NewHub(nil)
	defer hub.Close()
	o := streaming.ViewerOptions{MaxBuffered: 64 << 20}
	if opts != nil {
		o.FlushInterval = opts.FlushInterval
	} else {
		o.FlushInterval = streaming.DefaultFlushInterval
	}
	for range n {
		if err := hub.AddViewer(streaming.NewViewer(timeSink{lt}, &o), nil); err != nil {
			b.Fatal(err)
		}
	}
	produce(b, hub, lt, n, pace, closedLoop)
}

func fanoutWS(b *testing.B, n int, opts *streaming.ViewerOptions, pace time.Duration, closedLoop bool) {
	lt := newLatencies(b.N)
	hub := streaming.NewHub(nil)
	o := streaming.ViewerOptions{MaxBuffered: 64 << 20}
	if opts != nil {
		o.FlushInterval = opts.FlushInterval
	} else {
		o.FlushInterval = streaming.DefaultFlushInterval
	}
	var handlers sync.WaitGroup
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		ws, err := streaming.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return
		}
		ctx := ws.Conn().CloseRead(context.Background())
		v := streaming.NewViewer(ws, &o)
		defer v.Close()
		if err := hub.AddViewer(v, nil); err != nil {
			return
		}
		select {
		case <-v.Done():
		case <-ctx.Done():
		}
	}))
	defer ts.Close()
	defer handlers.Wait()
	defer hub.Close()

	url := "ws" + strings.TrimPrefix(ts.URL, "http")
	conns := make([]*websocket.Conn, n)
	var readers sync.WaitGroup
	defer readers.Wait()
	for i := range conns {
		c, _, err := websocket.Dial(context.Background(), url, &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		conns[i] = c
		defer c.CloseNow()
		readers.Go(func() {
			frames := make([][]byte, 1)
			for {
				_, data, err := c.Read(context.Background())
				if err != nil {
					return
				}
				now := time.Now().UnixNano()
				frames[0] = data
				lt.record(now, frames)
				lt.received(now, frames)
			}
		})
	}
	checkFor(b, "every viewer in the hub", func() bool { return hub.Viewers() == n })
	produce(b, hub, lt, n, pace, closedLoop)
}

// countSink only counts frames.
type countSink struct{ n *atomic.Int64 }

func (s countSink) WriteFrame(_ context.Context, frames [][]byte) error {
	s.n.Add(int64(len(frames)))
	return nil
}

func (countSink) Close(int, string) error { return nil }

// BenchmarkIdleViewerMemory reports the heap held by one idle viewer that
// is in a hub and has streamed a generation ("B/viewer"), sink excluded.
func BenchmarkIdleViewerMemory(b *testing.B) {
	const n = 10_000
	var perViewer float64
	for b.Loop() {
		var frames atomic.Int64
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		hub := streaming.NewHub(nil)
		for range n {
			if err := hub.AddViewer(streaming.NewViewer(countSink{&frames}, nil), nil); err != nil {
				b.Fatal(err)
			}
		}
		l, _ := hub.StartGeneration("g_1")
		l.AppendText("tok")
		l.Finish(testDone)
		for frames.Load() < 2*n {
			runtime.Gosched()
		}
		l.Release() // count the viewers, not the retained log
		runtime.GC()
		runtime.ReadMemStats(&after)
		perViewer = float64(after.HeapAlloc-before.HeapAlloc) / n
		hub.Close()
	}
	b.ReportMetric(perViewer, "B/viewer")
}

// BenchmarkWebSocketWriteFrame writes 16 small messages per WriteFrame (a
// coalesced burst of deltas, or a short backlog) over loopback to a client
// reading them in this process: "each" is a sink from NewWebSocket (one
// write(2) per message), "batched" one from Accept (one per WriteFrame).
// ns/op is per WriteFrame, until the client has read its messages.
func BenchmarkWebSocketWriteFrame(b *testing.B) {
	const perFrame = 16
	msg := []byte(`{"type":"delta","generation":"g_0123456789","offset":12345,"text":" token"}`)
	frames := make([][]byte, perFrame)
	for i := range frames {
		frames[i] = msg
	}
	for _, batched := range []bool{false, true} {
		name := "each"
		if batched {
			name = "batched"
		}
		b.Run(name, func(b *testing.B) {
			sinks := make(chan *streaming.WebSocket, 1)
			release := make(chan struct{})
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				sink, err := acceptSink(w, r, batched, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
				if err != nil {
					return
				}
				sinks <- sink
				<-release
			}))
			defer ts.Close()
			defer close(release)
			c, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(ts.URL, "http"), &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
			if err != nil {
				b.Fatal(err)
			}
			defer c.CloseNow()
			sink := <-sinks
			read := make(chan struct{}, 1)
			var reader sync.WaitGroup
			defer func() {
				c.CloseNow() // ends the reader's Read
				reader.Wait()
			}()
			reader.Go(func() {
				n := 0
				for {
					if _, _, err := c.Read(context.Background()); err != nil {
						return
					}
					if n++; n == perFrame {
						read <- struct{}{}
						n = 0
					}
				}
			})
			ctx := context.Background()
			for b.Loop() {
				if err := sink.WriteFrame(ctx, frames); err != nil {
					b.Fatal(err)
				}
				<-read
			}
		})
	}
}

// BenchmarkFinishedLogMemory: the heap a finished generation's log holds
// for its retention (10 minutes by default, for resumes by offset), per
// token: 100 logs of 2,000 one-word deltas each, finished, then measured
// after a collection.
func BenchmarkFinishedLogMemory(b *testing.B) { logMemory(b, 100, 2000, true) }

// BenchmarkRunningLogMemory: the heap a running generation's log holds, per
// token, after 20,000 one-word deltas: its newest events stay encoded for
// live viewers, the older ones are compacted to their text.
func BenchmarkRunningLogMemory(b *testing.B) { logMemory(b, 50, 20000, false) }

// logMemory reports the heap that logs of tokens one-word deltas each
// hold, per token, after a collection; finish ends each log first.
func logMemory(b *testing.B, logs, tokens int, finish bool) {
	for b.Loop() {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		kept := make([]*streaming.Log, logs)
		for i := range kept {
			l := streaming.NewLog("g_0123456789ABCDEFGHJK", &streaming.LogOptions{Retention: -1})
			for t := range tokens {
				if _, err := l.AppendText(" word" + string(rune('a'+t%26))); err != nil {
					b.Fatal(err)
				}
			}
			if finish {
				if _, err := l.Finish(streaming.Done{Turn: []byte(`{"id":1}`), FinishReason: "stop"}); err != nil {
					b.Fatal(err)
				}
			}
			kept[i] = l
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(logs*tokens), "B/token")
		runtime.KeepAlive(kept)
	}
}

// BenchmarkSubscribeFinishedLog subscribes one viewer from offset 0 to a
// finished generation of 100,000 one-word deltas (a resume of a long
// answer): B/op is what the viewer allocates for it.
//
//	first-write  until its sink is handed the first frames, then the viewer
//	             is closed: what a client that does not read costs
//	drain        until the sink has been handed every event
//
// Run: go test -run '^$' -bench SubscribeFinishedLog -benchmem ./streaming/
func BenchmarkSubscribeFinishedLog(b *testing.B) {
	const tokens = 100_000
	l := streaming.NewLog("g_0123456789ABCDEFGHJK", &streaming.LogOptions{Retention: -1})
	for t := range tokens {
		if _, err := l.AppendText(" word" + string(rune('a'+t%26))); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := l.Finish(streaming.Done{Turn: []byte(`{"id":1}`), FinishReason: "stop"}); err != nil {
		b.Fatal(err)
	}
	defer l.Release()

	b.Run("first-write", func(b *testing.B) {
		for b.Loop() {
			started := make(chan struct{}, 1)
			v := streaming.NewViewer(&recSink{write: func(ctx context.Context, _ [][]byte) error {
				started <- struct{}{}
				<-ctx.Done()
				return context.Cause(ctx)
			}}, nil)
			if err := l.Subscribe(v, 0); err != nil {
				b.Fatal(err)
			}
			<-started
			v.Close()
		}
	})
	b.Run("drain", func(b *testing.B) {
		for b.Loop() {
			var n atomic.Int64
			v := streaming.NewViewer(countSink{&n}, &streaming.ViewerOptions{CloseOnFinal: true})
			if err := l.Subscribe(v, 0); err != nil {
				b.Fatal(err)
			}
			<-v.Done()
			if got := n.Load(); got != tokens+1 {
				b.Fatalf("%d events written, want %d", got, tokens+1)
			}
		}
	})
}

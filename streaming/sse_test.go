package streaming_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sessiond/streaming"
)

// sseEvent is one event as a client parses it.
type sseEvent struct {
	event, id, data string
}

// readSSE parses events (and counts comments) from an event stream until
// EOF or until stop returns true.
func readSSE(tb testing.TB, r *bufio.Reader, stop func(events []sseEvent, comments int) bool) ([]sseEvent, int) {
	tb.Helper()
	var events []sseEvent
	var cur sseEvent
	var data []string
	comments := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return events, comments
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if data != nil {
				cur.data = strings.Join(data, "\n")
				events = append(events, cur)
			}
			cur, data = sseEvent{}, nil
			if stop != nil && stop(events, comments) {
				return events, comments
			}
		case strings.HasPrefix(line, ":"):
			comments++
			if stop != nil && stop(events, comments) {
				return events, comments
			}
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		default:
			tb.Fatalf("unexpected SSE line %q", line)
		}
	}
}

// sseHandler streams one generation's log, resuming after Last-Event-ID,
// the way the web layer is meant to.
func sseHandler(l *streaming.Log, opts *streaming.SSEOptions) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		after, err := streaming.ParseLastEventID(r.Header.Get("Last-Event-ID"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sse, err := streaming.NewSSE(w, opts)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		v := streaming.NewViewer(sse, &streaming.ViewerOptions{CloseOnFinal: true})
		defer v.Close() // before returning: the ResponseWriter dies with the handler
		if err := l.Subscribe(v, after); err != nil {
			return
		}
		select {
		case <-v.Done():
		case <-r.Context().Done():
		}
	}
}

func TestSSERoundTrip(t *testing.T) {
	l := streaming.NewLog("g_1", nil)
	var want []streaming.Event
	for _, w := range []string{"a", "b\nc", "d"} {
		want = append(want, mustAppend(t, l, w))
	}
	ts := httptest.NewServer(sseHandler(l, nil))
	defer ts.Close()

	req, _ := http.NewRequest("GET", ts.URL, nil)
	req.Header.Set("Last-Event-ID", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Get("Content-Type"); got != "text/event-stream" {
		t.Fatalf("Content-Type %q", got)
	}
	r := bufio.NewReader(resp.Body)
	// The backlog arrives, then live events as they are appended.
	events, _ := readSSE(t, r, func(ev []sseEvent, _ int) bool { return len(ev) == 2 })
	want = append(want, mustAppend(t, l, "e"))
	want = append(want, mustFinish(t, l))
	more, _ := readSSE(t, r, nil) // the server ends the stream after done
	events = append(events, more...)

	want = want[1:]
	if len(events) != len(want) {
		t.Fatalf("got %d events, want %d: %+v", len(events), len(want), events)
	}
	for i, e := range events {
		if e.event != want[i].Type || e.id != strconv.FormatInt(want[i].Offset, 10) || e.data != string(want[i].Data) {
			t.Fatalf("event %d = %+v, want %s id %d data %s", i, e, want[i].Type, want[i].Offset, want[i].Data)
		}
	}
}

func TestSSEHeartbeat(t *testing.T) {
	l := streaming.NewLog("g_1", nil)
	ts := httptest.NewServer(sseHandler(l, &streaming.SSEOptions{Heartbeat: 5 * time.Millisecond}))
	defer ts.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, comments := readSSE(t, bufio.NewReader(resp.Body), func(_ []sseEvent, c int) bool { return c >= 2 })
	if comments < 2 {
		t.Fatalf("saw %d heartbeats before the stream ended", comments)
	}
}

func TestSSEBadLastEventID(t *testing.T) {
	ts := httptest.NewServer(sseHandler(streaming.NewLog("g_1", nil), nil))
	defer ts.Close()
	req, _ := http.NewRequest("GET", ts.URL, nil)
	req.Header.Set("Last-Event-ID", "abc")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestParseLastEventID(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true},
		{"0", 0, true},
		{"17", 17, true},
		{" 17 ", 17, true},
		{"9223372036854775807", 9223372036854775807, true},
		{"9223372036854775808", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1.5", 0, false},
		{"1e3", 0, false},
		{"g_1:3", 0, false},
		{"abc", 0, false},
	}
	for _, tt := range tests {
		got, err := streaming.ParseLastEventID(tt.in)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("ParseLastEventID(%q)=%d,%v, want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, streaming.ErrBadLastEventID) {
			t.Errorf("ParseLastEventID(%q) err=%v, want ErrBadLastEventID", tt.in, err)
		}
	}
}

func TestAppendSSE(t *testing.T) {
	tests := []struct {
		name, frame, want string
	}{
		{"delta", `{"type":"delta","generation":"g_1","offset":3,"text":"Hi"}`,
			"event: delta\nid: 3\ndata: {\"type\":\"delta\",\"generation\":\"g_1\",\"offset\":3,\"text\":\"Hi\"}\n\n"},
		{"message without offset", `{"type":"turn","turn":{"id":1}}`,
			"event: turn\ndata: {\"type\":\"turn\",\"turn\":{\"id\":1}}\n\n"},
		{"resume_required has no id", `{"type":"resume_required","generation":"g_1","after":4}`,
			"event: resume_required\ndata: {\"type\":\"resume_required\",\"generation\":\"g_1\",\"after\":4}\n\n"},
		{"offset elsewhere", `{"generation":"g","offset":5,"type":"delta"}`,
			"event: delta\nid: 5\ndata: {\"generation\":\"g\",\"offset\":5,\"type\":\"delta\"}\n\n"},
		{"line breaks split, CR dropped", "{\"type\":\"x\",\r\n\"a\":1}",
			"event: x\ndata: {\"type\":\"x\",\ndata: \"a\":1}\n\n"},
		{"type with a line break is not an event name", `{"type":"a\nb"}`,
			"data: {\"type\":\"a\\nb\"}\n\n"},
		{"not JSON", `nope`, "data: nope\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(streaming.AppendSSE(nil, []byte(tt.frame))); got != tt.want {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

type noFlush struct{ http.ResponseWriter }

func TestNewSSERefusesWriterWithoutFlush(t *testing.T) {
	rec := httptest.NewRecorder()
	if _, err := streaming.NewSSE(noFlush{rec}, nil); !errors.Is(err, streaming.ErrNoFlusher) {
		t.Fatalf("err=%v, want ErrNoFlusher", err)
	}
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 || rec.Flushed {
		t.Fatal("NewSSE wrote before refusing")
	}
}

// A turn stored with invalid UTF-8 (before requests were held to UTF-8)
// still goes out as a "turn" event: its bytes are not repaired, but
// nothing else breaks on them.
func TestAppendSSEStoredInvalidUTF8(t *testing.T) {
	raw := []byte("{\"type\":\"turn\",\"turn\":{\"id\":1,\"content\":\"raw \xff\xfe\"}}")
	events, _ := readSSE(t, bufio.NewReader(strings.NewReader(string(streaming.AppendSSE(nil, raw)))), nil)
	if len(events) != 1 || events[0].event != "turn" || events[0].data != string(raw) {
		t.Fatalf("events %+v, want one turn event with the frame as data", events)
	}
}

// FuzzAppendSSE: an SSE client gets back exactly the JSON of any event
// (whatever its generation id and text), with the right event name and id,
// and the data of any frame at all survives the line splitting.
func FuzzAppendSSE(f *testing.F) {
	f.Add("g_1", int64(3), "Hi\n", []byte("{\"type\":\"x\",\r\n\"a\":1}"))
	f.Add("g_\"q\"", int64(0), "", []byte(`{"type":"turn"}`))
	f.Add("g_1", int64(1), "\xff", []byte("{\"type\":\"turn\",\"turn\":{\"content\":\"\xff\xfe\"}}"))
	f.Fuzz(func(t *testing.T, gen string, off int64, text string, raw []byte) {
		if off < 0 {
			off = -(off + 1)
		}
		data, err := streaming.EncodeDelta(gen, off, streaming.Delta{Text: text})
		if err != nil {
			t.Fatal(err)
		}
		events, _ := readSSE(t, bufio.NewReader(strings.NewReader(string(streaming.AppendSSE(nil, data)))), nil)
		if len(events) != 1 {
			t.Fatalf("%d events", len(events))
		}
		e := events[0]
		if e.event != streaming.TypeDelta || e.id != strconv.FormatInt(off, 10) || e.data != string(data) {
			t.Fatalf("event %+v for %s", e, data)
		}

		events, _ = readSSE(t, bufio.NewReader(strings.NewReader(string(streaming.AppendSSE(nil, raw)))), nil)
		if len(events) != 1 {
			t.Fatalf("%d events for %q", len(events), raw)
		}
		if want := strings.ReplaceAll(string(raw), "\r", ""); events[0].data != want {
			t.Fatalf("data %q, want %q", events[0].data, want)
		}
		if strings.ContainsAny(events[0].id, "\r\n") || strings.ContainsAny(events[0].event, "\r\n") {
			t.Fatalf("line break in a field: %+v", events[0])
		}
	})
}

// stalledWriter is a ResponseWriter whose writes block, as on a client
// that stopped reading, until a write deadline in the past is set.
type stalledWriter struct {
	h       http.Header
	mu      sync.Mutex
	entered chan struct{} // closed when the first write blocks
	wake    chan struct{} // closed by a deadline in the past
	blocked bool
}

func newStalledWriter() *stalledWriter {
	return &stalledWriter{h: http.Header{}, entered: make(chan struct{}), wake: make(chan struct{})}
}

func (w *stalledWriter) Header() http.Header { return w.h }
func (w *stalledWriter) WriteHeader(int)     {}
func (w *stalledWriter) Flush()              {}
func (w *stalledWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	first := !w.blocked
	w.blocked = true
	w.mu.Unlock()
	if first {
		close(w.entered)
	}
	<-w.wake
	w.mu.Lock()
	w.blocked = false
	w.mu.Unlock()
	return 0, errors.New("write deadline passed")
}
func (w *stalledWriter) SetWriteDeadline(t time.Time) error {
	if !t.IsZero() && time.Until(t) <= 0 {
		w.mu.Lock()
		defer w.mu.Unlock()
		select {
		case <-w.wake:
		default:
			close(w.wake)
		}
	}
	return nil
}
func (w *stalledWriter) stuck() bool { w.mu.Lock(); defer w.mu.Unlock(); return w.blocked }

// A frame that waits behind a heartbeat stuck on a stalled client gives up
// when its ctx ends, not when the heartbeat's write does; Close ends the
// heartbeat's write.
func TestSSEFrameDoesNotWaitOutStuckHeartbeat(t *testing.T) {
	w := newStalledWriter()
	sse, err := streaming.NewSSE(w, &streaming.SSEOptions{Heartbeat: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	<-w.entered // the heartbeat's write, stuck for up to a second
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sse.WriteFrame(ctx, [][]byte{[]byte(`{"type":"pong"}`)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteFrame: %v, want context.Canceled", err)
	}
	if !w.stuck() {
		t.Fatal("WriteFrame returned only once the heartbeat's write had ended")
	}
	if err := sse.Close(0, ""); err != nil {
		t.Fatal(err)
	}
	if w.stuck() {
		t.Fatal("Close returned with the heartbeat's write still under way")
	}
}

// recordingWriter is a flushable ResponseWriter that keeps what is written
// and the buffers it was handed.
type recordingWriter struct {
	h    http.Header
	out  bytes.Buffer
	args [][]byte
}

func (w *recordingWriter) Header() http.Header { return w.h }
func (w *recordingWriter) WriteHeader(int)     {}
func (w *recordingWriter) Flush()              {}
func (w *recordingWriter) Write(b []byte) (int, error) {
	w.args = append(w.args, b)
	return w.out.Write(b)
}

// WriteFrame writes what AppendSSE makes of each frame, in order, and hands
// a large frame with no line break to the connection as it is, not copied.
func TestSSEWriteFrameLargeFrameNotCopied(t *testing.T) {
	w := &recordingWriter{h: http.Header{}}
	sse, err := streaming.NewSSE(w, &streaming.SSEOptions{Heartbeat: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer sse.Close(0, "")
	big := []byte(`{"type":"turn","turn":{"content":"` + strings.Repeat("x", 200<<10) + `"}}`)
	bigWithBreak := []byte("{\"type\":\"turn\",\n\"a\":\"" + strings.Repeat("y", 100<<10) + "\"}")
	small := []byte(`{"type":"delta","generation":"g_1","offset":3,"text":"Hi"}`)
	w.out.Reset()
	frames := [][]byte{small, big, small, bigWithBreak, big}
	if err := sse.WriteFrame(context.Background(), frames); err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, f := range frames {
		want = streaming.AppendSSE(want, f)
	}
	if !bytes.Equal(w.out.Bytes(), want) {
		t.Fatalf("written %d bytes, not what AppendSSE makes (%d bytes)", w.out.Len(), len(want))
	}
	direct := 0
	for _, a := range w.args {
		if len(a) > 0 && &a[0] == &big[0] {
			direct++
		}
	}
	if direct != 2 {
		t.Fatalf("the large frame was handed over as it is %d times, want 2", direct)
	}
}

// A heartbeat that cannot be written within its period (the client stopped
// reading) is reported to OnBroken, and later frames fail at once: the
// handler can end a stream nothing else would end while no event comes.
func TestSSEBrokenHeartbeatIsReported(t *testing.T) {
	w := newStalledWriter()
	broken := make(chan error, 1)
	sse, err := streaming.NewSSE(w, &streaming.SSEOptions{Heartbeat: 20 * time.Millisecond, OnBroken: func(err error) { broken <- err }})
	if err != nil {
		t.Fatal(err)
	}
	defer sse.Close(0, "")
	if err := <-broken; err == nil {
		t.Fatal("OnBroken got a nil error")
	}
	if err := sse.WriteFrame(context.Background(), [][]byte{[]byte(`{"type":"pong"}`)}); err == nil {
		t.Fatal("WriteFrame succeeded on a stream whose heartbeat failed")
	}
	if w.stuck() {
		t.Fatal("WriteFrame wrote to a stream whose heartbeat failed")
	}
}

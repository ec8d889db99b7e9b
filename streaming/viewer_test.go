package streaming_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sessiond/streaming"
)

// blockUntil returns a write hook that blocks every write until release is
// closed (or the write's ctx ends), and counts the writes that started.
func blockUntil(release <-chan struct{}, started *atomic.Int64) func(context.Context, [][]byte) error {
	return func(ctx context.Context, _ [][]byte) error {
		started.Add(1)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

func appendWords(tb testing.TB, l *streaming.Log, n, size int) string {
	tb.Helper()
	var full strings.Builder
	for i := range n {
		w := fmt.Sprintf("%0*d ", size-1, i)
		mustAppend(tb, l, w)
		full.WriteString(w)
	}
	return full.String()
}

// TestSlowViewerDropped: a viewer whose sink is stuck overflows and is
// dropped with resume_required carrying the last offset handed to its sink,
// then resumes from it to the end; the producer and a fast viewer never
// notice.
func TestSlowViewerDropped(t *testing.T) {
	hub := streaming.NewHub(nil)
	defer hub.Close()

	release := make(chan struct{})
	var started atomic.Int64
	slow := &recSink{write: blockUntil(release, &started)}
	vs := streaming.NewViewer(slow, &streaming.ViewerOptions{
		MaxBuffered:   1024,
		FlushInterval: 0,
		DropTimeout:   time.Hour, // the stuck write completes when released
		WriteTimeout:  -1,
	})
	defer vs.Close()
	fast := &recSink{}
	vf := streaming.NewViewer(fast, nil)
	defer vf.Close()
	for _, v := range []*streaming.Viewer{vs, vf} {
		if err := hub.AddViewer(v, nil); err != nil {
			t.Fatal(err)
		}
	}

	l, err := hub.StartGeneration("g_1")
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "first ")
	checkFor(t, "the slow viewer's first write", func() bool { return started.Load() == 1 })
	// 100 × 100 bytes: ten times the slow viewer's buffer. If Append waited
	// for the stuck sink, the test would hang here.
	full := "first " + appendWords(t, l, 100, 100)
	mustFinish(t, l)

	if err := vs.Err(); !errors.Is(err, streaming.ErrSlowViewer) {
		t.Fatalf("slow viewer Err=%v, want ErrSlowViewer", err)
	}
	checkFor(t, "the fast viewer's done", func() bool { f, _ := fast.snapshot(); return hasFinalRaw(f) })
	if got := textOf(t, fast, "g_1", 0); got != full {
		t.Fatalf("fast viewer text %q, want %q", got, full)
	}
	if err := vf.Err(); err != nil {
		t.Fatalf("fast viewer Err=%v", err)
	}

	close(release)
	<-vs.Done()
	if code, closed := slow.closeCode(); !closed || code != streaming.CloseResumeRequired {
		t.Fatalf("slow sink closed=%v code=%d, want %d", closed, code, streaming.CloseResumeRequired)
	}
	frames, _ := slow.snapshot()
	if len(frames) < 2 {
		t.Fatalf("slow sink got %d frames, want deltas then resume_required", len(frames))
	}
	rr := decode(t, frames[len(frames)-1])
	if rr.Type != streaming.TypeResumeRequired || rr.Generation != "g_1" {
		t.Fatalf("last frame %s, want resume_required for g_1", frames[len(frames)-1])
	}
	// Everything before it is the deltas 1..after, in order.
	var seen strings.Builder
	for i, f := range frames[:len(frames)-1] {
		m := decode(t, f)
		if m.Type != streaming.TypeDelta || m.Offset != int64(i+1) {
			t.Fatalf("slow frame %d: %s", i, f)
		}
		seen.WriteString(m.Text)
	}
	if got, want := rr.After, int64(len(frames)-1); got != want {
		t.Fatalf("resume_required after=%d, want %d (the last offset handed to the sink)", got, want)
	}

	// Resume from there: the rest, exactly once.
	again := &recSink{}
	v2 := streaming.NewViewer(again, nil)
	defer v2.Close()
	if err := hub.AddViewer(v2, &streaming.Position{Generation: "g_1", After: rr.After}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, "the resumed viewer's done", func() bool { f, _ := again.snapshot(); return hasFinalRaw(f) })
	if got := seen.String() + textOf(t, again, "g_1", rr.After); got != full {
		t.Fatalf("slow viewer text across the drop %q, want %q", got, full)
	}
}

// TestProducerNeverBlocks: a sink that never returns (until cancelled)
// neither blocks the producer nor keeps the viewer alive: it is dropped and
// its stuck write cancelled after DropTimeout. Either property breaking
// would block rather than err, so each wait has a deadline (hangDeadline)
// that turns a hang into a failure saying which one broke.
func TestProducerNeverBlocks(t *testing.T) {
	never := make(chan struct{})
	var started atomic.Int64
	sink := &recSink{write: blockUntil(never, &started)}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{MaxBuffered: 512, DropTimeout: time.Millisecond, WriteTimeout: -1})
	defer func() {
		if !returnsWithin(func() { v.Close() }) {
			t.Errorf("Viewer.Close still blocked after %v", hangDeadline)
		}
	}()
	l := streaming.NewLog("g_1", nil)
	if err := l.Subscribe(v, 0); err != nil {
		t.Fatal(err)
	}
	// Not appendWords: its Fatalf must not run off the test's goroutine.
	var appendErr error
	produced := returnsWithin(func() {
		for i := range 200 {
			if _, appendErr = l.AppendText(fmt.Sprintf("%063d ", i)); appendErr != nil {
				return
			}
		}
		_, appendErr = l.Finish(testDone)
	})
	if !produced {
		t.Fatalf("the producer is still blocked after %v: a viewer whose sink never returns held up Append", hangDeadline)
	}
	if appendErr != nil {
		t.Fatal(appendErr)
	}
	select {
	case <-v.Done():
	case <-time.After(hangDeadline):
		t.Fatalf("the viewer is still running %v after its sink stopped returning (Err=%v): it was never dropped", hangDeadline, v.Err())
	}
	if err := v.Err(); !errors.Is(err, streaming.ErrSlowViewer) {
		t.Fatalf("Err=%v, want ErrSlowViewer", err)
	}
	if code, closed := sink.closeCode(); !closed || code != streaming.CloseResumeRequired {
		t.Fatalf("sink closed=%v code=%d, want %d", closed, code, streaming.CloseResumeRequired)
	}
	if got := l.Subscribers(); got != 0 {
		t.Fatalf("Subscribers=%d after the drop, want 0", got)
	}
	if err := v.Send([]byte(`{"type":"pong"}`)); !errors.Is(err, streaming.ErrSlowViewer) {
		t.Fatalf("Send after drop err=%v, want ErrSlowViewer", err)
	}
}

// hangDeadline is how long returnsWithin waits: long enough for any loaded
// machine, so that reaching it means a hang, not slowness.
const hangDeadline = 20 * time.Second

// returnsWithin runs fn on a goroutine and reports whether it returned
// within hangDeadline. One that does not is left running: it is blocked
// for good, and the test fails. fn must not call t.Fatal.
func returnsWithin(fn func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
		return true
	case <-time.After(hangDeadline):
		return false
	}
}

// TestOversizedMessageAccepted: one message larger than MaxBuffered still
// goes through when nothing else is queued (a large done turn must not
// drop every viewer).
func TestOversizedMessageAccepted(t *testing.T) {
	sink := &recSink{}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{MaxBuffered: 16})
	defer v.Close()
	big := []byte(`{"type":"turn","turn":{"content":"` + strings.Repeat("x", 1000) + `"}}`)
	if err := v.Send(big); err != nil {
		t.Fatal(err)
	}
	checkFor(t, "the big message", func() bool { return sink.count() == 1 })
	if err := v.Err(); err != nil {
		t.Fatalf("Err=%v", err)
	}
}

// TestBacklogMessagesNotCountedAsSlow: a replay the client asked for
// (SendBacklog) may queue past MaxBuffered while the sink is busy, in
// order; the same bytes sent live drop the viewer.
func TestBacklogMessagesNotCountedAsSlow(t *testing.T) {
	for _, backlog := range []bool{true, false} {
		release := make(chan struct{})
		var started atomic.Int64
		sink := &recSink{write: blockUntil(release, &started)}
		v := streaming.NewViewer(sink, &streaming.ViewerOptions{MaxBuffered: 100, FlushInterval: 0})
		if err := v.Send([]byte(`{"type":"ready"}`)); err != nil {
			t.Fatal(err)
		}
		checkFor(t, "the first write", func() bool { return started.Load() == 1 })
		var msgs [][]byte
		for i := range 10 {
			msgs = append(msgs, fmt.Appendf(nil, `{"type":"turn","turn":{"id":%d,"content":"%s"}}`, i, strings.Repeat("x", 40)))
		}
		if backlog {
			if err := v.SendBacklog(msgs...); err != nil {
				t.Fatal(err)
			}
		} else {
			for _, m := range msgs {
				v.Send(m)
			}
		}
		close(release)
		if !backlog {
			checkFor(t, "the live sender dropped", func() bool { return errors.Is(v.Err(), streaming.ErrSlowViewer) })
			v.Close()
			continue
		}
		checkFor(t, "every replayed message", func() bool { return sink.count() == 11 })
		frames, _ := sink.snapshot()
		for i, f := range frames[1:] {
			if string(f) != string(msgs[i]) {
				t.Fatalf("frame %d: %s, want %s", i+1, f, msgs[i])
			}
		}
		if err := v.Err(); err != nil {
			t.Fatalf("replay dropped the viewer: %v", err)
		}
		v.Close()
	}
}

// TestCoalescingWhileBusy: events appended while the writer is busy are
// handed to the sink together.
func TestCoalescingWhileBusy(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int64
	gate := blockUntil(release, &started)
	sink := &recSink{write: func(ctx context.Context, f [][]byte) error {
		if started.Load() == 0 {
			return gate(ctx, f)
		}
		started.Add(1)
		return nil
	}}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{FlushInterval: time.Millisecond})
	defer v.Close()
	l := streaming.NewLog("g_1", nil)
	if err := l.Subscribe(v, 0); err != nil {
		t.Fatal(err)
	}
	const n = 500
	mustAppend(t, l, "0 ")
	checkFor(t, "the first write", func() bool { return started.Load() == 1 })
	full := "0 " + appendWords(t, l, n-1, 4)
	mustFinish(t, l)
	close(release)
	checkFor(t, "all events", func() bool { return sink.count() == n+1 })
	_, calls := sink.snapshot()
	if calls > 3 {
		t.Fatalf("%d WriteFrame calls for %d events, want at most 3", calls, n+1)
	}
	if got := textOf(t, sink, "g_1", 0); got != full {
		t.Fatalf("text %q, want %q", got, full)
	}
}

// TestCoalescingByInterval: a burst of appends reaches the sink in far
// fewer writes than events, because the writer wakes at most once per
// FlushInterval.
func TestCoalescingByInterval(t *testing.T) {
	sink := &recSink{}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{FlushInterval: 50 * time.Millisecond, FlushBytes: 1 << 30})
	defer v.Close()
	l := streaming.NewLog("g_1", nil)
	if err := l.Subscribe(v, 0); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	full := appendWords(t, l, n, 8)
	mustFinish(t, l)
	checkFor(t, "all events", func() bool { return sink.count() == n+1 })
	_, calls := sink.snapshot()
	t.Logf("%d events in %d WriteFrame calls", n+1, calls)
	if calls > n/20 {
		t.Fatalf("%d WriteFrame calls for %d events, want far fewer", calls, n+1)
	}
	if got := textOf(t, sink, "g_1", 0); got != full {
		t.Fatalf("text mismatch")
	}
}

// TestFlushBytesWritesEarly: with an interval too long to ever elapse in a
// test, events still go out once FlushBytes are queued.
func TestFlushBytesWritesEarly(t *testing.T) {
	sink := &recSink{}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{FlushInterval: time.Hour, FlushBytes: 1024})
	defer v.Close()
	l := streaming.NewLog("g_1", nil)
	if err := l.Subscribe(v, 0); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "first") // a quiet viewer writes at once
	checkFor(t, "the first event", func() bool { return sink.count() == 1 })
	appendWords(t, l, 100, 20) // ~8 KiB: past FlushBytes
	checkFor(t, "the events past FlushBytes", func() bool { return sink.count() > 1 })
}

func TestSendAndCloseWith(t *testing.T) {
	sink := &recSink{}
	v := streaming.NewViewer(sink, nil)
	for _, m := range []string{`{"type":"ready"}`, `{"type":"pong"}`} {
		if err := v.Send([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.CloseWith(4001, "bye"); err != nil {
		t.Fatal(err)
	}
	frames, _ := sink.snapshot()
	if len(frames) != 2 || string(frames[1]) != `{"type":"pong"}` {
		t.Fatalf("frames %q", frames)
	}
	if code, closed := sink.closeCode(); !closed || code != 4001 {
		t.Fatalf("closed=%v code=%d", closed, code)
	}
	select {
	case <-v.Done():
	default:
		t.Fatal("Done not closed after CloseWith")
	}
	if err := v.Send([]byte(`{}`)); !errors.Is(err, streaming.ErrViewerClosed) {
		t.Fatalf("Send after close err=%v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestCloseCancelsStuckWrite: Close does not wait for a client that does
// not read.
func TestCloseCancelsStuckWrite(t *testing.T) {
	never := make(chan struct{})
	var started atomic.Int64
	sink := &recSink{write: blockUntil(never, &started)}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{WriteTimeout: -1})
	if err := v.Send([]byte(`{"type":"pong"}`)); err != nil {
		t.Fatal(err)
	}
	checkFor(t, "the stuck write", func() bool { return started.Load() == 1 })
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if code, closed := sink.closeCode(); !closed || code != streaming.CloseGoingAway {
		t.Fatalf("closed=%v code=%d", closed, code)
	}
	if !errors.Is(v.Err(), streaming.ErrViewerClosed) {
		t.Fatalf("Err=%v", v.Err())
	}
}

func TestWriteErrorStopsViewer(t *testing.T) {
	boom := errors.New("connection reset")
	sink := &recSink{write: func(context.Context, [][]byte) error { return boom }}
	v := streaming.NewViewer(sink, nil)
	defer v.Close()
	if err := v.Send([]byte(`{"type":"pong"}`)); err != nil {
		t.Fatal(err)
	}
	<-v.Done()
	if !errors.Is(v.Err(), boom) {
		t.Fatalf("Err=%v, want %v", v.Err(), boom)
	}
	if code, _ := sink.closeCode(); code != streaming.CloseInternalError {
		t.Fatalf("code=%d", code)
	}
}

func TestCloseOnFinal(t *testing.T) {
	sink := &recSink{}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{CloseOnFinal: true})
	defer v.Close()
	l := streaming.NewLog("g_1", nil)
	mustAppend(t, l, "a")
	if err := l.Subscribe(v, 0); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "b")
	mustFinish(t, l)
	<-v.Done()
	if got := textOf(t, sink, "g_1", 0); got != "ab" {
		t.Fatalf("text %q", got)
	}
	if code, _ := sink.closeCode(); code != streaming.CloseNormal {
		t.Fatalf("code=%d", code)
	}
}

// A CloseOnFinal viewer that resumes an ended generation at or past its
// final event (an SSE client reconnecting after done) gets what is left,
// nothing at the end, and closes: no final event is coming to end it.
func TestCloseOnFinalResumedAtTheEnd(t *testing.T) {
	l := streaming.NewLog("g_1", nil)
	mustAppend(t, l, "a")
	final := mustFinish(t, l)
	for _, c := range []struct {
		after  int64
		frames int
	}{{final.Offset - 1, 1}, {final.Offset, 0}} {
		sink := &recSink{}
		v := streaming.NewViewer(sink, &streaming.ViewerOptions{CloseOnFinal: true})
		v.Send([]byte(`{"type":"turn"}`)) // what the SSE handler sends first
		if err := l.Subscribe(v, c.after); err != nil {
			t.Fatal(err)
		}
		select {
		case <-v.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("after %d: the viewer is still open", c.after)
		}
		frames, _ := sink.snapshot()
		if len(frames) != 1+c.frames || string(frames[0]) != `{"type":"turn"}` {
			t.Errorf("after %d: %d frames, want %d: %q", c.after, len(frames), 1+c.frames, frames)
		}
		if code, closed := sink.closeCode(); !closed || code != streaming.CloseNormal {
			t.Errorf("after %d: closed %v with %d", c.after, closed, code)
		}
		v.Close()
	}
}

// textOf checks that sink got the events of gen after offset after, in
// order, with no gap, and returns their concatenated text.
func textOf(tb testing.TB, sink *recSink, gen string, after int64) string {
	tb.Helper()
	frames, _ := sink.snapshot()
	var b strings.Builder
	for _, f := range frames {
		m := decode(tb, f)
		if m.Generation != gen {
			continue
		}
		if m.Offset != after+1 {
			tb.Fatalf("offset %d after %d", m.Offset, after)
		}
		after = m.Offset
		b.WriteString(m.Text)
	}
	return b.String()
}

// A write that takes longer than WriteTimeout fails the viewer with
// ErrWriteTimeout and closes it; writes that each take less do not, however
// long they go on together.
func TestViewerWriteTimeout(t *testing.T) {
	// Wide margins: a loaded machine may stretch a 50 ms write a lot.
	const timeout = 400 * time.Millisecond
	slow := &recSink{write: func(ctx context.Context, _ [][]byte) error {
		select {
		case <-time.After(50 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}}
	v := streaming.NewViewer(slow, &streaming.ViewerOptions{WriteTimeout: timeout})
	defer v.Close()
	const n = 12 // more than a timeout's worth of writes, each an eighth of one
	for i := range n {
		if err := v.Send([]byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
		checkFor(t, "the write", func() bool { return slow.count() == i+1 })
		if i == n/2 {
			time.Sleep(timeout) // a quiet spell between writes
		}
	}
	if err := v.Err(); err != nil {
		t.Fatalf("writes under the timeout failed the viewer: %v", err)
	}

	stuck := &recSink{write: blockUntil(make(chan struct{}), new(atomic.Int64))}
	v2 := streaming.NewViewer(stuck, &streaming.ViewerOptions{WriteTimeout: timeout})
	defer v2.Close()
	v2.Send([]byte(`{"n":0}`))
	select {
	case <-v2.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a stuck write did not time out")
	}
	if err := v2.Err(); !errors.Is(err, streaming.ErrWriteTimeout) {
		t.Fatalf("Err = %v, want ErrWriteTimeout", err)
	}
}

// TestReplayReplacesQueuedReplay: a client that asks for a replay again and
// again without reading holds one replay queued, not one per request: a
// replay replaces what an earlier one has yet to hand to the sink. (Each
// replay used to queue on top of the others, without bound.)
func TestReplayReplacesQueuedReplay(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int64
	sink := &recSink{write: blockUntil(release, &started)}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{FlushInterval: 0, WriteTimeout: -1})
	defer v.Close()
	ready := []byte(`{"type":"ready"}`)
	if err := v.Send(ready); err != nil {
		t.Fatal(err)
	}
	checkFor(t, "the first write", func() bool { return started.Load() == 1 })
	const replays, turns, size = 40, 8, 64 << 10
	var last [][]byte
	most := 0
	for r := range replays {
		last = nil
		for i := range turns {
			last = append(last, fmt.Appendf(nil, `{"type":"turn","turn":{"id":%d,"replay":%d,"content":"%s"}}`, i+1, r, strings.Repeat("x", size)))
		}
		if err := v.Send(ready); err != nil { // each hello answers ready, then replays
			t.Fatal(err)
		}
		if err := v.SendBacklog(last...); err != nil {
			t.Fatalf("replay %d: %v", r, err)
		}
		most = max(most, streaming.Queued(v))
	}
	if limit := replays*len(ready) + turns*(size+100); most > limit {
		t.Fatalf("%d bytes queued after %d replays of %d bytes each, want one replay's worth (at most %d)", most, replays, turns*size, limit)
	}
	close(release)
	checkFor(t, "the last replay", func() bool { return sink.count() == 1+replays+turns })
	frames, _ := sink.snapshot()
	for i, f := range frames[:1+replays] {
		if string(f) != string(ready) {
			t.Fatalf("frame %d: %.60s, want ready", i, f)
		}
	}
	for i, f := range frames[1+replays:] {
		if string(f) != string(last[i]) {
			t.Fatalf("replayed frame %d: %.60s, want the last replay's %.60s", i, f, last[i])
		}
	}
	if err := v.Err(); err != nil {
		t.Fatalf("Err=%v", err)
	}
}

package streaming_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"sessiond/streaming"
)

func TestHubFanOutAndBroadcast(t *testing.T) {
	hub := streaming.NewHub(nil)
	defer hub.Close()
	const n = 50
	sinks := make([]*recSink, n)
	for i := range sinks {
		sinks[i] = &recSink{}
		if err := hub.AddViewer(streaming.NewViewer(sinks[i], nil), nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := hub.Viewers(); got != n {
		t.Fatalf("Viewers=%d, want %d", got, n)
	}
	if got := hub.Broadcast([]byte(`{"type":"turn","turn":{"id":1}}`)); got != n {
		t.Fatalf("Broadcast reached %d, want %d", got, n)
	}
	l, err := hub.StartGeneration("g_1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hub.StartGeneration("g_1"); !errors.Is(err, streaming.ErrGenerationExists) {
		t.Fatalf("second StartGeneration err=%v, want ErrGenerationExists", err)
	}
	mustAppend(t, l, "Hel")
	mustAppend(t, l, "lo")
	mustFinish(t, l)
	hub.Broadcast([]byte(`{"type":"turn","turn":{"id":2}}`))
	for i, s := range sinks {
		checkFor(t, "every frame", func() bool { return s.count() == 5 })
		frames, _ := s.snapshot()
		types := ""
		for _, f := range frames {
			types += decode(t, f).Type + " "
		}
		if got, want := types, "turn delta delta done turn "; got != want {
			t.Fatalf("viewer %d got %q, want %q", i, got, want)
		}
		if got := textOf(t, s, "g_1", 0); got != "Hello" {
			t.Fatalf("viewer %d text %q", i, got)
		}
	}
}

// TestHubJoinMidGeneration: a viewer added without resume follows running
// generations from the next event; with resume it gets the backlog first.
func TestHubJoinMidGeneration(t *testing.T) {
	hub := streaming.NewHub(nil)
	defer hub.Close()
	l, err := hub.StartGeneration("g_1")
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "a")
	mustAppend(t, l, "b")

	liveOnly := &recSink{}
	vl := streaming.NewViewer(liveOnly, nil)
	if err := hub.AddViewer(vl, nil); err != nil {
		t.Fatal(err)
	}
	resumed := &recSink{}
	vr := streaming.NewViewer(resumed, nil)
	if err := hub.AddViewer(vr, &streaming.Position{Generation: "g_1", After: 1}); err != nil {
		t.Fatal(err)
	}
	if pos, ok := vl.Position("g_1"); !ok || pos != 2 {
		t.Fatalf("live-only Position=%d,%v, want 2", pos, ok)
	}
	mustAppend(t, l, "c")
	mustFinish(t, l)
	checkFor(t, "done", func() bool {
		a, _ := liveOnly.snapshot()
		b, _ := resumed.snapshot()
		return hasFinalRaw(a) && hasFinalRaw(b)
	})
	if got := textOf(t, liveOnly, "g_1", 2); got != "c" {
		t.Fatalf("live-only text %q, want %q", got, "c")
	}
	if got := textOf(t, resumed, "g_1", 1); got != "bc" {
		t.Fatalf("resumed text %q, want %q", got, "bc")
	}
}

func TestHubResumeErrors(t *testing.T) {
	hub := streaming.NewHub(&streaming.HubOptions{Retention: 1})
	v := streaming.NewViewer(&recSink{}, nil)
	defer v.Close()
	if err := hub.Resume(v, "g_x", 0); !errors.Is(err, streaming.ErrGenerationNotFound) {
		t.Fatalf("Resume unknown err=%v", err)
	}
	err := hub.AddViewer(v, &streaming.Position{Generation: "g_x"})
	if !errors.Is(err, streaming.ErrGenerationNotFound) {
		t.Fatalf("AddViewer with unknown resume err=%v", err)
	}
	if got := hub.Viewers(); got != 1 {
		t.Fatalf("viewer not added despite failed resume: Viewers=%d", got)
	}
	l, _ := hub.StartGeneration("g_1")
	mustAppend(t, l, "a")
	if err := hub.Resume(v, "g_1", 5); !errors.Is(err, streaming.ErrOffsetOutOfRange) {
		t.Fatalf("Resume beyond the end err=%v", err)
	}
	if !hub.Retained("g_1") {
		t.Fatal("running generation not retained")
	}
	mustFinish(t, l)
	checkFor(t, "the log to expire", func() bool { return !hub.Retained("g_1") })
	if err := hub.Resume(v, "g_1", 0); !errors.Is(err, streaming.ErrGenerationNotFound) {
		t.Fatalf("Resume expired err=%v", err)
	}
	// A released id can be started again.
	if _, err := hub.StartGeneration("g_1"); err != nil {
		t.Fatalf("StartGeneration after expiry: %v", err)
	}
	if err := hub.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.StartGeneration("g_2"); !errors.Is(err, streaming.ErrHubClosed) {
		t.Fatalf("StartGeneration after Close err=%v", err)
	}
	if err := hub.AddViewer(streaming.NewViewer(&recSink{}, nil), nil); !errors.Is(err, streaming.ErrHubClosed) {
		t.Fatalf("AddViewer after Close err=%v", err)
	}
	if _, err := l.AppendText("x"); err == nil {
		t.Fatal("Append after hub Close: no error")
	}
}

// TestResumeRestartsFollowedGeneration: resuming a generation the viewer
// already follows discards what was queued but not written, and restarts
// after the given offset, with no duplicate from the queue.
func TestResumeRestartsFollowedGeneration(t *testing.T) {
	hub := streaming.NewHub(nil)
	defer hub.Close()
	release := make(chan struct{})
	var started atomic.Int64
	sink := &recSink{write: blockUntil(release, &started)}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{FlushInterval: 0})
	defer v.Close()
	if err := hub.AddViewer(v, nil); err != nil {
		t.Fatal(err)
	}
	l, _ := hub.StartGeneration("g_1")
	mustAppend(t, l, "a")
	checkFor(t, "the first write", func() bool { return started.Load() == 1 })
	mustAppend(t, l, "b") // queued behind the stuck write
	mustAppend(t, l, "c")
	// The client says it saw offset 1 only: 2 and 3 again, once.
	if err := hub.Resume(v, "g_1", 1); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "d")
	mustFinish(t, l)
	close(release)
	checkFor(t, "done", func() bool { f, _ := sink.snapshot(); return hasFinalRaw(f) })
	if got := textOf(t, sink, "g_1", 0); got != "abcd" {
		t.Fatalf("text %q, want %q", got, "abcd")
	}
}

func TestHubRemoveViewer(t *testing.T) {
	hub := streaming.NewHub(nil)
	defer hub.Close()
	sink := &recSink{}
	v := streaming.NewViewer(sink, nil)
	defer v.Close()
	if err := hub.AddViewer(v, nil); err != nil {
		t.Fatal(err)
	}
	l, _ := hub.StartGeneration("g_1")
	hub.RemoveViewer(v)
	if got := l.Subscribers(); got != 0 {
		t.Fatalf("Subscribers=%d after RemoveViewer", got)
	}
	mustAppend(t, l, "a")
	if got := hub.Broadcast([]byte(`{"type":"turn"}`)); got != 0 {
		t.Fatalf("Broadcast reached %d after RemoveViewer", got)
	}
	if err := v.Send([]byte(`{"type":"pong"}`)); err != nil {
		t.Fatal(err)
	}
	checkFor(t, "pong", func() bool { return sink.count() == 1 })
}

// TestNoGoroutinesWhenIdle: a thousand connected, idle viewers park no
// goroutine, and closing the hub leaves none behind.
func TestNoGoroutinesWhenIdle(t *testing.T) {
	baseline := runtime.NumGoroutine()
	hub := streaming.NewHub(nil)
	const n = 1000
	sinks := make([]*recSink, n)
	for i := range sinks {
		sinks[i] = &recSink{}
		if err := hub.AddViewer(streaming.NewViewer(sinks[i], nil), nil); err != nil {
			t.Fatal(err)
		}
	}
	l, _ := hub.StartGeneration("g_1")
	for range 20 {
		mustAppend(t, l, "tok ")
	}
	mustFinish(t, l)
	for _, s := range sinks {
		checkFor(t, "every event", func() bool { return s.count() == 21 })
	}
	checkFor(t, "idle viewers to park no goroutine", func() bool { return runtime.NumGoroutine() <= baseline })
	if err := hub.Close(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, "no goroutine left after Close", func() bool { return runtime.NumGoroutine() <= baseline })
	for i, s := range sinks {
		if code, closed := s.closeCode(); !closed || code != streaming.CloseGoingAway {
			t.Fatalf("sink %d closed=%v code=%d", i, closed, code)
		}
	}
}

// TestAddViewerResumePastEnd: a resume position past a generation's last
// event is refused with ErrOffsetOutOfRange, and the viewer, still added
// to the hub, does not follow that generation: it gets none of its events,
// but broadcasts and other generations still reach it. (It used to be
// added following the generation live from its end, as if the position
// were right.)
func TestAddViewerResumePastEnd(t *testing.T) {
	hub := streaming.NewHub(nil)
	defer hub.Close()
	l, err := hub.StartGeneration("g_1")
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "a")
	sink := &recSink{}
	v := streaming.NewViewer(sink, nil)
	defer v.Close()
	if err := hub.AddViewer(v, &streaming.Position{Generation: "g_1", After: 99}); !errors.Is(err, streaming.ErrOffsetOutOfRange) {
		t.Fatalf("AddViewer past the end err=%v, want ErrOffsetOutOfRange", err)
	}
	if got := hub.Viewers(); got != 1 {
		t.Fatalf("Viewers=%d, want 1", got)
	}
	if got := l.Subscribers(); got != 0 {
		t.Fatalf("g_1 has %d subscribers, want none: the viewer's position in it is wrong", got)
	}
	mustAppend(t, l, "b")
	mustFinish(t, l)
	l2, err := hub.StartGeneration("g_2")
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l2, "c")
	hub.Broadcast([]byte(`{"type":"pong"}`))
	checkFor(t, "the broadcast", func() bool {
		f, _ := sink.snapshot()
		return len(f) > 0 && decode(t, f[len(f)-1]).Type == "pong"
	})
	frames, _ := sink.snapshot()
	for _, f := range frames {
		if m := decode(t, f); m.Generation == "g_1" {
			t.Fatalf("got %s of g_1", f)
		}
	}
	if got := textOf(t, sink, "g_2", 0); got != "c" {
		t.Fatalf("g_2 text %q, want %q", got, "c")
	}
}

// CloseIfIdle leaves a hub that holds a running or retained log, or an
// open viewer, and closes one that holds neither (forgetting viewers that
// stopped).
func TestHubCloseIfIdle(t *testing.T) {
	hub := streaming.NewHub(&streaming.HubOptions{Retention: -1})
	defer hub.Close()
	l, err := hub.StartGeneration("g_1")
	if err != nil {
		t.Fatal(err)
	}
	if hub.CloseIfIdle() {
		t.Fatal("CloseIfIdle closed a hub holding a running generation's log")
	}
	if _, err := l.AppendText("still running"); err != nil {
		t.Fatalf("Append after CloseIfIdle: %v", err)
	}
	mustFinish(t, l)
	l.Release()
	v := streaming.NewViewer(&recSink{}, nil)
	if err := hub.AddViewer(v, nil); err != nil {
		t.Fatal(err)
	}
	if hub.CloseIfIdle() {
		t.Fatal("CloseIfIdle closed a hub holding an open viewer")
	}
	v.Close()
	if !hub.CloseIfIdle() {
		t.Fatal("CloseIfIdle kept a hub with no log and only a stopped viewer")
	}
	if _, err := hub.StartGeneration("g_2"); !errors.Is(err, streaming.ErrHubClosed) {
		t.Fatalf("StartGeneration after CloseIfIdle err=%v, want ErrHubClosed", err)
	}
}

// Closing a hub (the server stopping) writes what is queued to each viewer
// before it closes it: a generation's final event, sent just before, is
// not lost behind a write under way.
func TestHubCloseWritesWhatIsQueued(t *testing.T) {
	hub := streaming.NewHub(nil)
	slow := make(chan struct{})
	sink := &recSink{write: func(ctx context.Context, _ [][]byte) error {
		select {
		case <-slow: // the first write waits until Close has begun
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}}
	if err := hub.AddViewer(streaming.NewViewer(sink, nil), nil); err != nil {
		t.Fatal(err)
	}
	l, err := hub.StartGeneration("g_1")
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "a")
	mustFinish(t, l)
	closed := make(chan error, 1)
	go func() { closed <- hub.Close() }()
	time.Sleep(10 * time.Millisecond) // Close under way, the write blocked
	close(slow)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	frames, _ := sink.snapshot()
	var types []string
	for _, f := range frames {
		types = append(types, decode(t, f).Type)
	}
	if fmt.Sprint(types) != "[delta done]" {
		t.Fatalf("frames before the close: %v, want the delta and done", types)
	}
	if code, ok := sink.closeCode(); !ok || code != streaming.CloseGoingAway {
		t.Fatalf("closed %v with %d, want %d", ok, code, streaming.CloseGoingAway)
	}
}

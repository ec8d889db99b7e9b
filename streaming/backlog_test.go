package streaming_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"sessiond/streaming"
)

// appendMixed appends n deltas to l, text of every kind JSON escapes
// differently with a tool-call part now and then, and returns them as
// Append did.
func appendMixed(tb testing.TB, l *streaming.Log, n int) []streaming.Event {
	tb.Helper()
	texts := []string{"word", " ", "", "é", `"q"`, `a\b`, "line\nbreak", "\x00\x1f", "\xff", "\u2028", "<b>&", "日本"}
	out := make([]streaming.Event, 0, n)
	for i := range n {
		var e streaming.Event
		var err error
		if i%17 == 5 {
			e, err = l.Append(streaming.Delta{ToolCall: &streaming.ToolCallDelta{Index: i % 3, Arguments: texts[i%len(texts)]}})
		} else {
			e, err = l.AppendText(texts[i%len(texts)] + strconv.Itoa(i))
		}
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// checkFrames fails unless frames are the messages of want, byte for byte.
func checkFrames(tb testing.TB, what string, frames [][]byte, want []streaming.Event) {
	tb.Helper()
	if len(frames) != len(want) {
		tb.Fatalf("%s: %d messages, want %d", what, len(frames), len(want))
	}
	for i, f := range frames {
		if string(f) != string(want[i].Data) {
			tb.Fatalf("%s: message %d = %s, want %s", what, i, f, want[i].Data)
		}
	}
}

// firstNoted returns a sink whose writes wait for release (blockUntil),
// noting in first how many messages the first write held.
func firstNoted(release <-chan struct{}, started, first *atomic.Int64) *recSink {
	block := blockUntil(release, started)
	return &recSink{write: func(ctx context.Context, frames [][]byte) error {
		first.CompareAndSwap(0, int64(len(frames)))
		return block(ctx, frames)
	}}
}

func waitDone(tb testing.TB, v *streaming.Viewer) {
	tb.Helper()
	select {
	case <-v.Done():
	case <-time.After(20 * time.Second):
		tb.Fatal("timed out waiting for the viewer to stop")
	}
}

// TestResumeBacklogRebuiltAsWritten: viewers resuming a long finished
// generation from its start, whose clients do not read, hold a batch of
// its compacted events each, not a copy of them all (100,000 messages,
// some 10 MiB); once their clients read, they get every event, byte for
// byte.
func TestResumeBacklogRebuiltAsWritten(t *testing.T) {
	const n, viewers = 100_000, 4
	l := streaming.NewLog("g_0123456789ABCDEFGHJK", &streaming.LogOptions{Retention: -1})
	defer l.Release()
	want := append(appendMixed(t, l, n), mustFinish(t, l))
	events, err := l.Events(0)
	if err != nil {
		t.Fatal(err)
	}
	frames := make([][]byte, len(events))
	for i, e := range events {
		frames[i] = e.Data
	}
	checkFrames(t, "Events(0)", frames, want)
	events, frames = nil, nil

	release := make(chan struct{})
	var started atomic.Int64
	var first [viewers]atomic.Int64 // messages in each viewer's first write
	sinks := make([]*recSink, viewers)
	vs := make([]*streaming.Viewer, viewers)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range viewers {
		sinks[i] = firstNoted(release, &started, &first[i])
		vs[i] = streaming.NewViewer(sinks[i], &streaming.ViewerOptions{CloseOnFinal: true, WriteTimeout: -1})
		defer vs[i].Close()
		if err := l.Subscribe(vs[i], 0); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, "every viewer's first write", func() bool { return started.Load() == viewers })
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d viewers stuck on their first write hold %d bytes", viewers, held)
	if held > viewers<<20 {
		t.Errorf("%d viewers of a %d-event backlog hold %d bytes, want at most 1 MiB each", viewers, n+1, held)
	}
	for i := range viewers {
		if got := first[i].Load(); got > 1024 {
			t.Errorf("viewer %d: first write of %d messages, want a batch", i, got)
		}
	}
	close(release)
	for i, v := range vs {
		waitDone(t, v)
		got, _ := sinks[i].snapshot()
		checkFrames(t, fmt.Sprintf("viewer %d", i), got, want)
	}
}

// TestResumeAtCompactedBoundaries resumes a running and an ended log at
// every kind of offset: before, inside, at the end of and after its
// compacted events, with writes of a few events, while the live events (of
// the running log) queue behind the backlog. Each viewer must get the
// events after its offset, each once, in order, byte for byte.
func TestResumeAtCompactedBoundaries(t *testing.T) {
	for _, ended := range []bool{false, true} {
		build := func() (*streaming.Log, []streaming.Event) {
			l := streaming.NewLog("g_1", &streaming.LogOptions{Retention: -1})
			want := appendMixed(t, l, 300)
			if ended {
				want = append(want, mustFinish(t, l))
			}
			return l, want
		}
		l, want := build()
		base, last := streaming.CompactedThrough(l), int64(len(want))
		if base < 10 || base >= last {
			t.Fatalf("ended %v: compacted through %d of %d", ended, base, last)
		}
		afters := []int64{0, 1, base / 2, base - 1, base, last}
		if base+1 < last {
			afters = append(afters, base+1)
		}
		for _, after := range afters {
			t.Run(fmt.Sprintf("ended=%v/after=%d", ended, after), func(t *testing.T) {
				l, want := build()
				defer l.Release()
				release := make(chan struct{})
				var started atomic.Int64
				sink := &recSink{write: blockUntil(release, &started)}
				v := streaming.NewViewer(sink, &streaming.ViewerOptions{FlushBytes: 256, CloseOnFinal: true})
				defer v.Close()
				if err := l.Subscribe(v, after); err != nil {
					t.Fatal(err)
				}
				if !ended {
					if after < last {
						checkFor(t, "the first write", func() bool { return started.Load() == 1 })
					}
					want = append(want, appendMixed(t, l, 20)...)
					want = append(want, mustFinish(t, l))
				}
				close(release)
				waitDone(t, v)
				frames, calls := sink.snapshot()
				t.Logf("%d messages in %d writes", len(frames), calls)
				checkFrames(t, "resumed", frames, want[after:])
			})
		}
	}
}

// TestResubscribeMidBacklog: subscribing a viewer again while it is
// writing a compacted backlog discards the rest of it: after what was
// already handed to its sink (the first batch), it gets the events after
// the new offset, each once, whether that offset is in the batch handed
// over or beyond it.
func TestResubscribeMidBacklog(t *testing.T) {
	for _, ended := range []bool{false, true} {
		for _, again := range []int64{3, 1500} {
			t.Run(fmt.Sprintf("ended=%v/again=%d", ended, again), func(t *testing.T) {
				l := streaming.NewLog("g_1", &streaming.LogOptions{Retention: -1})
				defer l.Release()
				want := appendMixed(t, l, 2000)
				if ended {
					want = append(want, mustFinish(t, l))
				}
				release := make(chan struct{})
				var started, first atomic.Int64
				sink := firstNoted(release, &started, &first)
				v := streaming.NewViewer(sink, &streaming.ViewerOptions{FlushBytes: 512, CloseOnFinal: true})
				defer v.Close()
				if err := l.Subscribe(v, 0); err != nil {
					t.Fatal(err)
				}
				checkFor(t, "the first write", func() bool { return started.Load() == 1 })
				k := first.Load()
				if k <= again && again < 1000 || k >= 1000 {
					t.Fatalf("first write of %d messages", k)
				}
				if !ended {
					want = append(want, appendMixed(t, l, 5)...) // queued, then discarded
				}
				if err := l.Subscribe(v, again); err != nil {
					t.Fatal(err)
				}
				if !ended {
					want = append(want, appendMixed(t, l, 5)...)
					want = append(want, mustFinish(t, l))
				}
				close(release)
				waitDone(t, v)
				frames, _ := sink.snapshot()
				checkFrames(t, "resubscribed", frames, append(want[:k:k], want[again:]...))
			})
		}
	}
}

// TestSlowViewerDroppedMidBacklog: a viewer dropped while it writes a
// compacted backlog is told to resume after the last event handed to its
// sink, not after the backlog it had yet to rebuild.
func TestSlowViewerDroppedMidBacklog(t *testing.T) {
	l := streaming.NewLog("g_1", &streaming.LogOptions{Retention: -1})
	defer l.Release()
	want := appendMixed(t, l, 3000)
	release := make(chan struct{})
	var started, first atomic.Int64
	sink := firstNoted(release, &started, &first)
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{
		MaxBuffered: 1024, FlushBytes: 512, DropTimeout: time.Hour, WriteTimeout: -1,
	})
	defer v.Close()
	if err := l.Subscribe(v, 0); err != nil {
		t.Fatal(err)
	}
	checkFor(t, "the first write", func() bool { return started.Load() == 1 })
	k := first.Load()
	appendWords(t, l, 20, 100) // live, past MaxBuffered
	if err := v.Err(); !errors.Is(err, streaming.ErrSlowViewer) {
		t.Fatalf("Err=%v, want ErrSlowViewer", err)
	}
	close(release)
	waitDone(t, v)
	frames, _ := sink.snapshot()
	if len(frames) == 0 {
		t.Fatal("no messages")
	}
	rr := decode(t, frames[len(frames)-1])
	if rr.Type != streaming.TypeResumeRequired || rr.After != k {
		t.Fatalf("last message %s, want resume_required after %d", frames[len(frames)-1], k)
	}
	checkFrames(t, "before resume_required", frames[:len(frames)-1], want[:k])
}

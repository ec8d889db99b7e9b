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

// bigTurn is a turn message of about 700 KiB: two of them pass
// DefaultMaxBuffered.
func bigTurn(id int) []byte {
	return fmt.Appendf(nil, `{"type":"turn","turn":{"id":%d,"content":"%s"}}`, id, strings.Repeat("x", 700<<10))
}

// TestBurstBeforeWriteNotSlow: messages broadcast back to back while the
// writer has yet to come for them (here it waits out its flush interval)
// are one burst, written together; they do not make a viewer slow, however
// much more than MaxBuffered they come to.
func TestBurstBeforeWriteNotSlow(t *testing.T) {
	hub := streaming.NewHub(nil)
	defer hub.Close()
	sink := &recSink{}
	// An interval that never elapses in a test, and no early write by
	// size: the burst waits in the queue with no write under way.
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{FlushInterval: time.Hour, FlushBytes: 1 << 30})
	defer v.Close()
	if err := hub.AddViewer(v, nil); err != nil {
		t.Fatal(err)
	}
	if n := hub.Broadcast([]byte(`{"type":"pong"}`)); n != 1 {
		t.Fatalf("Broadcast reached %d viewers", n)
	}
	checkFor(t, "the first message", func() bool { return sink.count() == 1 })
	for i := range 2 {
		if n := hub.Broadcast(bigTurn(i)); n != 1 {
			t.Fatalf("big message %d reached %d viewers, want 1 (Err=%v)", i, n, v.Err())
		}
	}
	if err := v.Err(); err != nil {
		t.Fatalf("Err=%v after a burst with no write under way", err)
	}
	// CloseWith writes what is queued without waiting for the interval.
	if err := v.CloseWith(streaming.CloseNormal, ""); err != nil {
		t.Fatal(err)
	}
	if code, _ := sink.closeCode(); code != streaming.CloseNormal {
		t.Fatalf("closed with %d, want %d", code, streaming.CloseNormal)
	}
	if got := sink.count(); got != 3 {
		t.Fatalf("%d messages written, want 3", got)
	}
}

// TestBurstDuringYoungWriteNotSlow: a burst that arrives while a write is
// under way, but within the flush interval of its start, is no evidence of
// a slow client either: the viewer keeps every message.
func TestBurstDuringYoungWriteNotSlow(t *testing.T) {
	hub := streaming.NewHub(nil)
	defer hub.Close()
	release := make(chan struct{})
	var started atomic.Int64
	sink := &recSink{write: func(ctx context.Context, f [][]byte) error {
		if started.Add(1) == 1 {
			select { // the first write waits until the burst is queued
			case <-release:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		return nil
	}}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{FlushInterval: time.Hour, WriteTimeout: -1})
	defer v.Close()
	if err := hub.AddViewer(v, nil); err != nil {
		t.Fatal(err)
	}
	hub.Broadcast([]byte(`{"type":"pong"}`))
	checkFor(t, "the first write", func() bool { return started.Load() == 1 })
	for i := range 3 {
		if n := hub.Broadcast(bigTurn(i)); n != 1 {
			t.Fatalf("big message %d reached %d viewers, want 1 (Err=%v)", i, n, v.Err())
		}
	}
	close(release)
	checkFor(t, "every message", func() bool { return sink.count() == 4 })
	if err := v.Err(); err != nil {
		t.Fatalf("Err=%v", err)
	}
}

// TestSendBurstAcceptedWhole: the messages of one Send are accepted into
// an empty queue whatever their size, as one message is, even behind a
// write that is stuck (no flush interval: every write is old enough to
// judge); what is queued after them behind that write still counts, and
// the viewer is dropped.
func TestSendBurstAcceptedWhole(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int64
	sink := &recSink{write: blockUntil(release, &started)}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{FlushInterval: 0, DropTimeout: time.Hour, WriteTimeout: -1})
	defer v.Close()
	if err := v.Send([]byte(`{"type":"ready"}`)); err != nil {
		t.Fatal(err)
	}
	checkFor(t, "the first write", func() bool { return started.Load() == 1 })
	if err := v.Send(bigTurn(1), bigTurn(2), bigTurn(3)); err != nil {
		t.Fatalf("one Send of three big turns: %v", err)
	}
	if err := v.Send([]byte(`{"type":"pong"}`)); !errors.Is(err, streaming.ErrSlowViewer) {
		t.Fatalf("a message behind them, the write stuck: err=%v, want ErrSlowViewer", err)
	}
	close(release)
	<-v.Done()
	if code, _ := sink.closeCode(); code != streaming.CloseResumeRequired {
		t.Fatalf("closed with %d, want %d", code, streaming.CloseResumeRequired)
	}
}

// TestMessageLargerThanABurstPasses: one message larger than a whole
// burst (a model's 17 MiB delta, say) behind a small one still queued is
// taken, not held against the viewer; the next one past the burst is.
func TestMessageLargerThanABurstPasses(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int64
	sink := &recSink{write: blockUntil(release, &started)}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{MaxBuffered: 1024, FlushInterval: time.Hour, DropTimeout: time.Hour, WriteTimeout: -1})
	defer v.Close()
	if err := v.Send([]byte(`{"type":"ready"}`)); err != nil {
		t.Fatal(err)
	}
	checkFor(t, "the first write", func() bool { return started.Load() == 1 })
	if err := v.Send([]byte(`{"type":"pong"}`)); err != nil { // queued behind the write
		t.Fatal(err)
	}
	huge := fmt.Appendf(nil, `{"type":"delta","text":"%s"}`, strings.Repeat("z", streaming.MaxBurst*1024+1))
	if err := v.Send(huge); err != nil {
		t.Fatalf("a message larger than a burst behind a small one: %v", err)
	}
	if err := v.Send([]byte(`{"type":"pong"}`)); !errors.Is(err, streaming.ErrSlowViewer) {
		t.Fatalf("a message after it, still queued: err=%v, want ErrSlowViewer", err)
	}
	close(release)
	<-v.Done()
}

// TestStuckViewerDroppedDespiteBursts: a client that stops reading is still
// dropped with bounded memory: behind its stuck write, once the write is
// older than the flush interval, past MaxBuffered; while it is younger,
// with the first message after the one that passes MaxBurst times
// MaxBuffered.
func TestStuckViewerDroppedDespiteBursts(t *testing.T) {
	msg := []byte(`{"type":"turn","turn":{"content":"` + strings.Repeat("y", 64) + `"}}`)
	for _, c := range []struct {
		interval time.Duration
		most     int // bytes queued behind the stuck write when it is dropped
	}{
		// checkFor sleeps a millisecond between sends: from the second
		// one on, the write is older than the interval.
		{time.Millisecond, 1024},
		{time.Hour, streaming.MaxBurst*1024 + len(msg)},
	} {
		never := make(chan struct{})
		var started atomic.Int64
		sink := &recSink{write: blockUntil(never, &started)}
		v := streaming.NewViewer(sink, &streaming.ViewerOptions{MaxBuffered: 1024, FlushInterval: c.interval, DropTimeout: time.Millisecond, WriteTimeout: -1})
		if err := v.Send(msg); err != nil {
			t.Fatal(err)
		}
		checkFor(t, "the stuck write", func() bool { return started.Load() == 1 })
		queued := 0
		checkFor(t, "the drop", func() bool {
			if v.Send(msg) != nil {
				return true
			}
			queued += len(msg)
			return false
		})
		if !errors.Is(v.Err(), streaming.ErrSlowViewer) {
			t.Fatalf("interval %v: Err=%v, want ErrSlowViewer", c.interval, v.Err())
		}
		if queued > c.most || queued+len(msg) <= c.most {
			t.Fatalf("interval %v: dropped with %d bytes queued, want the message past %d", c.interval, queued, c.most)
		}
		<-v.Done()
		if code, _ := sink.closeCode(); code != streaming.CloseResumeRequired {
			t.Fatalf("interval %v: closed with %d, want %d", c.interval, code, streaming.CloseResumeRequired)
		}
	}
}

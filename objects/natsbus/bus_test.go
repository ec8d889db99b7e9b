package natsbus_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sessiond/objects/natsbus"
)

// newEmbeddedConn is an in-process connection to a fresh embedded server.
func newEmbeddedConn(tb testing.TB) *nats.Conn {
	tb.Helper()
	return connectEmbedded(tb, startEmbedded(tb, natsbus.EmbeddedOptions{Dir: tb.TempDir()}))
}

func TestBusLifecycleErrors(t *testing.T) {
	checkNoLeaks(t)
	nc := newEmbeddedConn(t)
	ctx := testCtx(t)
	noop := func(context.Context, natsbus.Msg) error { return nil }

	bus, err := natsbus.New(nc, &natsbus.BusOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Publish(ctx, "ev.x", nil, "id"); !errors.Is(err, natsbus.ErrNotOpen) {
		t.Fatalf("Publish before Open err=%v, want ErrNotOpen", err)
	}
	if _, err := bus.Consume(ctx, "w", "", noop, nil); !errors.Is(err, natsbus.ErrNotOpen) {
		t.Fatalf("Consume before Open err=%v, want ErrNotOpen", err)
	}
	if err := bus.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bus.Open(ctx); err == nil {
		t.Fatal("second Open succeeded")
	}
	if _, err := bus.Publish(ctx, "ev.x", nil, ""); !errors.Is(err, natsbus.ErrNoMsgID) {
		t.Fatalf("Publish without id err=%v, want ErrNoMsgID", err)
	}
	if _, err := bus.Publish(ctx, "elsewhere.x", nil, "id"); err == nil {
		t.Fatal("Publish outside the stream's subjects succeeded")
	}
	c, err := bus.Consume(ctx, "w", "", noop, nil)
	if err != nil {
		t.Fatal(err)
	}

	bus.Close()
	select {
	case <-c.Done():
	default:
		t.Fatal("Close returned before its consumer ended")
	}
	if err := c.Err(); err != nil {
		t.Fatalf("consumer Err after Close = %v, want nil", err)
	}
	bus.Close() // idempotent
	c.Stop()    // idempotent, also after Close
	if _, err := bus.Publish(ctx, "ev.x", nil, "id"); !errors.Is(err, natsbus.ErrClosed) {
		t.Fatalf("Publish after Close err=%v, want ErrClosed", err)
	}
	if _, err := bus.Consume(ctx, "w", "", noop, nil); !errors.Is(err, natsbus.ErrClosed) {
		t.Fatalf("Consume after Close err=%v, want ErrClosed", err)
	}
	if err := bus.Open(ctx); !errors.Is(err, natsbus.ErrClosed) {
		t.Fatalf("Open after Close err=%v, want ErrClosed", err)
	}
}

func TestInvalidOptions(t *testing.T) {
	checkNoLeaks(t)
	nc := newEmbeddedConn(t)
	if _, err := natsbus.New(nil, nil); !errors.Is(err, natsbus.ErrInvalidOptions) {
		t.Fatalf("New(nil) err=%v", err)
	}
	for _, o := range []natsbus.BusOptions{
		{Replicas: -1},
		{MaxAge: -time.Second},
		{DuplicateWindow: time.Hour, MaxAge: time.Minute},
	} {
		if _, err := natsbus.New(nc, &o); !errors.Is(err, natsbus.ErrInvalidOptions) {
			t.Errorf("New(%+v) err=%v, want ErrInvalidOptions", o, err)
		}
	}

	bus := openBus(t, nc, nil)
	noop := func(context.Context, natsbus.Msg) error { return nil }
	ctx := testCtx(t)
	if _, err := bus.Consume(ctx, "", "", noop, nil); !errors.Is(err, natsbus.ErrInvalidOptions) {
		t.Errorf("Consume without durable err=%v", err)
	}
	if _, err := bus.Consume(ctx, "w", "", nil, nil); !errors.Is(err, natsbus.ErrInvalidOptions) {
		t.Errorf("Consume without handler err=%v", err)
	}
	for _, o := range []natsbus.ConsumeOptions{
		{AckWait: -time.Second},
		{MaxInFlight: -1},
		{RetryDelay: time.Minute, MaxRetryDelay: time.Second},
	} {
		if _, err := bus.Consume(ctx, "w", "", noop, &o); !errors.Is(err, natsbus.ErrInvalidOptions) {
			t.Errorf("Consume(%+v) err=%v, want ErrInvalidOptions", o, err)
		}
	}
	if _, err := bus.Consume(ctx, "bad.name", "", noop, nil); err == nil {
		t.Error("Consume with a dotted durable name succeeded")
	}
}

// Stop cancels the context of a running handler and waits for it.
func TestConsumerStopCancelsHandler(t *testing.T) {
	checkNoLeaks(t)
	bus := openBus(t, newEmbeddedConn(t), nil)
	publish(t, bus, "ev.x", "slow")
	entered := make(chan struct{})
	var returned atomic.Bool
	c, err := bus.Consume(testCtx(t), "w", "", func(ctx context.Context, m natsbus.Msg) error {
		close(entered)
		<-ctx.Done()
		returned.Store(true)
		return ctx.Err()
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	c.Stop()
	if !returned.Load() {
		t.Fatal("Stop returned before the handler")
	}
}

// The filter selects subjects; other consumers see the rest.
func TestConsumeFilter(t *testing.T) {
	checkNoLeaks(t)
	bus := openBus(t, newEmbeddedConn(t), nil)
	var a, all recorder
	ctx := testCtx(t)
	ca, err := bus.Consume(ctx, "only-a", "ev.a.>", a.handle, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ca.Stop)
	consume(t, bus, "all", &all, nil)
	publish(t, bus, "ev.a.1", "a1")
	publish(t, bus, "ev.b.1", "b1")
	publish(t, bus, "ev.a.2", "a2")
	checkFor(t, 10*time.Second, "all three", func() bool { return len(all.got()) == 3 })
	checkFor(t, 10*time.Second, "a2", func() bool { return a.seen("a2") })
	if got := ids(a.got()); len(got) != 2 || got[0] != "a1" || got[1] != "a2" {
		t.Fatalf("filtered consumer handled %v, want [a1 a2]", got)
	}
}

// With MaxInFlight n, n handlers run at once.
func TestConsumeMaxInFlight(t *testing.T) {
	checkNoLeaks(t)
	const n = 4
	bus := openBus(t, newEmbeddedConn(t), nil)
	for i := range n {
		publish(t, bus, "ev.p", "p"+strconv.Itoa(i))
	}
	var running, peak atomic.Int32
	release := make(chan struct{})
	var r recorder
	c, err := bus.Consume(testCtx(t), "w", "", func(ctx context.Context, m natsbus.Msg) error {
		now := running.Add(1)
		for {
			p := peak.Load()
			if now <= p || peak.CompareAndSwap(p, now) {
				break
			}
		}
		<-release
		running.Add(-1)
		return r.handle(ctx, m)
	}, &natsbus.ConsumeOptions{MaxInFlight: n})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	checkFor(t, 10*time.Second, "4 handlers running", func() bool { return running.Load() == n })
	close(release)
	checkFor(t, 10*time.Second, "all handled", func() bool { return len(r.got()) == n })
	if got := peak.Load(); got != n {
		t.Fatalf("peak concurrency %d, want %d", got, n)
	}
}

// A consumer deleted on the server ends, and says why.
func TestConsumerDeleted(t *testing.T) {
	checkNoLeaks(t)
	nc := newEmbeddedConn(t)
	bus := openBus(t, nc, nil)
	var r recorder
	c := consume(t, bus, "doomed", &r, nil)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteConsumer(testCtx(t), natsbus.DefaultStream, "doomed"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("consumer still running after its deletion")
	}
	if err := c.Err(); !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrConsumerDeleted) {
		t.Fatalf("Err = %v after the consumer was deleted, want consumer not found or deleted", err)
	}
}

// createStream makes the stream as an operator would, before sessiond runs.
func createStream(tb testing.TB, nc *nats.Conn, cfg jetstream.StreamConfig) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Name = natsbus.DefaultStream
	if _, err := js.CreateStream(testCtx(tb), cfg); err != nil {
		tb.Fatalf("create stream: %v", err)
	}
	return js
}

func streamConfig(tb testing.TB, js jetstream.JetStream) jetstream.StreamConfig {
	tb.Helper()
	s, err := js.Stream(testCtx(tb), natsbus.DefaultStream)
	if err != nil {
		tb.Fatalf("stream: %v", err)
	}
	return s.CachedInfo().Config
}

// A stream that exists keeps the operator's settings: Open adds only its
// subjects, when missing, and what BusOptions sets explicitly.
func TestOpenKeepsExistingStream(t *testing.T) {
	operators := jetstream.StreamConfig{
		Description: "made by the operator",
		Subjects:    []string{"other.>"},
		MaxAge:      30 * 24 * time.Hour,
		Duplicates:  10 * time.Minute,
		MaxBytes:    64 << 20,
		MaxMsgs:     100_000,
		Storage:     jetstream.FileStorage,
	}
	check := func(t *testing.T, got jetstream.StreamConfig, wantSubjects []string, wantDup time.Duration) {
		t.Helper()
		if !slices.Equal(got.Subjects, wantSubjects) {
			t.Errorf("Subjects %q, want %q", got.Subjects, wantSubjects)
		}
		if got.Duplicates != wantDup {
			t.Errorf("Duplicates %v, want %v", got.Duplicates, wantDup)
		}
		if got.MaxAge != operators.MaxAge || got.MaxBytes != operators.MaxBytes || got.MaxMsgs != operators.MaxMsgs ||
			got.Storage != operators.Storage || got.Description != operators.Description {
			t.Errorf("stream config %+v, want the operator's MaxAge, MaxBytes, MaxMsgs, Storage and Description (%+v)", got, operators)
		}
	}
	t.Run("AddsMissingSubject", func(t *testing.T) {
		checkNoLeaks(t)
		nc := newEmbeddedConn(t)
		js := createStream(t, nc, operators)
		bus := openBus(t, nc, nil)
		check(t, streamConfig(t, js), []string{"other.>", natsbus.DefaultSubject}, operators.Duplicates)
		var r recorder
		consume(t, bus, "w", &r, nil)
		publish(t, bus, "ev.x", "x1")
		checkFor(t, 10*time.Second, "x1 consumed", func() bool { return r.seen("x1") })
	})
	t.Run("SubjectPresent", func(t *testing.T) {
		checkNoLeaks(t)
		nc := newEmbeddedConn(t)
		cfg := operators
		cfg.Subjects = []string{"ev.>", "other.>"}
		js := createStream(t, nc, cfg)
		bus := openBus(t, nc, nil)
		check(t, streamConfig(t, js), cfg.Subjects, operators.Duplicates)
		publish(t, bus, "ev.x", "x1")
	})
	t.Run("ExplicitDuplicateWindow", func(t *testing.T) {
		checkNoLeaks(t)
		nc := newEmbeddedConn(t)
		js := createStream(t, nc, operators)
		openBus(t, nc, &natsbus.BusOptions{DuplicateWindow: 20 * time.Second})
		check(t, streamConfig(t, js), []string{"other.>", natsbus.DefaultSubject}, 20*time.Second)
	})
	t.Run("ConflictingSubjects", func(t *testing.T) {
		checkNoLeaks(t)
		nc := newEmbeddedConn(t)
		cfg := operators
		cfg.Subjects = []string{"ev.a.>"}
		js := createStream(t, nc, cfg)
		bus, err := natsbus.New(nc, &natsbus.BusOptions{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(bus.Close)
		err = bus.Open(testCtx(t))
		if err == nil || !strings.Contains(err.Error(), `"ev.a.>" overlaps "ev.>"`) {
			t.Fatalf("Open on a stream storing ev.a.> err=%v, want one naming the overlap", err)
		}
		check(t, streamConfig(t, js), cfg.Subjects, operators.Duplicates)
	})
}

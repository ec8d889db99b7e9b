package natsbus_test

import (
	"context"
	"errors"
	"strconv"
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

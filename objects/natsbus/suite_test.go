package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sessiond/objects/natsbus"
)

// harness is one NATS server for the shared suite, embedded or external.
type harness struct {
	// connect returns a new client connection, closed when the test ends.
	connect func(tb testing.TB) *nats.Conn
	// restart stops the server gracefully and starts a new one on the
	// same store; connections made before are dead.
	restart func(tb testing.TB)
}

// runSuite runs the properties every deployment must have. newHarness starts
// a fresh server per subtest.
func runSuite(t *testing.T, newHarness func(tb testing.TB) *harness) {
	t.Run("PublishConsumeAck", func(t *testing.T) { testPublishConsumeAck(t, newHarness(t)) })
	t.Run("Duplicate", func(t *testing.T) { testDuplicate(t, newHarness(t)) })
	t.Run("Order1000", func(t *testing.T) { testOrder(t, newHarness(t)) })
	t.Run("HandlerErrorRedelivers", func(t *testing.T) { testHandlerErrorRedelivers(t, newHarness(t)) })
	t.Run("RestartResumes", func(t *testing.T) { testRestartResumes(t, newHarness(t)) })
}

// openBus opens a Bus on nc with test defaults, closed when the test ends.
func openBus(tb testing.TB, nc *nats.Conn, opts *natsbus.BusOptions) *natsbus.Bus {
	tb.Helper()
	if opts == nil {
		opts = &natsbus.BusOptions{}
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(tb)
	}
	bus, err := natsbus.New(nc, opts)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	if err := bus.Open(testCtx(tb)); err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(bus.Close)
	return bus
}

// recorder is a Handler that records what it was given.
type recorder struct {
	mu   sync.Mutex
	msgs []natsbus.Msg
	// fail, if set, decides the handler's result.
	fail func(natsbus.Msg) error
}

func (r *recorder) handle(ctx context.Context, m natsbus.Msg) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		return fail(m)
	}
	return nil
}

func (r *recorder) got() []natsbus.Msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// seen reports whether a message with id was handled.
func (r *recorder) seen(id string) bool {
	return slices.ContainsFunc(r.got(), func(m natsbus.Msg) bool { return m.ID == id })
}

func ids(msgs []natsbus.Msg) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func publish(tb testing.TB, bus *natsbus.Bus, subject, id string) natsbus.PublishResult {
	tb.Helper()
	res, err := bus.Publish(testCtx(tb), subject, []byte("data-"+id), id)
	if err != nil {
		tb.Fatalf("Publish %s: %v", id, err)
	}
	return res
}

func consume(tb testing.TB, bus *natsbus.Bus, durable string, r *recorder, opts *natsbus.ConsumeOptions) *natsbus.Consumer {
	tb.Helper()
	c, err := bus.Consume(testCtx(tb), durable, "", r.handle, opts)
	if err != nil {
		tb.Fatalf("Consume: %v", err)
	}
	tb.Cleanup(c.Stop)
	return c
}

// consumerInfo reads the durable consumer's state from the server.
func consumerInfo(tb testing.TB, nc *nats.Conn, durable string) *jetstream.ConsumerInfo {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := js.Consumer(testCtx(tb), natsbus.DefaultStream, durable)
	if err != nil {
		tb.Fatalf("consumer %s: %v", durable, err)
	}
	info, err := c.Info(testCtx(tb))
	if err != nil {
		tb.Fatalf("consumer info %s: %v", durable, err)
	}
	return info
}

func testPublishConsumeAck(t *testing.T, h *harness) {
	nc := h.connect(t)
	bus := openBus(t, nc, nil)
	before := time.Now().Add(-time.Minute)
	for i := 1; i <= 3; i++ {
		res := publish(t, bus, "ev.obj."+strconv.Itoa(i), "id-"+strconv.Itoa(i))
		if got, want := res.Seq, uint64(i); got != want {
			t.Fatalf("Seq=%d, want %d", got, want)
		}
		if res.Duplicate {
			t.Fatalf("first publish of id-%d reported Duplicate", i)
		}
	}

	var r recorder
	consume(t, bus, "worker", &r, nil)
	checkFor(t, 10*time.Second, "3 messages", func() bool { return len(r.got()) == 3 })
	for i, m := range r.got() {
		n := strconv.Itoa(i + 1)
		if m.Subject != "ev.obj."+n || string(m.Data) != "data-id-"+n || m.ID != "id-"+n ||
			m.StreamSeq != uint64(i+1) || m.NumDelivered != 1 || m.Published.Before(before) {
			t.Errorf("msg %d = %+v", i, m)
		}
	}
	// Acks are confirmed before the consumer moves on, so the server's
	// state already says so once the last handler has returned.
	checkFor(t, 10*time.Second, "ack floor 3", func() bool {
		info := consumerInfo(t, nc, "worker")
		return info.AckFloor.Stream == 3 && info.NumAckPending == 0
	})
}

func testDuplicate(t *testing.T, h *harness) {
	bus := openBus(t, h.connect(t), nil)
	first := publish(t, bus, "ev.a", "same")
	second := publish(t, bus, "ev.a", "same")
	if !second.Duplicate || second.Seq != first.Seq {
		t.Fatalf("second publish = %+v, want Duplicate with Seq %d", second, first.Seq)
	}
	if first.Duplicate {
		t.Fatal("first publish reported Duplicate")
	}
	publish(t, bus, "ev.a", "sentinel")

	var r recorder
	consume(t, bus, "worker", &r, nil)
	checkFor(t, 10*time.Second, "sentinel", func() bool { return r.seen("sentinel") })
	if got, want := ids(r.got()), []string{"same", "sentinel"}; !slices.Equal(got, want) {
		t.Fatalf("handled %v, want %v", got, want)
	}
}

func testOrder(t *testing.T, h *harness) {
	const n = 1000
	bus := openBus(t, h.connect(t), nil)
	var r recorder
	// Consume while publishing, so order holds for live delivery too.
	consume(t, bus, "worker", &r, nil)
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprintf("m%04d", i)
		publish(t, bus, "ev.order", want[i])
	}
	checkFor(t, 30*time.Second, "all messages", func() bool { return len(r.got()) >= n })
	got := r.got()
	if !slices.Equal(ids(got), want) {
		t.Fatalf("handled %d messages out of order; first 10: %v", len(got), ids(got)[:10])
	}
	for i := 1; i < len(got); i++ {
		if got[i].StreamSeq <= got[i-1].StreamSeq {
			t.Fatalf("StreamSeq %d after %d", got[i].StreamSeq, got[i-1].StreamSeq)
		}
	}
}

func testHandlerErrorRedelivers(t *testing.T, h *harness) {
	nc := h.connect(t)
	bus := openBus(t, nc, nil)
	r := recorder{fail: func(m natsbus.Msg) error {
		switch m.NumDelivered {
		case 1:
			return errors.New("transient")
		case 2:
			panic("poison, the second time")
		}
		return nil
	}}
	consume(t, bus, "worker", &r, &natsbus.ConsumeOptions{RetryDelay: time.Millisecond})
	publish(t, bus, "ev.x", "flaky")
	checkFor(t, 10*time.Second, "third delivery", func() bool { return len(r.got()) >= 3 })
	got := r.got()
	for i, m := range got[:3] {
		if m.ID != "flaky" || m.StreamSeq != 1 || m.NumDelivered != uint64(i+1) {
			t.Errorf("delivery %d = %+v, want flaky seq 1 delivered %d", i, m, i+1)
		}
	}
	checkFor(t, 10*time.Second, "ack", func() bool {
		return consumerInfo(t, nc, "worker").AckFloor.Stream == 1
	})
	if len(r.got()) != 3 {
		t.Fatalf("handled %d times after the ack, want 3", len(r.got()))
	}
}

func testRestartResumes(t *testing.T, h *harness) {
	nc := h.connect(t)
	bus := openBus(t, nc, nil)
	for _, id := range []string{"a1", "a2", "u3"} {
		publish(t, bus, "ev.r", id)
	}
	// a1 and a2 are acked; u3 is in its handler, blocked until the
	// consumer's context ends, when the consumer stops.
	entered := make(chan struct{})
	handler := func(ctx context.Context, m natsbus.Msg) error {
		if m.ID != "u3" {
			return nil
		}
		close(entered)
		<-ctx.Done()
		return ctx.Err()
	}
	// A message unacknowledged at a restart comes back at once (the
	// consumer rewinds), or once AckWait has passed since its delivery
	// where the rewind is refused: keep it short.
	ackWait := &natsbus.ConsumeOptions{AckWait: time.Second}
	c, err := bus.Consume(testCtx(t), "worker", "", handler, ackWait)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("u3 never reached the handler")
	}
	c.Stop()
	if got, want := consumerInfo(t, nc, "worker").AckFloor.Stream, uint64(2); got != want {
		t.Fatalf("AckFloor=%d before restart, want %d", got, want)
	}
	bus.Close()
	nc.Close()

	h.restart(t)

	nc = h.connect(t)
	bus = openBus(t, nc, nil)
	publish(t, bus, "ev.r", "n4")
	var r2 recorder
	consume(t, bus, "worker", &r2, ackWait)
	checkFor(t, 20*time.Second, "u3 and n4", func() bool { return r2.seen("u3") && r2.seen("n4") })
	// In stream order: the restarted consumer rewinds to its ack floor
	// (which also starts NumDelivered again at 1).
	if got, want := ids(r2.got()), []string{"u3", "n4"}; !slices.Equal(got, want) {
		t.Fatalf("after restart handled %v, want %v", got, want)
	}
}

package natsbus_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sessiond/objects"
	"sessiond/objects/natsbus"
)

// deleteStream deletes the Bus's stream behind its back, as an operator or
// a server restarting with an empty store would.
func deleteStream(tb testing.TB, nc *nats.Conn) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	if err := js.DeleteStream(testCtx(tb), natsbus.DefaultStream); err != nil {
		tb.Fatalf("delete stream: %v", err)
	}
	return js
}

// A publish that finds the stream gone creates it again and goes through:
// for concurrent publishers too, which restore it once between them.
func TestPublishRestoresDeletedStream(t *testing.T) {
	checkNoLeaks(t)
	nc := newEmbeddedConn(t)
	bus := openBus(t, nc, &natsbus.BusOptions{MaxAge: 48 * time.Hour})
	publish(t, bus, "ev.x", "before")
	deleteStream(t, nc)

	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = bus.Publish(testCtx(t), "ev.x", []byte("after"), fmt.Sprintf("after-%d", i))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("publish %d after the stream was deleted: %v", i, err)
		}
	}
	got := streamIDs(t, nc, "ev.x")
	slices.Sort(got)
	want := []string{"after-0", "after-1", "after-2", "after-3", "after-4", "after-5", "after-6", "after-7"}
	if !slices.Equal(got, want) {
		t.Fatalf("stream holds %q, want %q", got, want)
	}
	if got := streamConfig(t, jsOf(t, nc)).MaxAge; got != 48*time.Hour {
		t.Fatalf("restored stream's MaxAge %v, want the Bus's 48h", got)
	}
}

func jsOf(tb testing.TB, nc *nats.Conn) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// PublishBatch restores a deleted stream the same way. (Not necessarily
// in order: a later event of the batch may reach the stream made again
// before an earlier one that found it missing is published once more.)
func TestObjectsPublishBatchRestoresDeletedStream(t *testing.T) {
	checkNoLeaks(t)
	nc := newEmbeddedConn(t)
	o := &natsbus.Objects{Bus: openBus(t, nc, nil), Durable: "node-batch"}
	deleteStream(t, nc)
	evs := []objects.Event{
		{Subject: "ev.b.1", Data: []byte("1"), ID: "b1"},
		{Subject: "ev.b.2", Data: []byte("2"), ID: "b2"},
	}
	if n, err := o.PublishBatch(testCtx(t), evs); n != 2 || err != nil {
		t.Fatalf("PublishBatch after the stream was deleted: %d acknowledged, %v", n, err)
	}
	got := streamIDs(t, nc, "ev.b.>")
	slices.Sort(got)
	if !slices.Equal(got, []string{"b1", "b2"}) {
		t.Fatalf("stream holds %q, want b1 and b2 once each", got)
	}
}

// requireRunning fails the test if c has ended.
func requireRunning(t *testing.T, c *natsbus.Consumer) {
	t.Helper()
	select {
	case <-c.Done():
		t.Fatalf("consumer ended: %v", c.Err())
	default:
	}
}

// A consumer whose stream is deleted creates the stream and itself again
// (before anyone publishes), and receives what is published afterwards.
func TestConsumerRestoresDeletedStream(t *testing.T) {
	checkNoLeaks(t)
	nc := newEmbeddedConn(t)
	bus := openBus(t, nc, nil)
	var r recorder
	c := consume(t, bus, "w", &r, nil)
	publish(t, bus, "ev.x", "before")
	checkFor(t, 10*time.Second, "before", func() bool { return r.seen("before") })

	js := deleteStream(t, nc)
	checkFor(t, 30*time.Second, "the consumer on a new stream", func() bool {
		_, err := js.Consumer(testCtx(t), natsbus.DefaultStream, "w")
		return err == nil
	})
	publish(t, bus, "ev.x", "after")
	checkFor(t, 20*time.Second, "after", func() bool { return r.seen("after") })
	requireRunning(t, c)
}

// A consumer whose stream is deleted and created again by a publisher goes
// on on the new stream.
func TestConsumerFollowsRecreatedStream(t *testing.T) {
	checkNoLeaks(t)
	nc := newEmbeddedConn(t)
	bus := openBus(t, nc, nil)
	var r recorder
	c := consume(t, bus, "w", &r, nil)
	deleteStream(t, nc)
	publish(t, bus, "ev.x", "after") // creates the stream again
	checkFor(t, 20*time.Second, "after", func() bool { return r.seen("after") })
	requireRunning(t, c)
}

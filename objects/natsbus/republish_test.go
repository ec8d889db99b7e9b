package natsbus_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sessiond/objects"
	"sessiond/objects/natsbus"
)

var errAckLost = errors.New("test: the acknowledgement was lost")

// ackLosingBus hands every event to the stream, but while lose is set it
// reports the publish failed, as when the acknowledgement is lost on its
// way back (a reconnect, a timeout): the event is in the stream and the
// outbox publishes it again. It records the id of every publish and of
// every one acknowledged.
type ackLosingBus struct {
	*natsbus.Objects
	lose atomic.Bool

	mu    sync.Mutex
	tried []string
	acked []string
}

func (b *ackLosingBus) Publish(ctx context.Context, subject string, data []byte, id string) error {
	n, err := b.PublishBatch(ctx, []objects.Event{{Subject: subject, Data: data, ID: id}})
	if err == nil && n != 1 {
		err = errAckLost
	}
	return err
}

func (b *ackLosingBus) PublishBatch(ctx context.Context, evs []objects.Event) (int, error) {
	b.mu.Lock()
	for _, ev := range evs {
		b.tried = append(b.tried, ev.ID)
	}
	b.mu.Unlock()
	n, err := b.Objects.PublishBatch(ctx, evs)
	if b.lose.Load() {
		return 0, errAckLost
	}
	b.mu.Lock()
	for _, ev := range evs[:n] {
		b.acked = append(b.acked, ev.ID)
	}
	b.mu.Unlock()
	return n, err
}

func (b *ackLosingBus) ids() (tried, acked []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.tried), slices.Clone(b.acked)
}

// streamIDs returns the message id (Nats-Msg-Id) of every event the stream
// holds on subject, in order.
func streamIDs(tb testing.TB, nc *nats.Conn, subject string) []string {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := js.OrderedConsumer(testCtx(tb), natsbus.DefaultStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		tb.Fatal(err)
	}
	info, err := c.Info(testCtx(tb))
	if err != nil {
		tb.Fatal(err)
	}
	var ids []string
	for range info.NumPending {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			tb.Fatalf("read the stream: %v", err)
		}
		ids = append(ids, m.Headers().Get(jetstream.MsgIDHeader))
	}
	return ids
}

// An event the outbox publishes again, because the bus's acknowledgement
// of the first publication never came back, keeps the id it was first
// published with: in the same runtime (the drainer's retry) and in the
// next one on the folder (start-up resumes the drain). The stream then
// drops the copy as a duplicate, and a subscriber that got both could
// tell them apart only by their ids.
func TestRepublishedEventKeepsItsID(t *testing.T) {
	for _, restart := range []bool{false, true} {
		name := map[bool]string{false: "Retry", true: "AfterRestart"}[restart]
		t.Run(name, func(t *testing.T) {
			e := startEmbedded(t, natsbus.EmbeddedOptions{Dir: t.TempDir()})
			nc := connectEmbedded(t, e)
			dir := t.TempDir()
			first := &ackLosingBus{Objects: objectsBus(t, nc)}
			first.lose.Store(true)
			env := openEventRuntime(t, dir, first, newReceived())
			env.publish(t, "A", "ev.again", "once")
			checkFor(t, 10*time.Second, "the first publication", func() bool { tried, _ := first.ids(); return len(tried) > 0 })
			bus := first
			if restart {
				env.rt.Close() // the event is still in A's outbox: never acknowledged
				bus = &ackLosingBus{Objects: objectsBus(t, nc)}
				openEventRuntime(t, dir, bus, newReceived())
			} else {
				first.lose.Store(false) // the acknowledgements come back
			}
			checkFor(t, 10*time.Second, "the publication again, acknowledged", func() bool { _, acked := bus.ids(); return len(acked) > 0 })

			firstTried, _ := first.ids()
			id := firstTried[0]
			tried, acked := bus.ids()
			for _, got := range slices.Concat(firstTried, tried, acked) {
				if got != id {
					t.Fatalf("the event was published with id %q, then again with %q: a subscriber cannot tell it is the same event", id, got)
				}
			}
			if got := streamIDs(t, nc, "ev.again"); !slices.Equal(got, []string{id}) {
				t.Fatalf("the stream holds the event with ids %q, want it once with %q", got, id)
			}
		})
	}
}

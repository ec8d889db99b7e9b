package objects

import (
	"context"
	"sync"
	"testing"
	"time"
)

// lateBus holds every publish until open is closed, and counts them.
type lateBus struct {
	open chan struct{}
	mu   sync.Mutex
	ids  []string // ids published, in order
}

func (b *lateBus) Publish(ctx context.Context, subject string, data []byte, id string) error {
	select {
	case <-b.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	b.mu.Lock()
	b.ids = append(b.ids, id)
	b.mu.Unlock()
	return nil
}

func (b *lateBus) Subscribe(context.Context, func(context.Context, Event) error) (func(), error) {
	return func() {}, nil
}

func (b *lateBus) published() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.ids...)
}

// An event the bus acknowledges after its object went to sleep and was
// forgotten (a slow bus, or one down for longer than the idle timeout) is
// not published again when the object next wakes: the bus would store a
// second copy once its de-duplication window had passed.
func TestEventAcknowledgedWhileAsleepNotPublishedAgain(t *testing.T) {
	ctx := context.Background()
	bus := &lateBus{open: make(chan struct{})}
	rt, ns := openTable(t, t.TempDir(), func(rt *Runtime) { rt.IdleTimeout = 10 * time.Millisecond; rt.Bus = bus }, nil)
	t.Cleanup(func() { rt.Close() })
	s, err := ns.Get("one")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) {
		return nil, tx.Publish(ctx, "ev.late", []byte("once"))
	}); err != nil {
		t.Fatal(err)
	}
	// Asleep and forgotten while the publish waits at the bus.
	deadline := time.Now().Add(10 * time.Second)
	for rt.lookupEntry("k", "one") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the object never went to sleep")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(bus.open)
	for len(bus.published()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the event was never published")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The drainer has ended once the mark is recorded; then a wake.
	for {
		rt.drainMu.Lock()
		_, draining := rt.draining[entryKey{"k", "one"}]
		rt.drainMu.Unlock()
		if !draining {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the drainer never ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // a second publish would be under way by now; its absence is the point
	if got := bus.published(); len(got) != 1 {
		t.Fatalf("published %d times (ids %q), want once", len(got), got)
	}
}

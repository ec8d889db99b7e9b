package objects_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"sessiond/objects"
)

// filteringBus records what the runtime asks a FilteringBus to deliver.
type filteringBus struct {
	recordingBus
	mu      sync.Mutex
	filters [][]string
	fail    int // refuse this many Filter calls first
}

func (b *filteringBus) Filter(ctx context.Context, patterns []string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail > 0 {
		b.fail--
		return errors.New("filter refused on purpose")
	}
	b.filters = append(b.filters, slices.Clone(patterns))
	return nil
}

func (b *filteringBus) last() ([]string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.filters) == 0 {
		return nil, 0
	}
	return b.filters[len(b.filters)-1], len(b.filters)
}

// The runtime tells a FilteringBus its objects' patterns at start-up and
// whenever a commit changes them, before the call returns, and not when
// they did not change.
func TestRuntimeFiltersBusBySubscriptions(t *testing.T) {
	ctx := context.Background()
	bus := &filteringBus{}
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Bus = bus })
	if got, n := bus.last(); n != 1 || len(got) != 0 {
		t.Fatalf("after Open: filter %q (%d calls), want an empty one", got, n)
	}
	sub := func(name string, fn func(tx *objects.Tx) error) {
		t.Helper()
		if _, err := stub(t, ns, name).Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			return nil, fn(tx)
		}); err != nil {
			t.Fatal(err)
		}
	}
	sub("a", func(tx *objects.Tx) error { return tx.Subscribe("ev.task.*") })
	sub("b", func(tx *objects.Tx) error { return tx.Subscribe("ev.done") })
	if got, n := bus.last(); n != 3 || !slices.Equal(got, []string{"ev.done", "ev.task.*"}) {
		t.Fatalf("after two subscriptions: filter %q (%d calls)", got, n)
	}
	sub("c", func(tx *objects.Tx) error { return tx.Subscribe("ev.done") }) // same set
	if _, n := bus.last(); n != 3 {
		t.Fatalf("an unchanged set was sent again (%d calls)", n)
	}
	sub("a", func(tx *objects.Tx) error { tx.Unsubscribe("ev.task.*"); return nil })
	if got, n := bus.last(); n != 4 || !slices.Equal(got, []string{"ev.done"}) {
		t.Fatalf("after unsubscribing: filter %q (%d calls)", got, n)
	}
}

// A filter change the bus refuses, even widened to everything, is tried
// again until it succeeds: a subscription must not stay unheard.
func TestRuntimeRetriesRefusedFilter(t *testing.T) {
	defer objects.SetFilterRetryDelay(20 * time.Millisecond)()
	ctx := context.Background()
	bus := &filteringBus{}
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Bus = bus })
	bus.mu.Lock()
	bus.fail = 2 // the change and its widening
	bus.mu.Unlock()
	if _, err := stub(t, ns, "a").Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		return nil, tx.Subscribe("ev.a")
	}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, "the filter in force", func() bool {
		got, _ := bus.last()
		return slices.Equal(got, []string{"ev.a"})
	})
}

package objects_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"sessiond/objects"
)

// handingBus is an EventBus whose deliveries the test makes.
type handingBus struct {
	recordingBus
	dmu     sync.Mutex
	deliver func(context.Context, objects.Event) error
}

func (b *handingBus) Subscribe(ctx context.Context, deliver func(context.Context, objects.Event) error) (func(), error) {
	b.dmu.Lock()
	defer b.dmu.Unlock()
	b.deliver = deliver
	return func() {}, nil
}

func (b *handingBus) hand(ctx context.Context, ev objects.Event) error {
	b.dmu.Lock()
	deliver := b.deliver
	b.dmu.Unlock()
	return deliver(ctx, ev)
}

// listener records the data of the events it handles.
type listener struct {
	mu  *sync.Mutex
	got *[]string
}

func (l *listener) Event(ctx context.Context, tx *objects.Tx, ev objects.Event) error {
	tx.OnCommit(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		*l.got = append(*l.got, string(ev.Data))
	})
	return nil
}

// A bus that delivers events without an id (against the EventBus
// contract) gets each handled at every delivery: the runtime has nothing
// to de-duplicate them by, and must not drop every one after the first as
// a repeat of "".
func TestEventWithoutIDIsNotDropped(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var got []string
	bus := &handingBus{}
	rt := objects.NewRuntime(t.TempDir())
	rt.Durability = objects.DurabilityNormal
	rt.Bus = bus
	ns, err := rt.Register("listener", objects.Class{
		New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
			return &listener{mu: &mu, got: &got}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	if _, err := stub(t, ns, "l").Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		return nil, tx.Subscribe("ev.>")
	}); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []objects.Event{
		{Subject: "ev.x", Data: []byte("a")},
		{Subject: "ev.x", Data: []byte("b")},
		{Subject: "ev.x", Data: []byte("b")}, // a redelivery, indistinguishable
		{Subject: "ev.x", Data: []byte("c"), ID: "id-c"},
		{Subject: "ev.x", Data: []byte("c"), ID: "id-c"}, // a redelivery, skipped
	} {
		if err := bus.hand(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"a", "b", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("handled %v, want %v", got, want)
	}
}

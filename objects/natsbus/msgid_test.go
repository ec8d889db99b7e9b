package natsbus_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sessiond/objects"
	"sessiond/objects/natsbus"
)

// plain is a test object that records the events it handles; the object
// named "flaky" fails its first try at the event "b".
type plain struct {
	name   string
	got    *received
	failed *atomic.Bool
}

func (p *plain) Event(ctx context.Context, tx *objects.Tx, ev objects.Event) error {
	if p.name == "flaky" && string(ev.Data) == "b" && p.failed.CompareAndSwap(false, true) {
		return errors.New("first try fails on purpose")
	}
	tx.OnCommit(func() { p.got.add(p.name, string(ev.Data)) })
	return nil
}

// Events published without a message id (a plain `nats pub`, another
// service) are each handled once by each subscriber: not dropped as
// repeats of one another, and not handled twice when one comes again
// (here because another subscriber of it failed).
func TestObjectsEventsWithoutID(t *testing.T) {
	checkNoLeaks(t)
	nc := newEmbeddedConn(t)
	got := newReceived()
	var failed atomic.Bool
	rt := objects.NewRuntime(t.TempDir())
	rt.Durability = objects.DurabilityNormal
	rt.Logger = testLogger(t)
	rt.Bus = objectsBus(t, nc)
	ns, err := rt.Register("plain", objects.Class{
		New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
			return &plain{name: h.Name(), got: got, failed: &failed}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	for _, name := range []string{"steady", "flaky"} {
		s, err := ns.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			return nil, tx.Subscribe("ev.plain.>")
		}); err != nil {
			t.Fatal(err)
		}
	}

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a", "b", "c"} {
		if _, err := js.Publish(ctx, "ev.plain.x", []byte(d)); err != nil { // no Nats-Msg-Id
			t.Fatal(err)
		}
	}
	checkFor(t, 10*time.Second, "three events at each", func() bool {
		return len(got.of("steady")) >= 3 && len(got.of("flaky")) >= 3
	})
	if !failed.Load() {
		t.Fatal("flaky never failed: b was not delivered again")
	}
	time.Sleep(200 * time.Millisecond) // room for a duplicate to show
	if g := got.of("steady"); !slices.Equal(g, []string{"a", "b", "c"}) {
		t.Errorf("steady handled %v, want [a b c]", g)
	}
	// flaky's b came back after its retry delay, behind c.
	if g := got.of("flaky"); !slices.Equal(slices.Sorted(slices.Values(g)), []string{"a", "b", "c"}) {
		t.Errorf("flaky handled %v, want a, b and c once each", g)
	}
}

// A message without a Nats-Msg-Id gets an ID from the stream: the same at
// every delivery, different for each message.
func TestConsumeIDWithoutHeader(t *testing.T) {
	checkNoLeaks(t)
	nc := newEmbeddedConn(t)
	bus := openBus(t, nc, nil)
	if err := nc.Publish("ev.plain", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("ev.plain", []byte("two")); err != nil {
		t.Fatal(err)
	}
	r := recorder{fail: func(m natsbus.Msg) error {
		if m.NumDelivered == 1 {
			return errors.New("once more")
		}
		return nil
	}}
	consume(t, bus, "w", &r, &natsbus.ConsumeOptions{RetryDelay: 20 * time.Millisecond})
	checkFor(t, 10*time.Second, "both delivered twice", func() bool { return len(r.got()) == 4 })
	byData := map[string][]string{}
	for _, m := range r.got() {
		byData[string(m.Data)] = append(byData[string(m.Data)], m.ID)
	}
	one, two := byData["one"], byData["two"]
	if len(one) != 2 || len(two) != 2 || one[0] != one[1] || two[0] != two[1] || one[0] == two[0] {
		t.Fatalf("ids by delivery: one %q, two %q; want one id each, stable, distinct", one, two)
	}
	for _, id := range []string{one[0], two[0]} {
		if !strings.HasPrefix(id, "seq:") {
			t.Errorf("id %q, want one derived from the stream (seq:…)", id)
		}
	}
}

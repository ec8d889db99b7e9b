package natsbus_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"sessiond/objects"
	"sessiond/objects/natsbus"
)

// latencyObject records, for each event, the time since the publisher's
// timestamp in the payload.
type latencyObject struct{ lat chan<- time.Duration }

func (l *latencyObject) Event(ctx context.Context, tx *objects.Tx, ev objects.Event) error {
	ns, _ := strconv.ParseInt(string(ev.Data), 10, 64)
	l.lat <- time.Since(time.Unix(0, ns))
	return nil
}

func benchRuntime(b *testing.B, bus objects.EventBus, idle time.Duration, lat chan time.Duration) (*objects.Runtime, *objects.Namespace) {
	rt := objects.NewRuntime(b.TempDir())
	rt.Durability = objects.DurabilityNormal
	rt.IdleTimeout = idle
	rt.Bus = bus
	ns, err := rt.Register("o", objects.Class{New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
		return &latencyObject{lat: lat}, nil
	}})
	if err != nil {
		b.Fatal(err)
	}
	if err := rt.Open(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rt.Close() })
	return rt, ns
}

func benchBus(b *testing.B) (*natsbus.Objects, *nats.Conn) {
	e, err := natsbus.StartEmbedded(context.Background(), natsbus.EmbeddedOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	nc, err := e.Connect(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	bus, err := natsbus.New(nc, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := bus.Open(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(bus.Close)
	return &natsbus.Objects{Bus: bus, Durable: "bench"}, nc
}

func call(b *testing.B, ns *objects.Namespace, name string, fn func(ctx context.Context, tx *objects.Tx) error) {
	s, _ := ns.Get(name)
	if _, err := s.Call(context.Background(), func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		return nil, fn(ctx, tx)
	}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEventLatency: time from an event's publish inside object A's
// call to object B's handler, over the embedded server, with B awake and
// with B (and A) hibernated in between. Reports p50 and p99.
func BenchmarkEventLatency(b *testing.B) {
	for _, mode := range []string{"awake", "hibernated"} {
		b.Run(mode, func(b *testing.B) {
			bus, _ := benchBus(b)
			lat := make(chan time.Duration, 16)
			idle := time.Hour
			if mode == "hibernated" {
				idle = 5 * time.Millisecond
			}
			rt, ns := benchRuntime(b, bus, idle, lat)
			call(b, ns, "B", func(ctx context.Context, tx *objects.Tx) error { return tx.Subscribe("ev.lat.*") })
			var samples []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if mode == "hibernated" {
					b.StopTimer()
					for rt.Stats().Entries > 0 {
						time.Sleep(time.Millisecond)
					}
					b.StartTimer()
				}
				call(b, ns, "A", func(ctx context.Context, tx *objects.Tx) error {
					return tx.Publish(ctx, "ev.lat."+strconv.Itoa(i%10), []byte(strconv.FormatInt(time.Now().UnixNano(), 10)))
				})
				samples = append(samples, <-lat)
			}
			b.StopTimer()
			slices.Sort(samples)
			b.ReportMetric(float64(samples[len(samples)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(samples[len(samples)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkOutboxThroughput: 1,000 objects publish one event per call from
// 64 concurrent callers; events/s is the rate at which they come out of the
// stream (a plain subscriber counts them), i.e. through outbox, drainer and
// JetStream acknowledgement.
func BenchmarkOutboxThroughput(b *testing.B) {
	bus, nc := benchBus(b)
	_, ns := benchRuntime(b, bus, time.Hour, make(chan time.Duration))
	var got atomic.Int64
	all := make(chan struct{})
	var once sync.Once
	total := int64(b.N)
	sub, err := nc.Subscribe("ev.tp.>", func(*nats.Msg) {
		if got.Add(1) == total {
			once.Do(func() { close(all) })
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	const objectsN, callers = 1000, 64
	for i := range objectsN { // create them first: this measures steady state
		call(b, ns, fmt.Sprint("p", i), func(ctx context.Context, tx *objects.Tx) error { return nil })
	}
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				call(b, ns, fmt.Sprint("p", i%objectsN), func(ctx context.Context, tx *objects.Tx) error {
					return tx.Publish(ctx, "ev.tp."+strconv.FormatInt(i%objectsN, 10), []byte("x"))
				})
			}
		}()
	}
	wg.Wait()
	select {
	case <-all:
	case <-time.After(2 * time.Minute):
		b.Fatalf("only %d of %d events came out", got.Load(), total)
	}
	b.StopTimer()
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "events/s")
}

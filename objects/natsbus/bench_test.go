package natsbus_test

import (
	"context"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"sessiond/objects/natsbus"
)

// BenchmarkEmbeddedStart measures what a node pays at boot for NATS: start
// the embedded server with JetStream, connect in process, shut down.
func BenchmarkEmbeddedStart(b *testing.B) {
	ctx := context.Background()
	base := b.TempDir()
	logger := testLogger(b)
	// Measured first, before earlier servers' garbage muddles the heap.
	heap := liveHeap(b, filepath.Join(base, "live"))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		e, err := natsbus.StartEmbedded(ctx, natsbus.EmbeddedOptions{
			Dir:    filepath.Join(base, strconv.Itoa(i)),
			Logger: logger,
		})
		if err != nil {
			b.Fatal(err)
		}
		nc, err := e.Connect(ctx)
		if err != nil {
			b.Fatal(err)
		}
		nc.Close()
		e.Close()
	}
	b.ReportMetric(float64(heap), "live-heap-B")
}

// liveHeap is how much the heap grows, after collection, while an embedded
// server with an in-process connection is running.
func liveHeap(b *testing.B, dir string) uint64 {
	ctx := context.Background()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	e, err := natsbus.StartEmbedded(ctx, natsbus.EmbeddedOptions{Dir: dir, Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	nc, err := e.Connect(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if after.HeapAlloc < before.HeapAlloc {
		return 0
	}
	return after.HeapAlloc - before.HeapAlloc
}

// BenchmarkPublish measures one publish and its acknowledgement through an
// in-process connection (file storage, default sync interval).
func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	e := startEmbedded(b, natsbus.EmbeddedOptions{Dir: b.TempDir()})
	bus := openBus(b, connectEmbedded(b, e), nil)
	data := make([]byte, 256)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := bus.Publish(ctx, "ev.bench", data, strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
	}
}

package heapfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, floor uint64
		base, want  int
	}{
		{0, 128 * mib, 100, 3100},           // no collection yet: the runtime's 4 MiB
		{1024, 128 * mib, 100, 3100},        // as little as that
		{4 * mib, 1 << 40, 100, maxPercent}, // capped
		{32 * mib, 128 * mib, 100, 300},     // goal 4 × live = the floor
		{64 * mib, 128 * mib, 100, 100},     // GOGC's goal is the floor
		{100 * mib, 128 * mib, 100, 100},    // GOGC's goal is above it
		{200 * mib, 128 * mib, 100, 100},    // above the floor
		{32 * mib, 128 * mib, 400, 400},     // a higher GOGC wins
		{32 * mib, 128 * mib, 50, 300},      // a lower one is raised
		{120 * mib, 128 * mib, 10, 10},      // 6 % up is within GOGC's 10 %
	} {
		if got := percentFor(c.live, c.floor, c.base); got != c.want {
			t.Errorf("percentFor(%d MiB, %d MiB, %d) = %d, want %d", c.live/mib, c.floor/mib, c.base, got, c.want)
		}
	}
}

// metric reads one runtime metric.
func metric(t *testing.T, name string) uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatalf("metric %s not supported", name)
	}
	return s[0].Value.Uint64()
}

func gogc(t *testing.T) int { return int(metric(t, "/gc/gogc:percent")) }

var sink []byte

// churn allocates garbage until the runtime has started a collection of
// its own (as a busy server's allocations do).
func churn(t *testing.T) {
	t.Helper()
	n := metric(t, "/gc/cycles/automatic:gc-cycles")
	deadline := time.Now().Add(10 * time.Second)
	for metric(t, "/gc/cycles/automatic:gc-cycles") == n {
		if time.Now().After(deadline) {
			t.Fatal("no automatic collection after 10 s of allocation")
		}
		for i := 0; i < 64; i++ {
			sink = make([]byte, 64<<10)
		}
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFloorRaisesWhileBusyAndDropsWhenQuiet runs a floor in this test
// process, whose live heap is a few MiB: a 64 MiB floor raises the GC
// percentage at once and again after each collection the runtime starts
// itself; after a quiet spell it goes back to GOGC's and a forced
// collection does not raise it; allocation does; Stop restores GOGC's.
func TestFloorRaisesWhileBusyAndDropsWhenQuiet(t *testing.T) {
	base := debug.SetGCPercent(100)
	defer debug.SetGCPercent(base)

	if f := Start(0); f != nil {
		t.Fatalf("Start(0) = %v, want nil (no floor)", f)
	}
	(*Floor)(nil).Stop() // does nothing

	const quiet = 300 * time.Millisecond
	f := start(64<<20, quiet)
	if f == nil {
		t.Fatal("start returned no floor")
	}
	defer f.Stop()
	if got := gogc(t); got <= 100 {
		t.Fatalf("after start(64 MiB) the GC percentage is %d, want above 100", got)
	}
	if g := Start(1 << 30); g != nil {
		g.Stop()
		t.Fatal("a second floor started while the first is on")
	}
	// While collections keep coming the floor stays, even if something
	// else set the percentage meanwhile.
	for i := 0; i < 3; i++ {
		debug.SetGCPercent(100)
		churn(t)
		waitFor(t, func() bool { return gogc(t) > 100 }, "the floor to raise the percentage after a collection")
	}
	// Quiet: back to GOGC's, the forced collection (FreeOSMemory) does
	// not raise it again, nor does runtime.GC.
	forced := metric(t, "/gc/cycles/forced:gc-cycles")
	waitFor(t, func() bool { return gogc(t) == 100 }, "the floor to drop after a quiet spell")
	waitFor(t, func() bool { return metric(t, "/gc/cycles/forced:gc-cycles") > forced }, "the drop's collection")
	runtime.GC()
	time.Sleep(2 * quiet)
	if got := gogc(t); got != 100 {
		t.Fatalf("quiet, after forced collections, the GC percentage is %d, want 100", got)
	}
	// Busy again: raised again.
	churn(t)
	waitFor(t, func() bool { return gogc(t) > 100 }, "the floor to raise the percentage when busy again")

	f.Stop()
	f.Stop()
	if got := gogc(t); got != 100 {
		t.Fatalf("after Stop the GC percentage is %d, want 100", got)
	}
	if g := start(64<<20, quiet); g == nil {
		t.Fatal("no floor after the first one stopped")
	} else {
		g.Stop()
	}
	churn(t)
	time.Sleep(10 * time.Millisecond)
	if got := gogc(t); got != 100 {
		t.Fatalf("a collection after Stop set the GC percentage to %d, want 100", got)
	}
}

// A floor below what is live leaves GOGC's percentage; with the collector
// off there is no floor.
func TestFloorBelowLiveHeapAndCollectorOff(t *testing.T) {
	base := debug.SetGCPercent(100)
	defer debug.SetGCPercent(base)

	keep := make([]byte, 8<<20) // 8 MiB live, whatever the test binary holds
	runtime.GC()
	g := start(metric(t, "/gc/heap/live:bytes")/4, time.Hour)
	if g == nil {
		t.Fatal("start returned no floor")
	}
	churn(t)
	time.Sleep(10 * time.Millisecond)
	if got := gogc(t); got != 100 {
		t.Fatalf("a floor of a quarter of the live heap set the percentage to %d, want 100", got)
	}
	g.Stop()
	runtime.KeepAlive(keep)

	debug.SetGCPercent(-1)
	if h := Start(1 << 30); h != nil {
		h.Stop()
		t.Fatalf("Start with the collector off = %v, want nil", h)
	}
}

package objects

import (
	"sync"
	"testing"
)

// Jobs run one after another reuse one goroutine; jobs that overlap get
// their own; stop ends every idle goroutine.
func TestWorkersReuseAndStop(t *testing.T) {
	w := newWorkers()
	for range 100 {
		done := make(chan struct{})
		w.run(func() { close(done) })
		<-done
		waitFor(t, func() bool { return w.idle.Load() == w.live.Load() }) // back waiting
	}
	// One, or a few when a job came in the instant between a goroutine
	// counting itself idle and its receive.
	if n := w.live.Load(); n > 5 {
		t.Fatalf("%d goroutines for 100 jobs run one at a time, want 1", n)
	}
	release := make(chan struct{})
	var started, finished sync.WaitGroup
	for range 8 {
		started.Add(1)
		finished.Add(1)
		w.run(func() { started.Done(); <-release; finished.Done() })
	}
	started.Wait() // all 8 run at once, so 8 goroutines exist
	if n := w.live.Load(); n < 8 {
		t.Fatalf("%d goroutines for 8 overlapping jobs", n)
	}
	close(release)
	finished.Wait()
	w.stop()
	if n := w.live.Load(); n != 0 {
		t.Fatalf("%d goroutines after stop", n)
	}
}

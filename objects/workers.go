package objects

import (
	"sync"
	"sync/atomic"
	"time"
)

// workerIdle is how long a pooled goroutine waits for its next job.
const workerIdle = 2 * time.Second

// workers runs the runtime's short-lived jobs (an object's batch loop, an
// outbox drain) on goroutines that outlive one job. A job runs SQLite, whose
// call depth grows a fresh goroutine's stack several times over; a profile
// of POST /turns over 1,000 sessions spent 6 % of the server's CPU copying
// the stacks of workers started for one batch each. A goroutine here waits
// workerIdle for another job, then ends.
//
// Jobs do their own accounting in the runtime's WaitGroup; stop ends the
// idle goroutines once no job can start any more.
type workers struct {
	jobs     chan func() // unbuffered: a send succeeds only to an idle goroutine
	quit     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	live     atomic.Int64 // goroutines, busy or idle
	idle     atomic.Int64 // goroutines waiting for a job
}

func newWorkers() *workers {
	return &workers{jobs: make(chan func()), quit: make(chan struct{})}
}

// run runs f on an idle pooled goroutine, or on a new one.
func (w *workers) run(f func()) {
	select {
	case w.jobs <- f:
	default:
		w.wg.Add(1)
		w.live.Add(1)
		go w.loop(f)
	}
}

func (w *workers) loop(f func()) {
	defer w.wg.Done()
	defer w.live.Add(-1)
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		f()
		idle.Reset(workerIdle)
		w.idle.Add(1)
		select {
		case f = <-w.jobs:
			w.idle.Add(-1)
		case <-idle.C:
			w.idle.Add(-1)
			return
		case <-w.quit:
			w.idle.Add(-1)
			return
		}
	}
}

// stop ends the idle goroutines and waits for them. Call it after every job
// has finished.
func (w *workers) stop() {
	w.stopOnce.Do(func() { close(w.quit) })
	w.wg.Wait()
}

package main

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// loopSpec bounds a closed-loop run: conns workers each call op back to
// back until n calls were started or duration has passed. Calls that start
// during warmup are made but not counted.
type loopSpec struct {
	conns    int
	n        int
	duration time.Duration
	warmup   time.Duration
	pid      int // the server's, for its CPU use; 0 when unknown
}

// loopResult is what a closed loop measured after its warm-up.
type loopResult struct {
	lat     samples
	calls   int
	errors  int
	elapsed time.Duration
	lastErr error
	// serverCores and selfCores are the CPU the server and loadgen used
	// after the warm-up, in cores; -1 when unknown.
	serverCores, selfCores float64
}

func (r *loopResult) perSecond() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.calls) / r.elapsed.Seconds()
}

// runLoop runs op on spec.conns goroutines; worker is the goroutine's
// index and i the call's sequence number.
func runLoop(ctx context.Context, spec loopSpec, op func(ctx context.Context, worker, i int) error) *loopResult {
	ctx, cancel := context.WithTimeout(ctx, spec.warmup+spec.duration)
	defer cancel()
	start := time.Now()
	measureFrom := start.Add(spec.warmup)
	var started atomic.Int64
	var mu sync.Mutex
	res := &loopResult{}
	var wg sync.WaitGroup
	for w := range spec.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine samples
			errs := 0
			var lastErr error
			for ctx.Err() == nil {
				i := int(started.Add(1))
				if i > spec.n {
					break
				}
				t0 := time.Now()
				err := op(ctx, w, i)
				if ctx.Err() != nil {
					break // cut off by the deadline: not a real answer
				}
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					errs++
					lastErr = err
					continue
				}
				mine.add(time.Since(t0))
			}
			mu.Lock()
			res.lat.merge(&mine)
			res.errors += errs
			if lastErr != nil {
				res.lastErr = lastErr
			}
			mu.Unlock()
		}()
	}
	server, self := meterAt(ctx, measureFrom, spec.pid)
	wg.Wait()
	res.calls = res.lat.len()
	res.elapsed = time.Since(measureFrom)
	res.serverCores, res.selfCores = server.coresOr(-1), self.coresOr(-1)
	return res
}

// meterAt waits until at, then starts measuring the CPU of pid and of
// loadgen itself; a meter is nil if it cannot be read.
func meterAt(ctx context.Context, at time.Time, pid int) (server, self *cpuMeter) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(at)):
	}
	server, _ = startCPU(pid)
	self, _ = startCPU(os.Getpid())
	return server, self
}

// addCPU adds the server's CPU use, and its CPU time per call, to r.
func (res *loopResult) addCPU(r *row) {
	r.add("server cpu", res.serverCores, "cores")
	perCall := -1.0
	if res.serverCores >= 0 && res.calls > 0 {
		perCall = res.serverCores * res.elapsed.Seconds() / float64(res.calls) * 1e6
	}
	r.add("server cpu/call", perCall, "µs")
	r.add("loadgen cpu", res.selfCores, "cores")
}

// sleepCtx sleeps for d, or less if ctx ends first (then it returns ctx.Err()).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

package main

import "runtime"

// minProcs is the fewest Go processors (GOMAXPROCS) sessiond runs with.
//
// Commits wait in fsync(2) or syncfs(2) (durability full) and in pwrite(2).
// With one processor the goroutine in that system call keeps it until the
// runtime's monitor hands it to another thread, which can take milliseconds
// when the monitor has backed off: meanwhile no request is served. Measured
// on one CPU (loadgen -pin, 2026-11-27): 64 connections posting to one
// session in full made 3,081 calls/s at p50 20.6 ms with one processor and
// 12,060 at 5.1 ms with two; 1,000 sessions 1,813 → 4,427.
const minProcs = 2

// ensureProcs raises GOMAXPROCS to minProcs when the runtime chose fewer
// (one CPU, or a CPU limit of one) and the operator did not set GOMAXPROCS.
// It returns the value in effect before and after.
func ensureProcs(getenv func(string) string) (before, after int) {
	before = runtime.GOMAXPROCS(0)
	if before >= minProcs || getenv("GOMAXPROCS") != "" {
		return before, before
	}
	runtime.GOMAXPROCS(minProcs)
	return before, minProcs
}

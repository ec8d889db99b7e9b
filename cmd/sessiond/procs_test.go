package main

import (
	"runtime"
	"testing"
)

func TestEnsureProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	noEnv := func(string) string { return "" }

	runtime.GOMAXPROCS(1)
	if before, after := ensureProcs(noEnv); before != 1 || after != minProcs || runtime.GOMAXPROCS(0) != minProcs {
		t.Fatalf("one processor: ensureProcs = %d, %d; GOMAXPROCS now %d, want 1, %d, %d", before, after, runtime.GOMAXPROCS(0), minProcs, minProcs)
	}

	// The operator's GOMAXPROCS stands, even at 1.
	runtime.GOMAXPROCS(1)
	set := func(k string) string {
		if k == "GOMAXPROCS" {
			return "1"
		}
		return ""
	}
	if before, after := ensureProcs(set); before != 1 || after != 1 || runtime.GOMAXPROCS(0) != 1 {
		t.Fatalf("GOMAXPROCS=1 set: ensureProcs = %d, %d; GOMAXPROCS now %d, want 1, 1, 1", before, after, runtime.GOMAXPROCS(0))
	}

	// More than the minimum: unchanged.
	runtime.GOMAXPROCS(4)
	if before, after := ensureProcs(noEnv); before != 4 || after != 4 || runtime.GOMAXPROCS(0) != 4 {
		t.Fatalf("four processors: ensureProcs = %d, %d; GOMAXPROCS now %d, want 4, 4, 4", before, after, runtime.GOMAXPROCS(0))
	}
}

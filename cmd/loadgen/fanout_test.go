package main

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// A generation that did not come from the fake upstream (here: the offline
// model's words, then done) must fail the case, not print a row of zeros.
func TestFanoutCheckNeedsStamps(t *testing.T) {
	offline := []string{
		`{"type":"delta","generation":"g_1","offset":1,"text":"This "}`,
		`{"type":"delta","generation":"g_1","offset":2,"text":"is "}`,
		`{"type":"done","generation":"g_1","offset":3}`,
	}
	f := newFanout(2)
	for i := range 2 {
		for _, m := range offline {
			f.handle(i, time.Now(), []byte(m))
		}
	}
	f.merge()
	if err := f.check(); !errors.Is(err, errNoStamps) {
		t.Fatalf("check after unstamped deltas = %v, want errNoStamps", err)
	}

	sent := time.Now().Add(-time.Millisecond).UnixNano()
	f = newFanout(2)
	for i := range 2 {
		f.handle(i, time.Now(), fmt.Appendf(nil, `{"type":"delta","generation":"g_1","offset":1,"text":"t%d "}`, sent))
		f.handle(i, time.Now(), []byte(`{"type":"done","generation":"g_1","offset":2}`))
	}
	f.merge()
	if err := f.check(); err != nil {
		t.Fatalf("check after stamped deltas = %v, want nil", err)
	}
	if got := len(f.last); got != 1 {
		t.Fatalf("chunks measured = %d, want 1", got)
	}
}

package main

import (
	"context"
	"errors"
	"syscall"
	"testing"
)

// The socket floor delivers every chunk to every socket, in both modes, and
// times each one.
func TestSocketFloorCase(t *testing.T) {
	const n, tokens = 20, 10
	for _, mode := range socketModes(true) {
		r, err := socketFloorCase(context.Background(), n, tokens, 200, mode)
		if mode == "io_uring" && (errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EPERM)) {
			t.Skipf("io_uring unavailable here: %v", err)
		}
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		got := map[string]float64{}
		for _, m := range r.Metrics {
			got[m.Name] = m.Value
		}
		if got["viewers complete"] != n {
			t.Errorf("%s: %v of %d sockets got every chunk", mode, got["viewers complete"], n)
		}
		if got["last-viewer p50"] <= 0 || got["last-viewer max"] < got["last-viewer p50"] || got["writer cpu/message"] <= 0 {
			t.Errorf("%s: implausible row %+v", mode, r)
		}
	}
	if _, err := socketFloorCase(context.Background(), n, tokens, 200, "carrier-pigeon"); err == nil {
		t.Error("an unknown mode: no error")
	}
}

package main

import (
	"strings"
	"testing"
)

func TestFileLimitWarning(t *testing.T) {
	for _, c := range []struct {
		limit   uint64
		maxOpen int
		warn    bool
	}{
		{1024, 2000, true}, // a common default soft limit, and sessiond's default
		{7023, 2000, true},
		{7024, 2000, false},
		{1 << 20, 2000, false},
		{1024, 1, true},
		{1027, 1, false},
	} {
		msg := fileLimitWarning(c.limit, c.maxOpen)
		if (msg != "") != c.warn {
			t.Errorf("limit %d, --max-open %d: %q, want a warning: %v", c.limit, c.maxOpen, msg, c.warn)
		}
		if c.warn && !strings.Contains(msg, "--max-open") {
			t.Errorf("limit %d: %q does not say what to change", c.limit, msg)
		}
	}
}

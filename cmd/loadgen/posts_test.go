package main

import (
	"testing"
	"time"
)

func TestEndedByCount(t *testing.T) {
	for _, c := range []struct {
		elapsed, duration time.Duration
		want              bool
	}{
		{time.Second, 10 * time.Second, true},
		{9400 * time.Millisecond, 10 * time.Second, true},
		{9600 * time.Millisecond, 10 * time.Second, false},
		{10 * time.Second, 10 * time.Second, false},
	} {
		if got := endedByCount(c.elapsed, c.duration); got != c.want {
			t.Errorf("endedByCount(%s, %s) = %v, want %v", c.elapsed, c.duration, got, c.want)
		}
	}
}

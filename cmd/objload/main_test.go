package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunBoundedCount(t *testing.T) {
	var out bytes.Buffer
	args := []string{"-dir", t.TempDir(), "-durability", "normal", "-objects", "3", "-callers", "4", "-calls", "200", "-duration", "30s"}
	if err := run(context.Background(), args, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"calls      200 in", "calls/s", "latency    p50"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestFlagsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"-duration", "61s"},
		{"-durability", "sometimes"},
		{"-objects", "0"},
		{"-callers", "-1"},
		{"-calls", "-5"},
	} {
		if err := run(context.Background(), args, &bytes.Buffer{}); err == nil {
			t.Errorf("run(%q) accepted", args)
		}
	}
}

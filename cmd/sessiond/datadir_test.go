package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// lockData holds a folder against a second lock in this process too (flock
// locks belong to the open file), until it is released.
func TestLockData(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockData(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockData(dir)
	var le *dataLockedError
	if !errors.As(err, &le) {
		t.Fatalf("second lock: %v, want a *dataLockedError", err)
	}
	if le.PID != strconv.Itoa(os.Getpid()) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second lock: %q (pid %q), want it to name %s and pid %d", err, le.PID, dir, os.Getpid())
	}
	unlock()
	unlock, err = lockData(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock()
}

// A second sessiond on a data folder that one is serving exits with code 2
// and says why, before it opens anything there; the first keeps serving.
func TestBinarySecondOnSameDataExits2(t *testing.T) {
	bin := buildBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	p := startBinary(t, bin, data)

	// The bound is for a second that starts and serves (the bug), which
	// would otherwise run until killed.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--addr", "127.0.0.1:0", "--data", data).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("second sessiond: %v, want exit code 2\n%s", err, out)
	}
	for _, want := range []string{"data folder " + data, "in use by another sessiond (pid " + strconv.Itoa(p.cmd.Process.Pid) + ")"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("second sessiond's output lacks %q:\n%s", want, out)
		}
	}
	resp, err := http.Get(p.base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first sessiond after the second tried: %s", resp.Status)
	}
}

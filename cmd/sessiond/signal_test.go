package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The first signal shuts down; a second one forces exit only from
// forceAfter on, so that the same signal delivered twice at once (to the
// process, then to its group) does not cut the shutdown short.
func TestWatchSignals(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// What the clock reads at each signal, in order.
	times := []time.Time{t0, t0, t0.Add(forceAfter - time.Millisecond), t0.Add(forceAfter)}
	now := func() time.Time {
		t := times[0]
		times = times[1:]
		return t
	}
	sigs := make(chan os.Signal, 4)
	sigs <- syscall.SIGTERM
	sigs <- syscall.SIGTERM // at once: ignored
	sigs <- os.Interrupt    // still too soon
	sigs <- os.Interrupt    // forceAfter after the first
	close(sigs)
	var causes []error
	var forced []os.Signal
	watchSignals(sigs, func(err error) { causes = append(causes, err) }, now,
		func(s os.Signal) { forced = append(forced, s) })
	if len(causes) != 1 || causes[0].Error() != "terminated signal received" {
		t.Fatalf("cancel called with %v, want once with terminated signal received", causes)
	}
	if len(forced) != 1 || forced[0] != os.Interrupt {
		t.Fatalf("force called with %v, want once with interrupt", forced)
	}
}

// A second SIGTERM while sessiond shuts down, as `timeout` sends to the
// process and then to its group, does not kill it: it finishes closing,
// logs stopped and exits 0.
func TestBinarySecondSIGTERMDuringShutdown(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "--addr", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "data"), "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	msgs := make(chan string, 1000) // each log line's msg, closed at exit
	var waitErr error
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			t.Log(sc.Text())
			var line struct{ Msg string }
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				msgs <- line.Msg
			}
		}
		close(msgs)
		waitErr = cmd.Wait() // all of stderr read before Wait closes the pipe
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited }) // no t.Log after the test ends
	waitMsg := func(want string) {
		t.Helper()
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					<-exited
					t.Fatalf("sessiond exited (%v) before logging %q", waitErr, want)
				}
				if m == want {
					return
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no %q logged", want)
			}
		}
	}
	waitMsg("listening")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitMsg("shutting down")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitMsg("stopped")
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("sessiond still running after it logged stopped")
	}
	if waitErr != nil {
		t.Fatalf("sessiond exited with %v after two SIGTERMs, want exit 0", waitErr)
	}
}

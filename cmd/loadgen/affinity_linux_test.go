package main

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// cpusAllowed reads a task's Cpus_allowed_list from its status file.
func cpusAllowed(t *testing.T, status string) string {
	t.Helper()
	b, err := os.ReadFile(status)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s has no Cpus_allowed_list", status)
	return ""
}

func TestStartOnPinsTheChildOnly(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 CPUs")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := getAffinity(0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "10")
	if err := startOn(cmd, []int{1}); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if got := cpusAllowed(t, "/proc/"+strconv.Itoa(cmd.Process.Pid)+"/status"); got != "1" {
		t.Fatalf("child's CPUs = %q, want 1", got)
	}
	if after, err := getAffinity(0); err != nil || after != before {
		t.Fatalf("the starting thread's CPUs changed: %v → %v (%v)", before, after, err)
	}
}

func TestPinProcessPinsEveryThread(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 CPUs")
	}
	all := make([]int, runtime.NumCPU())
	for i := range all {
		all[i] = i
	}
	defer pinProcess(all)
	if err := pinProcess([]int{1}); err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if got := cpusAllowed(t, "/proc/self/task/"+task.Name()+"/status"); got != "1" {
			t.Errorf("thread %s: CPUs %q, want 1", task.Name(), got)
		}
	}
	// A thread made now inherits the set.
	done := make(chan string)
	go func() {
		runtime.LockOSThread() // a thread of its own, kept until the goroutine ends
		b, _ := os.ReadFile("/proc/thread-self/status")
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
				done <- strings.TrimSpace(v)
				return
			}
		}
		done <- "?"
	}()
	if got := <-done; got != "1" {
		t.Fatalf("a later thread: CPUs %q, want 1", got)
	}
}

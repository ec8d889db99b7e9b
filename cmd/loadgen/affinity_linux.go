package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"
)

// cpuMask is a CPU set as sched_setaffinity(2) takes it (up to 1,024 CPUs).
type cpuMask [16]uint64

func maskOf(cpus []int) cpuMask {
	var m cpuMask
	for _, c := range cpus {
		m[c/64] |= 1 << (c % 64)
	}
	return m
}

// setAffinity puts thread tid (0: the calling thread) on m.
func setAffinity(tid int, m cpuMask) error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), unsafe.Sizeof(m), uintptr(unsafe.Pointer(&m))); e != 0 {
		return fmt.Errorf("sched_setaffinity(%d): %w", tid, e)
	}
	return nil
}

func getAffinity(tid int) (cpuMask, error) {
	var m cpuMask
	if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETAFFINITY, uintptr(tid), unsafe.Sizeof(m), uintptr(unsafe.Pointer(&m))); e != 0 {
		return m, fmt.Errorf("sched_getaffinity(%d): %w", tid, e)
	}
	return m, nil
}

// pinProcess puts every thread of this process on cpus. Threads made later
// inherit the set of the thread that makes them, so two passes over
// /proc/self/task cover a thread born during the first.
func pinProcess(cpus []int) error {
	m := maskOf(cpus)
	for pass := 0; pass < 2; pass++ {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("pin loadgen: %w", err)
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := setAffinity(tid, m); err != nil && !errors.Is(err, syscall.ESRCH) { // ESRCH: the thread ended
				return fmt.Errorf("pin loadgen: %w", err)
			}
		}
	}
	return nil
}

// startOn starts cmd with all its threads on cpus: the child is forked from
// this goroutine's thread, put on cpus for that moment, and inherits its set
// before it runs anything.
func startOn(cmd *exec.Cmd, cpus []int) error {
	if len(cpus) == 0 {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	old, err := getAffinity(0)
	if err != nil {
		return err
	}
	if err := setAffinity(0, maskOf(cpus)); err != nil {
		return err
	}
	err = cmd.Start()
	if rerr := setAffinity(0, old); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

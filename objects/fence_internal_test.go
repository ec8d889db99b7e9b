package objects

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// After a WAL flush fails, the runtime refuses every call until it is
// restarted, even once flushes succeed again: a later flush cannot vouch
// for the pages the failed one may have lost, and a crash could take the
// commits after them too. A restart serves again, from what the disk has.
func TestFailedFlushFencesTheRuntime(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func() (*Runtime, *Namespace) {
		return openTable(t, dir, func(rt *Runtime) { rt.Durability = DurabilityFull }, nil)
	}
	write := func(ns *Namespace, name string, x int) error {
		s, _ := ns.Get(name)
		_, err := s.Call(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) {
			_, err := tx.Exec(ctx, `INSERT INTO v VALUES (?)`, x)
			return nil, err
		})
		return err
	}
	rt, ns := open()
	if err := write(ns, "a", 1); err != nil {
		t.Fatal(err)
	}
	rt.syncer.flushFn = func([]*syncWait) error { return syscall.EIO }
	if err := write(ns, "a", 2); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("the write whose flush failed: %v, want ErrNotDurable", err)
	}
	if err := rt.Fault(); !errors.Is(err, ErrDiskFailed) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Fault after a failed flush: %v, want ErrDiskFailed wrapping EIO", err)
	}
	rt.syncer.flushFn = nil // the disk answers again: too late to trust it
	for _, name := range []string{"a", "b"} {
		if err := write(ns, name, 3); !errors.Is(err, ErrDiskFailed) {
			t.Fatalf("a write to %s after the failed flush: %v, want ErrDiskFailed", name, err)
		}
	}
	s, _ := ns.Get("a")
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) { return nil, nil }); !errors.Is(err, ErrDiskFailed) {
		t.Fatalf("a read after the failed flush: %v, want ErrDiskFailed", err)
	}
	rt.Close()

	rt, ns = open()
	defer rt.Close()
	if err := rt.Fault(); err != nil {
		t.Fatalf("Fault after a restart: %v", err)
	}
	if err := write(ns, "a", 4); err != nil {
		t.Fatalf("a write after the restart: %v", err)
	}
}

type alarmSignal struct{ fired chan struct{} }

func (a *alarmSignal) Alarm(ctx context.Context, tx *Tx, info AlarmInfo) error {
	select {
	case a.fired <- struct{}{}:
	default:
	}
	return nil
}

// A fenced runtime tries no alarm: each would spend its retries on calls
// that cannot run and then be dropped. The alarm stays in the index and
// fires after the restart. (runAlarms stops, and fireAlarm and dropAlarm
// keep an alarm while fenced: the test fails only without all three.)
func TestFencedRuntimeKeepsAlarmsForTheRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fired := make(chan struct{}, 1)
	open := func() *Namespace {
		_, ns := openTable(t, dir, func(rt *Runtime) {
			rt.AlarmRetryBase = time.Millisecond
			rt.AlarmMaxRetries = 1
		}, func() any { return &alarmSignal{fired: fired} })
		return ns
	}
	ns := open()
	s, _ := ns.Get("x")
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) {
		tx.SetAlarm(time.Now().Add(time.Second)) // well after the fence below
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	ns.rt.Fence(syscall.EIO)
	time.Sleep(1500 * time.Millisecond) // the alarm falls due while fenced
	ns.rt.Close()

	ns = open()
	defer ns.rt.Close()
	select {
	case <-fired:
	case <-time.After(10 * time.Second): // a hang guard
		t.Fatal("the alarm that fell due while fenced never fired after the restart")
	}
}

// A flush that cannot begin, because the WAL cannot be opened (the process
// is out of file descriptors), fails its call with ErrNotDurable but does
// not fence the runtime: no fsync failed, nothing was lost to the disk,
// and once files open again the next flush covers the commit. (Fencing
// here let a burst of idle connections stop a node until a restart.)
func TestFlushThatCannotOpenDoesNotFence(t *testing.T) {
	ctx := context.Background()
	rt, ns := openTable(t, t.TempDir(), func(rt *Runtime) {
		rt.Durability = DurabilityFull
		rt.IdleTimeout = 10 * time.Millisecond
	}, nil)
	defer rt.Close()
	write := func(name string, x int) error {
		s, _ := ns.Get(name)
		_, err := s.Call(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) {
			_, err := tx.Exec(ctx, `INSERT INTO v VALUES (?)`, x)
			return nil, err
		})
		return err
	}
	// Made, then hibernated: the write after its wake opens the WAL to
	// flush it.
	if err := write("a", 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		_, awake := rt.entries[entryKey{ns.name, "a"}]
		return !awake
	})
	setOpener := func(open func(string) (*os.File, error)) {
		syncOpener.Lock()
		syncOpener.open = open
		syncOpener.Unlock()
	}
	defer setOpener(nil)
	setOpener(func(name string) (*os.File, error) {
		if strings.HasSuffix(name, "-wal") {
			return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EMFILE}
		}
		return os.Open(name)
	})
	if err := write("a", 1); !errors.Is(err, ErrNotDurable) || !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("a write whose WAL could not be opened to flush: %v, want ErrNotDurable wrapping EMFILE", err)
	}
	if err := rt.Fault(); err != nil {
		t.Fatalf("Fault after a flush that could not begin: %v, want none", err)
	}
	setOpener(nil)
	for _, name := range []string{"a", "b"} {
		if err := write(name, 2); err != nil {
			t.Fatalf("a write to %s once files open again: %v", name, err)
		}
	}
	s, _ := ns.Get("a")
	n, err := s.Call(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) {
		var n int
		err := tx.QueryRow(ctx, `SELECT count(*) FROM v`).Scan(&n)
		return n, err
	})
	if err != nil || n != 3 {
		t.Fatalf("rows of a: %v %v, want 3 (the commit whose flush could not begin stays)", n, err)
	}
}

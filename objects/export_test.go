package objects

import (
	"context"
	"time"
)

// ObjectFile exposes objectFile to the external tests (FuzzObjectFile).
var ObjectFile = objectFile

// SetFilterRetryDelay sets filterRetryDelay for a test and returns the
// function that restores it.
func SetFilterRetryDelay(d time.Duration) (restore func()) {
	old := filterRetryDelay
	filterRetryDelay = d
	return func() { filterRetryDelay = old }
}

// SetAlarmInIndex sets an object's alarm to at in the node index, as a
// committed call would, but without a call: for a test whose object's
// queue is full. The object must exist.
func SetAlarmInIndex(rt *Runtime, ns, name string, at time.Time) error {
	if err := rt.index.setAlarm(context.Background(), ns, name, at, 0); err != nil {
		return err
	}
	rt.pokeAlarms()
	return nil
}

// SetCommittedHook makes f run after every batch's commit, before the node
// index changes that follow it (afterCommit). For a crash test's child
// process, which is killed there.
func SetCommittedHook(f func()) { testHookCommitted = f }

// SetIndexBusyTimeout sets how long the node index of runtimes opened from
// now on waits for another connection's lock, and returns the function that
// restores it.
func SetIndexBusyTimeout(d time.Duration) (restore func()) {
	old := indexBusyTimeout
	indexBusyTimeout = d
	return func() { indexBusyTimeout = old }
}

// SetIndexWatchInterval sets how often a runtime opened from now on checks
// its node index file, until restore.
func SetIndexWatchInterval(d time.Duration) (restore func()) {
	old := indexWatchInterval
	indexWatchInterval = d
	return func() { indexWatchInterval = old }
}

// SocketReadBytes is the bytes of socket messages counted against
// SocketReadMemory now.
func (rt *Runtime) SocketReadBytes() int64 { return rt.socketBytes.Load() }

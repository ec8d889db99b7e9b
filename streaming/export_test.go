package streaming

import "time"

// SetRunningKeep sets how many newest events a running log keeps encoded
// and returns a function that restores the default. Not for parallel tests.
func SetRunningKeep(n int) (restore func()) {
	old := runningKeep
	runningKeep = n
	return func() { runningKeep = old }
}

// CompactedThrough returns the last offset that l keeps compacted (0 if
// none): a backlog up to it is rebuilt as a viewer writes it.
func CompactedThrough(l *Log) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.base
}

// Queued returns the bytes queued to v and not yet handed to its sink.
func Queued(v *Viewer) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.queued
}

// SetCloseAnswerWait sets how long a sink's Close waits for the client's
// answer to its close frame, until restore. Not for parallel tests.
func SetCloseAnswerWait(d time.Duration) (restore func()) {
	old := closeAnswerWait
	closeAnswerWait = d
	return func() { closeAnswerWait = old }
}

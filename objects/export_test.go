package objects

import "time"

// ObjectFile exposes objectFile to the external tests (FuzzObjectFile).
var ObjectFile = objectFile

// SetFilterRetryDelay sets filterRetryDelay for a test and returns the
// function that restores it.
func SetFilterRetryDelay(d time.Duration) (restore func()) {
	old := filterRetryDelay
	filterRetryDelay = d
	return func() { filterRetryDelay = old }
}

package streaming

// SetRunningKeep sets how many newest events a running log keeps encoded
// and returns a function that restores the default. Not for parallel tests.
func SetRunningKeep(n int) (restore func()) {
	old := runningKeep
	runningKeep = n
	return func() { runningKeep = old }
}

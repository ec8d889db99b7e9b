//go:build race

package main

// The process test builds the binary with -race too, so that it reuses the
// packages `go test -race` has just compiled instead of building them twice.
func init() { raceEnabled = true }

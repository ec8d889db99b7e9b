//go:build !unix

package main

// fileLimit reports no limit where getrlimit(2) is missing.
func fileLimit() (uint64, bool) { return 0, false }

//go:build unix

package main

import "syscall"

// fileLimit returns the process's open-file limit (its soft limit, which
// Go raises to the hard limit at start), or false where it is unknown.
func fileLimit() (uint64, bool) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, false
	}
	return uint64(r.Cur), true
}

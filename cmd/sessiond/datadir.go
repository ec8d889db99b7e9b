package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// lockFileName is the file in the data folder that the sessiond using the
// folder holds locked, so that a second one on the same folder stops at
// once instead of sharing its databases, alarms, NATS store and node id.
const lockFileName = "sessiond.lock"

// dataLockedError is returned by lockData when another process holds the
// data folder: main exits with code 2.
type dataLockedError struct {
	Dir string
	PID string // the holder's process id as it wrote it; "" if unknown
}

func (e *dataLockedError) Error() string {
	holder := "another sessiond"
	if e.PID != "" {
		holder += " (pid " + e.PID + ")"
	}
	return fmt.Sprintf("data folder %s is in use by %s: stop it, or give this one another --data (lock: %s)",
		e.Dir, holder, filepath.Join(e.Dir, lockFileName))
}

// lockHolder returns the process id written in the lock file at p, or "".
func lockHolder(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

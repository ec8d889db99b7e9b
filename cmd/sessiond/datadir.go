package main

import (
	"fmt"
	"log/slog"
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

// prepareData creates the data folder, readable by its user only, if it is
// missing. An existing folder keeps its mode, the user's choice, but one
// that other users may enter gets a warning: its databases hold every
// conversation.
func prepareData(dir string, logger *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		logger.Warn("the data folder is open to other users, and its databases hold every conversation: run chmod 700 on it",
			keyData, dir, keyMode, fmt.Sprintf("%#o", perm))
	}
	return nil
}

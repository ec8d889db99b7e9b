package main

import (
	"errors"
	"fmt"
	"io/fs"
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
func prepareData(dir string, logger *slog.Logger) (created bool, err error) {
	if err := mkdirParents(filepath.Dir(filepath.Clean(dir))); err != nil {
		return false, fmt.Errorf("create data folder: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err == nil {
		created = true
	} else if !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("create data folder: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return created, fmt.Errorf("data folder: %w", err)
	}
	if !fi.IsDir() {
		return created, fmt.Errorf("data folder %s: not a folder", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		logger.Warn("the data folder is open to other users, and its databases hold every conversation: run chmod 700 on it",
			keyData, dir, keyMode, fmt.Sprintf("%#o", perm))
	}
	return created, nil
}

// unmakeData removes the data folder prepareData created and the lock file
// in it, for a start-up that failed before anything else was written there
// (an address in use): a mistyped command leaves no folder behind.
func unmakeData(dir string) {
	os.Remove(filepath.Join(dir, lockFileName))
	os.Remove(dir) // only if empty
}

// mkdirParents creates dir and its missing parents as mkdir -p would under
// the user's umask (folderMode): only the data folder itself is private,
// not folders others may share above it.
func mkdirParents(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s: not a folder", dir)
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirParents(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	return os.Chmod(dir, folderMode())
}

//go:build unix && !aix && !solaris

package main

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Under sessiond's umask 077 only the data folder is private: parents it
// creates get the mode mkdir -p gives under the user's own umask.
func TestPrepareDataParentsKeepTheUsersMode(t *testing.T) {
	old := syscall.Umask(0o022)
	privateFiles()
	defer syscall.Umask(old)
	base := t.TempDir()
	dir := filepath.Join(base, "shared", "a", "data")
	if _, err := prepareData(dir, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{filepath.Join(base, "shared"): 0o755, filepath.Join(base, "shared", "a"): 0o755, dir: 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %#o, want %#o", p, got, want)
		}
	}
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := prepareData(file, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Errorf("a data folder that is a file was taken")
	}
}

// The lock holds when its file is deleted by hand (it looks stale to
// someone): the folder itself is locked too, so a second sessiond is still
// refused before it opens anything.
func TestLockDataSurvivesItsFileDeleted(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockData(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, lockFileName)); err != nil {
		t.Fatal(err)
	}
	_, err = lockData(dir)
	var le *dataLockedError
	if !errors.As(err, &le) {
		t.Fatalf("a lock after the lock file was deleted: %v, want a *dataLockedError", err)
	}
	unlock()
	unlock, err = lockData(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock()
}

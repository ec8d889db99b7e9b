//go:build unix && !aix && !solaris

package objects

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockFileName is the file in a runtime's Dir that Open locks.
const lockFileName = "objects.lock"

// lockDir takes an exclusive lock on dir's lock file without waiting, so
// that no other runtime, in this process or another, opens dir's objects
// meanwhile: each must have one live instance. The kernel releases it when
// the process ends, SIGKILL included. It returns an error wrapping
// ErrLocked when another holds it.
func lockDir(dir string) (unlock func(), err error) {
	p := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	// flock, not fcntl: its lock belongs to this open file, so closing
	// another descriptor of the file (SQLite does) does not drop it.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

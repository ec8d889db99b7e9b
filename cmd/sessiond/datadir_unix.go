//go:build unix && !aix && !solaris

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// lockData takes an exclusive lock on dir's lock file, without waiting:
// while it is held no other sessiond (nor a second run in this process)
// can lock dir. It returns a *dataLockedError when another holds it.
// unlock releases it; the kernel also releases it when the process ends,
// SIGKILL included, so a crash never leaves the folder locked.
func lockData(dir string) (unlock func(), err error) {
	p := filepath.Join(dir, lockFileName)
	// The folder itself is locked too: a lock file deleted by hand (it
	// looks stale) would otherwise let a second sessiond in. (A folder
	// deleted or moved whole is another matter: /healthz reports it.)
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open data folder to lock it: %w", err)
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	// flock, not fcntl: its lock belongs to this open file, so it is not
	// dropped when some other descriptor of the file is closed.
	for _, l := range []*os.File{d, f} {
		if err := syscall.Flock(int(l.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			d.Close()
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, &dataLockedError{Dir: dir, PID: lockHolder(p)}
			}
			return nil, fmt.Errorf("lock %s: %w", l.Name(), err)
		}
	}
	// The pid is only for the message a second sessiond prints.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		f.Close()
		d.Close()
	}, nil
}

// privateFiles makes every file and folder this process creates from now
// on readable by its user only (umask 077): the data folder holds every
// conversation, and the packages that create files in it (SQLite, NATS,
// the runtime's fan-out folders) ask for 0644 and 0755.
func privateFiles() { userUmask = os.FileMode(syscall.Umask(0o077)) }

// userUmask is the umask the process started with, before privateFiles.
var userUmask os.FileMode = 0o022

// folderMode is the mode mkdir -p gives a folder under the user's umask.
func folderMode() os.FileMode { return 0o777 &^ userUmask }

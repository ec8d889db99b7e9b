package objects

import (
	"os"
	"runtime"
	"syscall"
)

// fdatasync flushes f's data (and the metadata needed to read it back, such
// as its size) to the disk, without the timestamps fsync also writes.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// sysSyncfs is syncfs(2)'s number on the architectures Go's syscall
// package leaves it out of (every Linux one has the call since 2.6.39).
var sysSyncfs = map[string]uintptr{"amd64": 306, "arm64": 267, "386": 344, "arm": 373, "riscv64": 267, "ppc64le": 348, "s390x": 338, "loong64": 267}[runtime.GOARCH]

// syncfs flushes the whole filesystem holding f: every file's dirty data,
// one journal commit, one cache flush. Since Linux 5.8 it reports writeback
// errors of any file on it. supported is false where the call is not known.
func syncfs(f *os.File) (supported bool, err error) {
	if sysSyncfs == 0 {
		return false, nil
	}
	for {
		_, _, errno := syscall.Syscall(sysSyncfs, f.Fd(), 0, 0)
		switch errno {
		case 0:
			return true, nil
		case syscall.EINTR:
			continue
		case syscall.ENOSYS:
			return false, nil
		}
		return true, errno
	}
}

// fileDev returns the device of the filesystem holding f, 0 if unknown.
func fileDev(f *os.File) uint64 {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return 0
	}
	return uint64(st.Dev)
}

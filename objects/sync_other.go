//go:build !linux

package objects

import "os"

// fdatasync flushes f to the disk; where fdatasync(2) is not available it
// is a full fsync.
func fdatasync(f *os.File) error { return f.Sync() }

// syncfs is Linux's; elsewhere every file is synced on its own.
func syncfs(*os.File) (supported bool, err error) { return false, nil }

// fileDev is 0 (unknown) where syncfs is not used.
func fileDev(*os.File) uint64 { return 0 }

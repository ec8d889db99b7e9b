package walvfs

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// Name is the VFS name to open a database with ("file:…?vfs=" + Name) once
// Register has succeeded.
const Name = "sessiond-wal"

const (
	frameHeaderSize = 24      // a WAL frame's header, before its page
	maxPending      = 1 << 20 // bytes held before they are written anyway
	firstBuffer     = 16 << 10
	// maxWrite is the most SQLite's unix xWrite passes to one pwrite(2): it
	// masks the count with 0x1ffff (its frames are at most 64 KiB + 24).
	maxWrite = 0x1ffff
)

var (
	registerOnce sync.Once
	registerErr  error

	// base is the default VFS as SQLite had it; ours is its copy with xOpen
	// wrapped. Both live in SQLite's memory for the life of the process.
	base, ours uintptr
	// baseIO is the I/O methods table of the WAL files base opens, and
	// walIO the same table with the methods below in place of some.
	baseIO, walIO sqlite3.Tsqlite3_io_methods
	baseIOPtr     uintptr
	ioOnce        sync.Once

	// files maps each wrapped WAL file (its sqlite3_file address) to its
	// state. SQLite never calls one file's methods concurrently.
	files sync.Map // uintptr → *walFile
)

// Register registers the VFS under Name, once per process; later calls
// return the first call's result. It does not change SQLite's default.
func Register() error {
	registerOnce.Do(func() { registerErr = register() })
	return registerErr
}

func register() error {
	tls := libc.NewTLS() // kept: SQLite holds on to what it allocated here
	base = sqlite3.Xsqlite3_vfs_find(tls, 0)
	if base == 0 {
		return fmt.Errorf("walvfs: SQLite has no default VFS")
	}
	size := unsafe.Sizeof(sqlite3.Tsqlite3_vfs{})
	ours = libc.Xmalloc(tls, libc.Tsize_t(size))
	name, err := libc.CString(Name)
	if ours == 0 || err != nil {
		return fmt.Errorf("walvfs: out of memory")
	}
	v := (*sqlite3.Tsqlite3_vfs)(cptr(ours))
	*v = *(*sqlite3.Tsqlite3_vfs)(cptr(base))
	v.FpNext = 0
	v.FzName = name
	*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&v.FxOpen)) = xOpen
	if rc := sqlite3.Xsqlite3_vfs_register(tls, ours, 0); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("walvfs: register: SQLite error %d", rc)
	}
	return nil
}

// walFile is what the VFS keeps of one open WAL file: the frames appended
// since they were last written, waiting to go in one write.
//
// The bytes are in SQLite's memory (libc.Xmalloc), not Go's: SQLite's own
// xWrite takes them as an address, and nothing must move or collect them.
// The buffer is freed when it is written: an open database between commits
// holds none.
type walFile struct {
	buf    uintptr // the pending bytes, n of them, for the file at offset at
	n, cap int
	at     int64
	end    int64 // the end of the furthest write, written or pending
	commit bool  // the last frame header pending is a commit frame's
}

// add appends iAmt bytes at zBuf to the pending ones.
func (w *walFile) add(tls *libc.TLS, zBuf uintptr, iAmt int32) bool {
	if need := w.n + int(iAmt); need > w.cap {
		c := max(firstBuffer, w.cap)
		for c < need {
			c *= 2
		}
		p := libc.Xrealloc(tls, w.buf, libc.Tsize_t(c))
		if p == 0 {
			return false
		}
		w.buf, w.cap = p, c
	}
	copy(unsafe.Slice((*byte)(cptr(w.buf+uintptr(w.n))), iAmt), unsafe.Slice((*byte)(cptr(zBuf)), iAmt))
	w.n += int(iAmt)
	return true
}

// xOpen opens any file as the default VFS does; a WAL file gets the
// coalescing write methods.
func xOpen(tls *libc.TLS, pVfs, zName, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	b := (*sqlite3.Tsqlite3_vfs)(cptr(base))
	rc := (*(*func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{b.FxOpen})))(tls, pVfs, zName, pFile, flags, pOutFlags)
	if rc != sqlite3.SQLITE_OK || flags&sqlite3.SQLITE_OPEN_WAL == 0 {
		return rc
	}
	f := (*sqlite3.Tsqlite3_file)(cptr(pFile))
	if f.FpMethods == 0 {
		return rc
	}
	ioOnce.Do(func() { initIO(f.FpMethods) })
	if f.FpMethods != baseIOPtr {
		return rc // methods we did not expect: leave the file as it is
	}
	files.Store(pFile, &walFile{})
	f.FpMethods = uintptr(unsafe.Pointer(&walIO))
	return rc
}

// initIO builds walIO from the default VFS's methods for WAL files: every
// method that reads, writes, sizes, syncs or closes the file writes what
// is pending first; xWrite appends to it.
func initIO(p uintptr) {
	baseIOPtr = p
	baseIO = *(*sqlite3.Tsqlite3_io_methods)(cptr(p))
	walIO = baseIO
	*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&walIO.FxClose)) = xClose
	*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&walIO.FxRead)) = xRead
	*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&walIO.FxWrite)) = xWrite
	*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&walIO.FxTruncate)) = xTruncate
	*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&walIO.FxSync)) = xSync
	*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&walIO.FxFileSize)) = xFileSize
	*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&walIO.FxLock)) = xLock
	*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&walIO.FxUnlock)) = xUnlock
	*(*func(*libc.TLS, uintptr, int32, uintptr) int32)(unsafe.Pointer(&walIO.FxFileControl)) = xFileControl
	if baseIO.FiVersion >= 3 && baseIO.FxFetch != 0 {
		*(*func(*libc.TLS, uintptr, int64, int32, uintptr) int32)(unsafe.Pointer(&walIO.FxFetch)) = xFetch
	}
}

// cptr turns an address in SQLite's memory (never Go's) into a pointer.
func cptr(u uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&u)) }

func state(pFile uintptr) *walFile {
	if v, ok := files.Load(pFile); ok {
		return v.(*walFile)
	}
	return nil
}

// flush writes what is pending, in one call of the default xWrite.
func (w *walFile) flush(tls *libc.TLS, pFile uintptr) int32 {
	if w == nil || w.buf == 0 {
		return sqlite3.SQLITE_OK
	}
	rc := int32(sqlite3.SQLITE_OK)
	for done := 0; done < w.n && rc == sqlite3.SQLITE_OK; {
		k := min(w.n-done, maxWrite)
		rc = baseWrite(tls, pFile, w.buf+uintptr(done), int32(k), w.at+int64(done))
		done += k
	}
	// Frames that failed are dropped: the error reaches SQLite through this
	// call, which fails the transaction they belong to.
	libc.Xfree(tls, w.buf)
	w.buf, w.n, w.cap, w.commit = 0, 0, 0, false
	return rc
}

// xWrite holds frames appended at the end of the WAL and writes them in one
// call when the commit frame's page arrives (before SQLite can consider the
// transaction committed), when more than maxPending bytes are held, or
// before anything else touches the file. Every other write (the WAL header
// at offset 0, checksums rewritten in earlier frames, a page written again
// in place) is written at once, after what is pending.
func xWrite(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	w := state(pFile)
	if w == nil {
		return baseWrite(tls, pFile, zBuf, iAmt, iOfst)
	}
	contiguous := w.n > 0 && iOfst == w.at+int64(w.n)
	if !contiguous {
		if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
			return rc
		}
		if iAmt != frameHeaderSize || iOfst < w.end || iOfst == 0 {
			// Not a frame appended: write it now. A write at offset 0 is
			// the WAL header of a WAL that starts again from its beginning.
			rc := baseWrite(tls, pFile, zBuf, iAmt, iOfst)
			if iOfst == 0 {
				w.end = int64(iAmt)
			} else {
				w.end = max(w.end, iOfst+int64(iAmt))
			}
			return rc
		}
		w.at = iOfst
	}
	if !w.add(tls, zBuf, iAmt) {
		if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
			return rc
		}
		return sqlite3.SQLITE_IOERR_NOMEM
	}
	w.end = max(w.end, iOfst+int64(iAmt))
	if iAmt == frameHeaderSize {
		// Bytes 4-7 of a frame header: the database size after a commit
		// frame, zero in every other frame.
		w.commit = binary.BigEndian.Uint32(unsafe.Slice((*byte)(cptr(zBuf+4)), 4)) != 0
		return sqlite3.SQLITE_OK
	}
	if w.commit || w.n >= maxPending {
		return w.flush(tls, pFile)
	}
	return sqlite3.SQLITE_OK
}

// writes counts the writes passed to the default VFS, for tests.
var writes atomic.Int64

func baseWrite(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	writes.Add(1)
	return (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&struct{ uintptr }{baseIO.FxWrite})))(tls, pFile, zBuf, iAmt, iOfst)
}

func xClose(tls *libc.TLS, pFile uintptr) int32 {
	w := state(pFile)
	rc := w.flush(tls, pFile)
	files.Delete(pFile)
	if rc2 := (*(*func(*libc.TLS, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{baseIO.FxClose})))(tls, pFile); rc == sqlite3.SQLITE_OK {
		rc = rc2
	}
	return rc
}

func xRead(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	if rc := state(pFile).flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, uintptr, int32, int64) int32)(unsafe.Pointer(&struct{ uintptr }{baseIO.FxRead})))(tls, pFile, zBuf, iAmt, iOfst)
}

func xTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	w := state(pFile)
	if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	if w != nil {
		w.end = min(w.end, size)
	}
	return (*(*func(*libc.TLS, uintptr, int64) int32)(unsafe.Pointer(&struct{ uintptr }{baseIO.FxTruncate})))(tls, pFile, size)
}

func xSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	if rc := state(pFile).flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&struct{ uintptr }{baseIO.FxSync})))(tls, pFile, flags)
}

func xFileSize(tls *libc.TLS, pFile, pSize uintptr) int32 {
	if rc := state(pFile).flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{baseIO.FxFileSize})))(tls, pFile, pSize)
}

func xLock(tls *libc.TLS, pFile uintptr, lock int32) int32 {
	if rc := state(pFile).flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&struct{ uintptr }{baseIO.FxLock})))(tls, pFile, lock)
}

func xUnlock(tls *libc.TLS, pFile uintptr, lock int32) int32 {
	if rc := state(pFile).flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int32) int32)(unsafe.Pointer(&struct{ uintptr }{baseIO.FxUnlock})))(tls, pFile, lock)
}

func xFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	if rc := state(pFile).flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int32, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{baseIO.FxFileControl})))(tls, pFile, op, pArg)
}

func xFetch(tls *libc.TLS, pFile uintptr, iOfst int64, iAmt int32, pp uintptr) int32 {
	if rc := state(pFile).flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return (*(*func(*libc.TLS, uintptr, int64, int32, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{baseIO.FxFetch})))(tls, pFile, iOfst, iAmt, pp)
}

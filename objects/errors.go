package objects

import (
	"errors"
	"fmt"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var (
	// ErrClosed is returned by calls made after Close began, and by Open on a
	// runtime that was already closed.
	ErrClosed = errors.New("objects: runtime closed")

	// ErrLocked is wrapped by Open's error when another runtime, in this
	// process or another, has Dir open.
	ErrLocked = errors.New("objects: data folder in use by another runtime")

	// ErrInvalidName is wrapped by the error returned for a name that breaks
	// the naming rules (see ValidateName).
	ErrInvalidName = errors.New("objects: invalid name")

	// ErrUnknownNamespace is returned for a namespace that was never registered.
	ErrUnknownNamespace = errors.New("objects: unknown namespace")

	// ErrNotFound is returned by lookups that must not create the object:
	// Namespace.Info of an object that does not exist, and the runtime's
	// own deliveries (an alarm, an event) to one deleted since. (Exists
	// reports false; deleting a missing object succeeds.)
	ErrNotFound = errors.New("objects: not found")

	// ErrMissingFile is wrapped by the error of every call to an object the
	// node index lists whose database file is not there (removed by hand,
	// or a disk restored without it): the runtime does not make an empty
	// object in its place. Delete still removes such an object.
	ErrMissingFile = errors.New("objects: the database file of an existing object is missing")

	// ErrTooLarge is returned when an attachment or tag list exceeds its limit.
	ErrTooLarge = errors.New("objects: too large")

	// ErrNotSupported is returned when an object lacks the handler a delivery
	// needs (for example an alarm fires on an object without an Alarm method).
	ErrNotSupported = errors.New("objects: handler not implemented")

	// ErrDeclined is for a SocketHandler to wrap when it refuses a message
	// it has already answered (an error message to the client, say): its
	// writes roll back like any failed call's, and the runtime neither
	// logs it nor closes the socket.
	ErrDeclined = errors.New("objects: message declined")

	// ErrNotDurable is wrapped by the error of calls whose batch committed
	// in SQLite but whose WAL could not be flushed to the disk (full
	// durability). Their outcome is unknown: the writes are visible to later
	// calls and may or may not survive a crash. The instance is discarded.
	ErrNotDurable = errors.New("objects: committed but not flushed to disk; outcome unknown")

	// ErrDiskFailed is wrapped by Runtime.Fault, and by the error of every
	// call after a WAL flush failed (full durability) or Runtime.Fence:
	// the runtime refuses them all until it is restarted. After a failed
	// fsync the kernel may have dropped the pages it could not write and
	// report the next fsync a success, so no later flush could vouch for
	// the writes before it: a crash could take a WAL's lost frames and
	// every commit after them, acknowledged or not. A restart reads what
	// the disk really holds.
	ErrDiskFailed = errors.New("objects: a flush to the disk failed; calls are refused until the runtime is restarted")
)

// IsDiskFull reports whether err is SQLite's SQLITE_FULL (a database or
// its WAL could not grow: the disk, or the filesystem's quota, is full):
// the call's writes were rolled back, and a later call may succeed once
// there is room. Not a failed flush (ErrDiskFailed): nothing acknowledged
// is in doubt.
func IsDiskFull(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL
}

// OverloadedError is returned, without queueing, by a call to an object whose
// queue is full. RetryAfter is an estimate of when the queue will have room.
type OverloadedError struct {
	Namespace, Name string
	Queued          int
	RetryAfter      time.Duration
}

func (e *OverloadedError) Error() string {
	return fmt.Sprintf("objects: %s/%q overloaded: %d calls queued, retry after %s",
		e.Namespace, e.Name, e.Queued, e.RetryAfter)
}

// PanicError is returned to a call whose function panicked. The call's writes
// are rolled back and the instance is discarded, so the next call sees a
// freshly constructed object.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("objects: call panicked: %v", e.Value) }

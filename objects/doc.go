// Package objects is sessiond's durable-object runtime: named objects, each
// with exactly one live instance, its own SQLite database, and calls run one
// at a time in arrival order.
//
// A Runtime hosts namespaces (classes). Register a Class, Open the runtime,
// then Get a Stub by name and Call it; the first call creates the object,
// later calls wake it if it hibernated. Read Example (example_test.go) first.
//
// # Storage
//
// Open locks Dir (objects.lock, flock(2)): a second runtime on the folder,
// in this process or another, fails with ErrLocked, so that each object has
// one live instance across processes too.
//
// Every object has its own WAL-mode database under Dir/objects/, fanned out
// into two levels of folders. Names never touch the file system: the node
// index (Dir/index.db) assigns each object its file and records its
// creation, last activity, size, usage and alarm, so start-up and alarms
// never open object databases. Each class migrates its schema with PRAGMA
// user_version. New objects take a spare database that was created and
// migrated ahead of time, off the request path.
//
// Databases are opened through walvfs, SQLite's own VFS with the WAL write
// path wrapped so that a transaction's frames go to the file in one system
// call, inside SQLite's write of the commit frame (see that package).
//
// All writes of an object go through its Tx. Queued calls share one
// transaction, each in its own savepoint (a failing call leaves no trace),
// and one commit; results are released only after that commit and the node
// index updates that go with it (durable before visible). The index is a
// second database: a new subscription, or an alarm set or moved earlier, is
// written to it before the commit (refused, the batch fails with nothing
// stored; the commit failing, it is taken back); an alarm moved later or
// cleared, or a subscription ended, after it (refused, the calls keep their
// success, the change is logged and not made). A crash between the two
// leaves a subscription spare, never one lost. The object's alarm is also
// in its own database (table _alarm), written in the commit: when the
// index's alarm comes due, the scheduler goes by that record, so an alarm
// the crash left earlier or uncleared in the index is moved or cleared
// there rather than delivered (objects whose record predates the table
// follow the index). With
// DurabilityFull the commit's WAL is flushed to the disk first; one flush
// serves a whole batch, and commits of objects waiting at the same moment
// share one syncfs (see syncer).
//
// # Lifecycle
//
// NewRuntime, set fields, Register, Open, use, Close. An object is active
// (database open), hibernated (evicted after IdleTimeout, or early under
// MaxOpen, while the runtime still holds its sockets) or cold (on disk only).
// Hibernation is invisible to callers; an object that must stay awake for
// work outside calls takes a Handle.Hold. Close stops accepting calls, waits
// for running ones (ShutdownTimeout), closes sockets with 1001 and every
// database.
//
// # Concurrency
//
// Runtime, Namespace, Stub, Handle and Socket are safe for concurrent use.
// A Func, Class.New, AlarmHandler.Alarm and SocketHandler methods of one
// object never run concurrently; a Tx is valid only during its call. Every
// goroutine the runtime starts (one worker per object with queued calls, one
// reader per held socket, the alarm scheduler, spare makers) is stopped and
// waited for by Close.
//
// # Errors
//
// Sentinels are in errors.go: ErrClosed after Close, ErrInvalidName for bad
// names, ErrNotSupported when an object lacks a handler, ErrNotDurable when
// a commit's WAL flush failed (outcome unknown), and ErrDiskFailed for
// every call after that: the runtime is fenced until restarted (see
// Runtime.Fault). A full queue fails
// fast with *OverloadedError (with RetryAfter); a panicking call returns
// *PanicError and its instance is rebuilt.
package objects

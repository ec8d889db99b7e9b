package objects

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the Runtime's fields.
const (
	// DefaultIdleTimeout is how long an object stays in memory with nothing to do.
	DefaultIdleTimeout = 10 * time.Second
	// DefaultMaxOpen caps open object databases (each ~3 file descriptors).
	DefaultMaxOpen = 2000
	// DefaultQueueLimit is how many calls may wait for one object.
	DefaultQueueLimit = 1024
	// DefaultMaxBatch is how many queued calls share one transaction.
	DefaultMaxBatch = 256
	// DefaultCacheKiB is the SQLite page cache of each object database.
	DefaultCacheKiB = 256
	// DefaultSpares is how many ready-made databases each namespace keeps.
	DefaultSpares = 4
	// DefaultShutdownTimeout bounds how long Close waits for running calls.
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultDurability is the default commit durability.
	DefaultDurability = DurabilityFull
)

// Runtime hosts named durable objects on one node: it routes calls to the one
// instance of each name, runs them one at a time, stores each object in its
// own SQLite database, fires alarms, holds WebSockets across hibernation and
// puts idle objects to sleep.
//
// Set the exported fields before Open; they must not change afterwards.
// All methods are safe for concurrent use.
type Runtime struct {
	// Dir is the data folder: index.db and objects/ live here. Required.
	Dir string
	// IdleTimeout: an object with nothing in flight for this long is
	// hibernated (database closed, instance dropped). Default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxOpen caps open object databases, spares included. When a wake would
	// pass it, the least recently used idle objects hibernate early. Calls in
	// flight are never evicted, so a burst of busy objects can pass it briefly.
	MaxOpen int
	// QueueLimit is how many calls may queue for one object before calls fail
	// fast with *OverloadedError. Default DefaultQueueLimit.
	QueueLimit int
	// MaxBatch caps how many queued calls run in one transaction and share
	// one commit. 1 disables write coalescing. Default DefaultMaxBatch.
	MaxBatch int
	// Durability of every commit. Default DefaultDurability (full).
	Durability Durability
	// CacheKiB is the page cache of each object database, in KiB.
	// Default DefaultCacheKiB.
	CacheKiB int
	// Spares is how many empty, migrated databases each namespace keeps
	// ready so that creating an object does no schema work on the request
	// path. 0 means DefaultSpares; negative disables spares.
	Spares int
	// ShutdownTimeout bounds how long Close waits for calls in flight;
	// then it cancels their contexts (cause ErrClosed) and waits for them
	// to return.
	ShutdownTimeout time.Duration
	// SocketReadLimit is the largest WebSocket message accepted, in bytes;
	// a larger one closes the socket with 1009. Default DefaultSocketReadLimit.
	SocketReadLimit int64
	// SocketReadMemory bounds the bytes of WebSocket messages being read
	// or handled at once, over every socket (messages under 1 MiB are not
	// counted): a message that would pass it closes its socket with 1013
	// (try again later). Without it, clients that each send most of a
	// large message and then stop held that much memory apiece until
	// their sockets closed. Default DefaultSocketReadMemory.
	SocketReadMemory int64
	// AlarmRetryBase is the first retry delay of a failed alarm.
	// Default DefaultAlarmRetryBase.
	AlarmRetryBase time.Duration
	// AlarmMaxRetries is how many retries a failed alarm gets.
	// Default DefaultAlarmMaxRetries.
	AlarmMaxRetries int
	// Bus carries events (Tx.Publish, Tx.Subscribe); nil disables them.
	Bus EventBus
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	socketBytes atomic.Int64 // bytes of socket messages counted against SocketReadMemory

	mu      sync.Mutex // guards state, entries, asleepPublished; taken before any entry's mu
	state   int        // stateNew, stateOpen, stateClosed
	classes map[string]*Namespace
	entries map[entryKey]*entry
	// asleepPublished (guarded by mu) holds what the bus acknowledged of
	// an object's outbox after its entry was dropped (see notePublished),
	// for the entry made at its next wake: without it that wake would
	// publish the acknowledged rows again.
	asleepPublished map[entryKey]int64

	lruMu sync.Mutex // guards idle; a leaf lock, taken after an entry's mu
	idle  list.List  // *entry: active and idle, least recently used first

	index *nodeIndex
	// unlockDir releases Dir's lock (lockDir), taken by Open, at Close.
	unlockDir func()
	ctx       context.Context // the runtime's lifetime
	cancel    context.CancelCauseFunc
	wg        sync.WaitGroup // owned goroutines
	inflight  sync.WaitGroup // queued and running calls
	stopping  atomic.Bool    // Close gave up waiting: calls run with a cancelled context

	open      atomic.Int64          // open object databases, spares included
	syncer    *syncer               // groups the WAL syncs of full durability
	fault     atomic.Pointer[error] // set once by a failed WAL flush (see ErrDiskFailed)
	workers   *workers              // goroutines for object workers and drains
	subs      subscriptions         // the node index's subscriptions, in memory
	opens     atomic.Int64          // object databases opened for an existing object
	creates   atomic.Int64          // object databases created (spares included)
	commits   atomic.Int64
	alarmWake chan struct{}

	dirsMu sync.Mutex
	dirs   map[string]bool // folders under Dir known to exist, their entries synced (ensureDir)

	drainMu  sync.Mutex
	draining map[entryKey]*drainState // outbox drainers running
	busStop  func()

	maxEvent      int // the largest event Tx.Publish takes: MaxEventBytes, or less if the Bus says so (LimitedBus)
	filterMu      sync.Mutex
	filterApplied []string    // patterns last given to a FilteringBus
	filterSet     bool        // filterApplied is in force
	filterRetry   *time.Timer // a failed filter change tried again
}

const (
	stateNew = iota
	stateOpen
	stateClosed
)

type entryKey struct{ ns, name string }

// NewRuntime returns a runtime storing its data under dir, with defaults.
func NewRuntime(dir string) *Runtime {
	return &Runtime{
		Dir:              dir,
		IdleTimeout:      DefaultIdleTimeout,
		MaxOpen:          DefaultMaxOpen,
		QueueLimit:       DefaultQueueLimit,
		MaxBatch:         DefaultMaxBatch,
		Durability:       DefaultDurability,
		CacheKiB:         DefaultCacheKiB,
		Spares:           DefaultSpares,
		ShutdownTimeout:  DefaultShutdownTimeout,
		SocketReadLimit:  DefaultSocketReadLimit,
		SocketReadMemory: DefaultSocketReadMemory,
		syncer:           &syncer{},
		workers:          newWorkers(),
	}
}

// Class describes a kind of object.
type Class struct {
	// Migrations[i] is the SQL script that brings an object's schema from
	// version i to i+1 (PRAGMA user_version). Never edit a released step;
	// append new ones.
	Migrations []string
	// New builds the in-memory instance of an object when it is created or
	// woken. tx reads the object's stored state (writes are allowed and
	// committed before the first call runs, but cost a commit per wake).
	// Required.
	New func(ctx context.Context, h *Handle, tx *Tx) (any, error)
	// CacheKiB is the page cache of each of the class's databases while
	// open, in KiB; 0 means the runtime's CacheKiB. For a class of one or
	// a few busy objects whose database outgrows the default (a node-wide
	// journal, say): a commit that touches more pages than the cache holds
	// reads them back from the file and spills them to the WAL before it
	// commits.
	CacheKiB int
	// CheckpointFrames is how many pages the commits of one of the class's
	// databases write to its WAL, on average, before the runtime copies
	// them into the database file (each threshold is drawn from half to one
	// and a half of it); 0 means 1,000, SQLite's default. A larger one
	// suits a database whose commits rewrite the same pages again and
	// again: a checkpoint copies each page once however many commits wrote
	// it, at the cost of a WAL of up to 1.5 × CheckpointFrames pages on
	// disk (4 KiB each).
	CheckpointFrames int
	// RecreateMissing: the class's objects hold only what can be had again
	// from elsewhere (a list other objects keep up to date, say), so an
	// object whose database file is missing is made again, empty, with an
	// ERROR in the log, rather than failing every call with ErrMissingFile
	// until it is deleted. For objects that hold data of their own, leave
	// it false: an empty object in place of a lost one would hide the loss.
	RecreateMissing bool
}

// Register adds a namespace. It must be called before Open.
func (rt *Runtime) Register(name string, c Class) (*Namespace, error) {
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("register namespace: %w", err)
	}
	if c.New == nil {
		return nil, fmt.Errorf("register namespace %q: Class.New is nil", name)
	}
	if c.CacheKiB < 0 || c.CheckpointFrames < 0 {
		return nil, fmt.Errorf("register namespace %q: Class.CacheKiB %d or CheckpointFrames %d is negative", name, c.CacheKiB, c.CheckpointFrames)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.state != stateNew {
		return nil, fmt.Errorf("register namespace %q: runtime already open", name)
	}
	if rt.classes == nil {
		rt.classes = make(map[string]*Namespace)
	}
	if _, ok := rt.classes[name]; ok {
		return nil, fmt.Errorf("register namespace %q: already registered", name)
	}
	ns := &Namespace{rt: rt, name: name, class: c, refill: make(chan struct{}, 1)}
	rt.classes[name] = ns
	return ns, nil
}

// Namespace returns a registered namespace.
func (rt *Runtime) Namespace(name string) (*Namespace, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	ns, ok := rt.classes[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownNamespace, name)
	}
	return ns, nil
}

func (rt *Runtime) logger() *slog.Logger {
	if rt.Logger != nil {
		return rt.Logger
	}
	return slog.Default()
}

func (rt *Runtime) setDefaults() {
	if rt.IdleTimeout <= 0 {
		rt.IdleTimeout = DefaultIdleTimeout
	}
	if rt.MaxOpen <= 0 {
		rt.MaxOpen = DefaultMaxOpen
	}
	if rt.QueueLimit <= 0 {
		rt.QueueLimit = DefaultQueueLimit
	}
	if rt.MaxBatch <= 0 {
		rt.MaxBatch = DefaultMaxBatch
	}
	if rt.Durability == 0 {
		rt.Durability = DefaultDurability
	}
	if rt.CacheKiB <= 0 {
		rt.CacheKiB = DefaultCacheKiB
	}
	if rt.Spares == 0 {
		rt.Spares = DefaultSpares
	}
	if rt.ShutdownTimeout <= 0 {
		rt.ShutdownTimeout = DefaultShutdownTimeout
	}
	if rt.SocketReadLimit <= 0 {
		rt.SocketReadLimit = DefaultSocketReadLimit
	}
	if rt.SocketReadMemory <= 0 {
		rt.SocketReadMemory = DefaultSocketReadMemory
	}
}

// Open opens the node index and starts the alarm scheduler and spare makers.
// It opens no object database: start-up is O(1) in the number of objects
// (plus the few spares and any deletions a crash interrupted).
func (rt *Runtime) Open(ctx context.Context) error {
	if err := rt.openLocked(ctx); err != nil {
		return err
	}
	if err := rt.startEvents(ctx); err != nil {
		rt.Close()
		return err
	}
	return nil
}

// finishTrash finishes the deletions a crash interrupted: their index
// rows are gone already, their files not. A path whose files cannot be
// removed (no permission, a folder in the way) is logged and keeps its
// record, for the next start: one stuck deletion must not keep the
// runtime from opening. Only an unreadable trash fails it.
func finishTrash(ctx context.Context, dir string, x *nodeIndex, log *slog.Logger) error {
	trash, err := x.trash(ctx)
	if err != nil {
		return fmt.Errorf("read trash: %w", err)
	}
	for _, p := range trash {
		// removeDBFiles syncs the folder: the record goes only once the
		// files cannot come back.
		if err := removeDBFiles(filepath.Join(dir, p)); err != nil {
			log.Error("objects: remove files of a deleted object; will try again at the next start", "path", p, "err", err)
			continue
		}
		if err := x.trashDone(ctx, p); err != nil {
			log.Warn("objects: clear trash record; will try again at the next start", "path", p, "err", err)
		}
	}
	return nil
}

func (rt *Runtime) openLocked(ctx context.Context) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.state != stateNew {
		return ErrClosed
	}
	if rt.Dir == "" {
		return errors.New("objects: Runtime.Dir is empty")
	}
	rt.setDefaults()
	// The folders above Dir get mkdir -p's mode (they may be shared);
	// Dir and everything in it are private (dirMode, fileMode).
	if err := mkdirSynced(filepath.Dir(filepath.Clean(rt.Dir)), 0o755); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	if err := mkdirSynced(rt.Dir, dirMode); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	unlock, err := lockDir(rt.Dir)
	if err != nil {
		return fmt.Errorf("open runtime: %w", err)
	}
	x, err := openIndex(ctx, rt.Dir, rt.Durability)
	if err != nil {
		unlock()
		return err
	}
	if err := finishTrash(ctx, rt.Dir, x, rt.logger()); err != nil {
		x.close()
		unlock()
		return err
	}
	rt.index, rt.unlockDir = x, unlock
	rt.maxEvent = rt.busEventLimit()
	rt.entries = make(map[entryKey]*entry)
	rt.asleepPublished = make(map[entryKey]int64)
	rt.ctx, rt.cancel = context.WithCancelCause(context.Background())
	rt.alarmWake = make(chan struct{}, 1)
	rt.state = stateOpen
	rt.wg.Add(1)
	go rt.runAlarms()
	if rt.Spares > 0 {
		for _, ns := range rt.classes {
			rt.wg.Add(1)
			go ns.makeSpares()
		}
	}
	rt.wg.Add(1)
	go rt.dropStaleSpares()
	if fi, err := os.Stat(filepath.Join(rt.Dir, "index.db")); err == nil {
		rt.wg.Add(1)
		go rt.watchIndex(fi)
	}
	return nil
}

// indexWatchInterval is how often the runtime checks that its node index
// is still the file in its data folder. A var for tests.
var indexWatchInterval = time.Second

// watchIndex fences the runtime (Fence) once the data folder's index.db is
// no longer the file it opened as (at): the folder deleted or replaced by
// hand. SQLite writes on into the open file, unlinked, so calls would be
// answered as committed while nothing of them can be found again: within
// indexWatchInterval of the loss, every call is refused instead, and a
// health check that restarts on the fault recovers.
func (rt *Runtime) watchIndex(at os.FileInfo) {
	defer rt.wg.Done()
	path := filepath.Join(rt.Dir, "index.db")
	t := time.NewTicker(indexWatchInterval)
	defer t.Stop()
	for {
		select {
		case <-rt.ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(path)
		if err == nil && os.SameFile(fi, at) {
			continue
		}
		if err == nil {
			err = errors.New("another file is in its place")
		}
		rt.Fence(fmt.Errorf("the data folder's node index %s is gone from under the running runtime: %w", path, err))
		return
	}
}

// Close stops accepting calls, waits (up to ShutdownTimeout) for calls in
// flight, then cancels the contexts of those still running and waits for
// them to return, closes every socket with 1001 (going away), hibernates every
// instance, closes every database and returns. It is safe to call more than
// once.
func (rt *Runtime) Close() error {
	rt.mu.Lock()
	if rt.state != stateOpen {
		rt.state = stateClosed
		rt.mu.Unlock()
		return nil
	}
	rt.state = stateClosed
	rt.mu.Unlock()
	rt.filterMu.Lock()
	if rt.filterRetry != nil {
		rt.filterRetry.Stop() // one already running is waited for with rt.wg
		rt.filterRetry = nil
	}
	rt.filterMu.Unlock()
	if rt.busStop != nil {
		rt.busStop() // no new deliveries; those in flight finish below
	}

	done := make(chan struct{})
	go func() { rt.inflight.Wait(); close(done) }()
	timer := time.NewTimer(rt.ShutdownTimeout)
	select {
	case <-done:
	case <-timer.C:
		rt.logger().Warn("objects: calls still running at shutdown; cancelling them", "timeout", rt.ShutdownTimeout)
		rt.stopCalls()
	}
	timer.Stop()
	rt.cancel(ErrClosed)

	rt.mu.Lock()
	entries := make([]*entry, 0, len(rt.entries))
	for _, e := range rt.entries {
		entries = append(entries, e)
	}
	rt.mu.Unlock()
	closeSockets(socketsOf(entries...), StatusGoingAway, "server shutting down", false)
	<-done // sockets closed: their deliveries end, so every call ends
	// A worker releases its last call before it stops touching its
	// instance: wait for every owned goroutine before taking instances.
	rt.wg.Wait()
	rt.workers.stop()
	for _, e := range entries {
		e.mu.Lock()
		if e.idleTimer != nil {
			e.idleTimer.Stop()
		}
		inst := e.inst
		e.inst = nil
		e.mu.Unlock()
		if inst != nil {
			e.sleep(context.Background(), inst)
		}
	}
	for _, ns := range rt.classes {
		ns.closeSpares()
	}
	err := rt.index.close()
	if rt.unlockDir != nil {
		rt.unlockDir()
	}
	return err
}

// stopCalls cancels the context of every running call, and makes every
// call that starts later start with a cancelled one. A running call
// publishes its cancel func (entry.stop) before it reads stopping, so each
// call is reached by one side or the other.
func (rt *Runtime) stopCalls() {
	rt.stopping.Store(true)
	rt.mu.Lock()
	entries := make([]*entry, 0, len(rt.entries))
	for _, e := range rt.entries {
		entries = append(entries, e)
	}
	rt.mu.Unlock()
	for _, e := range entries {
		e.mu.Lock()
		if e.stop != nil {
			e.stop(ErrClosed)
		}
		e.mu.Unlock()
	}
}

// Stats is a snapshot of the runtime's counters.
type Stats struct {
	Active        int   // objects in memory with an open database
	Entries       int   // objects with any state in memory (active, queued or holding sockets)
	OpenDatabases int64 // open object databases, spares included
	ObjectOpens   int64 // databases of existing objects opened (wakes from disk)
	Creates       int64 // object databases created, spares included
	Commits       int64 // transactions committed by batches of calls
	// SyncedCommits counts the commits made durable by a WAL sync (full
	// durability, calls not relaxed); Syncs, the sync system calls that did
	// it (one syncfs covers every commit waiting at the time).
	SyncedCommits int64
	Syncs         int64
	// Workers counts the pooled goroutines that run object workers and
	// outbox drains, busy or waiting (up to 2 s) for the next job.
	Workers int64
}

// Fault returns nil while the runtime serves calls, and an error wrapping
// ErrDiskFailed (and the flush's own error) once a WAL flush has failed:
// every call is then refused until a restart. A health check shows it.
func (rt *Runtime) Fault() error {
	if p := rt.fault.Load(); p != nil {
		return *p
	}
	return nil
}

// Fence refuses every call from now on, as a failed WAL flush does (see
// ErrDiskFailed), with cause as the reason Fault gives: for a program that
// learns of trouble with the disk by other means, and for tests. The first
// cause is the one kept and logged; the fence lasts until a restart.
func (rt *Runtime) Fence(cause error) {
	f := fmt.Errorf("%w (%w)", ErrDiskFailed, cause)
	if rt.fault.CompareAndSwap(nil, &f) {
		rt.logger().Error("objects: fenced: refusing every call until restart; the disk may have lost writes", "err", cause)
	}
}

// Stats returns current counters. Cheap enough for tests and metrics.
func (rt *Runtime) Stats() Stats {
	rt.mu.Lock()
	s := Stats{Entries: len(rt.entries)}
	entries := make([]*entry, 0, len(rt.entries))
	for _, e := range rt.entries {
		entries = append(entries, e)
	}
	rt.mu.Unlock()
	for _, e := range entries {
		e.mu.Lock()
		if e.inst != nil {
			s.Active++
		}
		e.mu.Unlock()
	}
	s.OpenDatabases = rt.open.Load()
	s.ObjectOpens = rt.opens.Load()
	s.Creates = rt.creates.Load()
	s.Commits = rt.commits.Load()
	s.Syncs, s.SyncedCommits = rt.syncer.stats()
	s.Workers = rt.workers.live.Load()
	return s
}

// entry returns the live entry for a key, creating it. Called with rt.mu held.
func (rt *Runtime) entryLocked(ns *Namespace, name string) *entry {
	k := entryKey{ns.name, name}
	e := rt.entries[k]
	if e == nil {
		e = &entry{rt: rt, ns: ns, name: name}
		if seq, ok := rt.asleepPublished[k]; ok {
			e.published.Store(seq)
			delete(rt.asleepPublished, k)
		}
		rt.entries[k] = e
	}
	return e
}

// lookupEntry returns the existing live entry for a key, or nil.
func (rt *Runtime) lookupEntry(ns, name string) *entry {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.entries[entryKey{ns, name}]
}

// maybeDrop forgets an entry that holds nothing: no instance, no calls, no
// sockets. A hibernated object without sockets then costs no memory.
func (rt *Runtime) maybeDrop(e *entry) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead || e.running || len(e.queue) > 0 || e.inst != nil || len(e.sockets) > 0 || e.holds > 0 {
		return
	}
	e.dead = true
	k := entryKey{e.ns.name, e.name}
	if rt.entries[k] == e {
		delete(rt.entries, k)
	}
	if p := e.published.Load(); p > e.sleptDeleted.Load() {
		// Acknowledged after the sleep deleted what was published: the
		// rows are still in the file, and the next wake (or a deletion's
		// handover) must know they went out.
		rt.asleepPublished[k] = max(rt.asleepPublished[k], p)
	}
}

// makeRoom hibernates least recently used idle objects until a database can
// be opened within MaxOpen. self is never evicted.
func (rt *Runtime) makeRoom(self *entry) {
	for tries := 0; rt.open.Load() >= int64(rt.MaxOpen) && tries < 64; tries++ {
		rt.lruMu.Lock()
		el := rt.idle.Front()
		if el == nil {
			rt.lruMu.Unlock()
			return
		}
		victim := el.Value.(*entry)
		rt.idle.Remove(el)
		victim.lruElem = nil
		rt.lruMu.Unlock()
		if victim != self {
			victim.evict()
		}
	}
}

// Namespace is one registered class of objects. Safe for concurrent use.
type Namespace struct {
	rt    *Runtime
	name  string
	class Class

	spareMu sync.Mutex
	spares  []*instanceDB
	refill  chan struct{}

	autoMu   sync.RWMutex
	autoReq  []byte
	autoResp []byte
}

// Name returns the namespace's name.
func (ns *Namespace) Name() string { return ns.name }

// Get returns the stub for the object called name. It does not create or
// wake the object: the first call does.
func (ns *Namespace) Get(name string) (*Stub, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	return &Stub{ns: ns, name: name}, nil
}

// Exists reports whether an object has been created (and not deleted),
// without waking it.
func (ns *Namespace) Exists(ctx context.Context, name string) (bool, error) {
	if err := ns.rt.checkOpen(); err != nil {
		return false, err
	}
	// An awake object exists (its creation is recorded before it wakes, and
	// Delete puts it to sleep first): no index query on the hot path.
	if e := ns.rt.lookupEntry(ns.name, name); e != nil {
		e.mu.Lock()
		awake := e.inst != nil
		e.mu.Unlock()
		if awake {
			return true, nil
		}
	}
	_, ok, err := ns.rt.index.lookup(ctx, ns.name, name)
	return ok, err
}

// Info returns what the node index knows of an object, with the usage of
// its current awake period added. It does not wake the object.
func (ns *Namespace) Info(ctx context.Context, name string) (ObjectInfo, error) {
	if err := ns.rt.checkOpen(); err != nil {
		return ObjectInfo{}, err
	}
	oi, err := ns.rt.index.info(ctx, ns.name, name)
	if err != nil {
		return oi, err
	}
	if e := ns.rt.lookupEntry(ns.name, name); e != nil {
		e.mu.Lock()
		u := e.usage
		if e.inst != nil {
			u.active += time.Since(e.inst.wokeAt)
			oi.Usage.SizeBytes = dbSize(filepath.Join(ns.rt.Dir, e.inst.path))
			oi.SizeBytes = oi.Usage.SizeBytes
		}
		e.mu.Unlock()
		oi.Usage.Calls += u.calls
		oi.Usage.RowsRead += u.rowsRead
		oi.Usage.RowsWritten += u.rowsWritten
		oi.Usage.Active += u.active
	}
	return oi, nil
}

// List returns up to limit object names after `after`, in byte order,
// from the node index.
func (ns *Namespace) List(ctx context.Context, after string, limit int) ([]string, error) {
	if err := ns.rt.checkOpen(); err != nil {
		return nil, err
	}
	return ns.rt.index.list(ctx, ns.name, after, limit)
}

// SetAutoResponse makes every socket of this namespace answer a text message
// equal to request with response, without waking its object. A nil request
// turns it off.
func (ns *Namespace) SetAutoResponse(request, response []byte) {
	ns.autoMu.Lock()
	defer ns.autoMu.Unlock()
	ns.autoReq = append([]byte(nil), request...)
	ns.autoResp = append([]byte(nil), response...)
	if request == nil {
		ns.autoReq, ns.autoResp = nil, nil
	}
}

func (rt *Runtime) checkOpen() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.state != stateOpen {
		return ErrClosed
	}
	return nil
}

// untilRoom runs call, the runtime's own delivery to an object, again
// after each OverloadedError once its RetryAfter has passed, until it is
// not refused for a full queue or the runtime closes; it returns call's
// last error.
func (rt *Runtime) untilRoom(call func() error) error {
	for {
		err := call()
		var over *OverloadedError
		if !errors.As(err, &over) || !rt.pause(over.RetryAfter) {
			return err
		}
	}
}

// pause waits d, or until the runtime closes: it reports whether it waited
// d out.
func (rt *Runtime) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-rt.ctx.Done():
		return false
	}
}

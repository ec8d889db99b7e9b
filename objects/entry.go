package objects

import (
	"container/list"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// entry is the runtime's record of one object while anything about it is in
// memory: queued calls, the active instance, held sockets. Its worker
// goroutine (at most one, flagged by running) is the only code that touches
// inst, which is what makes calls serial.
type entry struct {
	rt   *Runtime
	ns   *Namespace
	name string

	mu        sync.Mutex
	queue     []*call
	running   bool // a worker (or a hibernation) owns inst
	dead      bool // removed from rt.entries; enqueue must look again
	inst      *instance
	holds     int
	stop      context.CancelCauseFunc // cancels the running call's context (Runtime.stopCalls)
	sockets   map[*Socket]struct{}
	idleTimer *time.Timer
	lruElem   *list.Element // in rt.idle while active and idle (guarded by rt.lruMu)
	usage     usageDelta    // not yet written to the index
	// outboxMarked: the node index has this object in outbox_pending. Used
	// only by the object's worker (inside calls and batch commits).
	outboxMarked bool
	perCall      time.Duration // moving average of call time, for RetryAfter
	// published is the outbox seq up to which the bus has acknowledged the
	// object's events (set by its drainer, read by its worker).
	published atomic.Int64
	// sleptDeleted is the seq up to which the last sleep deleted published
	// rows from the object's file: an acknowledgement after it, before the
	// entry is dropped, is kept for the next wake (see maybeDrop).
	sleptDeleted atomic.Int64
}

// instance is an active object: its open database and the value Class.New built.
type instance struct {
	db        *instanceDB
	path      string // relative to rt.Dir
	obj       any
	h         *Handle
	needsMeta bool // new object: its name is written in the first commit
	wokeAt    time.Time
	discard   bool // rebuild before the next call (after a panic or failed commit)
	hasOutbox bool // its _outbox table is known to exist
	hasAlarm  bool // its _alarm table is known to exist
	// deleted is the seq up to which published outbox rows (entry.published)
	// are gone. The rows in between are deleted by the next batch that
	// writes anyway, or at sleep: a drain costs no commit of its own.
	deleted int64
}

func (e *entry) logger() interface {
	Warn(string, ...any)
	Error(string, ...any)
} {
	return e.rt.logger().With("namespace", e.ns.name, "object", e.name)
}

// work runs queued calls in batches until the queue is empty, then gives up
// the worker role.
func (e *entry) work() {
	defer e.rt.wg.Done()
	for e.step() {
	}
}

// runInline is the worker role taken by the caller whose call found the
// object idle: it runs the batch holding its own call on its own goroutine,
// which saves two goroutine hand-offs per call (a wake-up of a parked thread
// each, 20-30 µs when the machine idles through an fsync). Calls that queued
// meanwhile go on in a pooled worker, so the caller waits for nobody else's
// batch after its own.
func (e *entry) runInline() {
	if !e.step() {
		e.rt.wg.Done()
		return
	}
	e.mu.Lock()
	more := len(e.queue) > 0
	e.mu.Unlock()
	if !more && !e.step() {
		e.rt.wg.Done()
		return
	}
	e.rt.workers.run(e.work) // keeps the role and the WaitGroup count
}

// step runs the next batch. When the queue is empty it gives up the worker
// role instead and returns false.
func (e *entry) step() bool {
	e.mu.Lock()
	batch := e.takeLocked()
	if batch == nil {
		e.running = false
		e.settleLocked()
		e.mu.Unlock()
		e.rt.maybeDrop(e)
		return false
	}
	e.mu.Unlock()
	if err := e.rt.Fault(); err != nil { // queued before a flush failed
		for _, c := range batch {
			c.err = err
			e.release(c)
		}
		return true
	}
	if batch[0].kind == kindDelete {
		e.delete(batch[0])
		return true
	}
	if e.inst == nil {
		if batch = e.dropIfGone(batch); len(batch) == 0 {
			return true
		}
		if err := e.wakeFor(batch[0].ctx); err != nil {
			for _, c := range batch {
				c.err = err
				e.release(c)
			}
			return true
		}
	}
	e.runBatch(batch)
	if e.inst.discard {
		inst := e.inst
		e.inst = nil
		e.sleep(context.Background(), inst)
	}
	return true
}

// dropIfGone answers the calls of batch that run only on an existing
// object (callExisting) with ErrNotFound when the object does not exist,
// and returns the others. The object is asleep or not yet made.
func (e *entry) dropIfGone(batch []*call) []*call {
	if !slices.ContainsFunc(batch, (*call).existingOnly) {
		return batch
	}
	_, ok, err := e.rt.index.lookup(context.Background(), e.ns.name, e.name)
	if err == nil && ok {
		return batch
	}
	if err == nil {
		err = fmt.Errorf("%s/%q: %w", e.ns.name, e.name, ErrNotFound)
	}
	return slices.DeleteFunc(batch, func(c *call) bool {
		if !c.existingOnly() {
			return false
		}
		if c.state.CompareAndSwap(callQueued, callRunning) {
			c.err = err
			e.release(c)
		} else {
			e.rt.inflight.Done()
		}
		return true
	})
}

// takeLocked removes the next batch from the queue: up to MaxBatch calls,
// stopping before a delete (which always runs alone). Cancelled calls are
// dropped here.
func (e *entry) takeLocked() []*call {
	var batch []*call
	i := 0
	for ; i < len(e.queue) && len(batch) < e.rt.MaxBatch; i++ {
		c := e.queue[i]
		if c.state.Load() == callCancelled {
			e.rt.inflight.Done()
			continue
		}
		if c.kind == kindDelete {
			if len(batch) == 0 {
				batch = append(batch, c)
				i++
			}
			break
		}
		if len(batch) > 0 && c.relaxed != batch[0].relaxed {
			break // one commit, one durability
		}
		batch = append(batch, c)
	}
	clear(e.queue[:i])
	e.queue = e.queue[i:]
	if len(e.queue) == 0 {
		e.queue = nil
	}
	return batch
}

func (e *entry) release(c *call) {
	close(c.done)
	e.rt.inflight.Done()
}

// settleLocked arms the idle timer of an active entry that has nothing in
// flight, and puts it at the back of the LRU list.
func (e *entry) settleLocked() {
	if e.inst == nil || e.holds > 0 || len(e.queue) > 0 || e.running {
		return
	}
	if e.idleTimer == nil {
		e.idleTimer = time.AfterFunc(e.rt.IdleTimeout, e.onIdle)
	} else {
		e.idleTimer.Reset(e.rt.IdleTimeout)
	}
	e.rt.lruMu.Lock()
	if e.lruElem != nil {
		e.rt.idle.MoveToBack(e.lruElem)
	} else {
		e.lruElem = e.rt.idle.PushBack(e)
	}
	e.rt.lruMu.Unlock()
}

func (e *entry) stopIdleLocked() {
	if e.idleTimer != nil {
		e.idleTimer.Stop()
	}
	e.rt.lruMu.Lock()
	if e.lruElem != nil {
		e.rt.idle.Remove(e.lruElem)
		e.lruElem = nil
	}
	e.rt.lruMu.Unlock()
}

// onIdle hibernates the object if it is still idle when its timer fires.
func (e *entry) onIdle() {
	e.rt.mu.Lock()
	if e.rt.state != stateOpen {
		e.rt.mu.Unlock()
		return
	}
	e.rt.wg.Add(1)
	e.rt.mu.Unlock()
	defer e.rt.wg.Done()
	e.evict()
}

// evict hibernates the instance if nothing is in flight; otherwise it leaves it.
func (e *entry) evict() {
	e.mu.Lock()
	if e.running || len(e.queue) > 0 || e.holds > 0 || e.inst == nil || e.dead {
		e.mu.Unlock()
		return
	}
	e.running = true
	e.stopIdleLocked()
	inst := e.inst
	e.inst = nil
	e.mu.Unlock()

	e.sleep(context.Background(), inst)

	e.mu.Lock()
	e.running = false
	if len(e.queue) > 0 {
		e.running = true
		e.rt.wg.Add(1)
		e.rt.workers.run(e.work)
	}
	e.mu.Unlock()
	e.rt.maybeDrop(e)
}

// sleep closes an instance's database and records its usage in the index.
func (e *entry) sleep(ctx context.Context, inst *instance) {
	e.rt.unmarkOutbox(ctx, e, inst)
	e.sleptDeleted.Store(inst.deleted)
	if err := inst.db.close(); err != nil {
		e.logger().Warn("objects: close database", "err", err)
	}
	e.rt.open.Add(-1)
	// Counters move to the index; they stay in memory until it has them,
	// so that Info never sees them in neither place.
	e.mu.Lock()
	u := e.usage
	e.mu.Unlock()
	active := time.Since(inst.wokeAt)
	u.active += active
	now := time.Now()
	if err := e.rt.index.touch(ctx, e.ns.name, e.name, now, dbSize(filepath.Join(e.rt.Dir, inst.path)), u); err != nil {
		e.logger().Warn("objects: record hibernation", "err", err)
	}
	e.mu.Lock()
	e.usage.calls -= u.calls
	e.usage.rowsRead -= u.rowsRead
	e.usage.rowsWritten -= u.rowsWritten
	e.usage.active -= u.active - active
	e.mu.Unlock()
	if l := e.rt.logger(); l.Enabled(ctx, slog.LevelDebug) {
		l.Debug("objects: hibernated", "namespace", e.ns.name, "object", e.name, "awake", active)
	}
}

// wakeFor wakes the object for a batch whose first call has ctx. The wake
// serves every call of the batch, so it keeps ctx's values but not its
// end: one caller giving up must not fail the others (runBatch answers a
// call whose own ctx ended). It ends with the runtime instead.
func (e *entry) wakeFor(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(nil)
	rtCtx := e.rt.ctx
	stop := context.AfterFunc(rtCtx, func() { cancel(context.Cause(rtCtx)) })
	defer stop()
	return e.wake(ctx)
}

// wake opens (or creates) the object's database and builds its instance.
func (e *entry) wake(ctx context.Context) error {
	rt := e.rt
	start := time.Now()
	path, ok, err := rt.index.lookup(ctx, e.ns.name, e.name)
	if err != nil {
		return err
	}
	var db *instanceDB
	inst := &instance{}
	if ok {
		rt.makeRoom(e)
		db, err = rt.openInstanceDB(ctx, e.ns, path, fileExisting)
		if errors.Is(err, ErrMissingFile) && e.ns.class.RecreateMissing {
			rt.logger().Error("objects: database file missing; the object is made again, empty (its class keeps nothing it cannot have again)",
				"namespace", e.ns.name, "object", e.name, "file", path)
			if db, err = rt.openInstanceDB(ctx, e.ns, path, fileNew); err == nil {
				inst.needsMeta = true // the new file holds no name yet
			}
		}
		if err != nil {
			return fmt.Errorf("wake %s/%q: %w", e.ns.name, e.name, err)
		}
		rt.opens.Add(1)
	} else {
		spare := false
		if db = e.ns.takeSpare(); db != nil {
			path, spare = db.rel, true // already counted as open: no room to make
		} else {
			rt.makeRoom(e)
			path = objectFile(e.ns.name, e.name)
			if rt.index.inTrash(ctx, path) {
				// A deletion of an earlier object of this name could not
				// remove its files; start-up will. Do not share the path.
				path = spareFile(randomID())
			}
			if db, err = rt.openInstanceDB(ctx, e.ns, path, fileNew); err != nil {
				return fmt.Errorf("create %s/%q: %w", e.ns.name, e.name, err)
			}
			rt.creates.Add(1)
		}
		if err := rt.index.create(ctx, e.ns.name, e.name, path, spare, time.Now()); err != nil {
			db.close()
			rt.open.Add(-1)
			if spare {
				removeDBFiles(filepath.Join(rt.Dir, path))
				rt.index.dropSpare(context.Background(), path)
			}
			return err
		}
		inst.needsMeta = true
	}
	inst.db, inst.path, inst.wokeAt = db, path, time.Now()
	// An outbox a previous instance left marked (see outboxPending) is
	// drained once this one is built, and its New is told (Unsettled).
	unsettled := ok && rt.Bus != nil && rt.outboxPending(ctx, e)
	inst.h = &Handle{e: e, unsettled: unsettled}
	b := &batchTx{e: e, inst: inst}
	tx := &Tx{b: b}
	obj, err := e.construct(ctx, inst, tx)
	tx.b = nil // New's Tx ends with New
	if err == nil {
		b.merge(tx) // New's alarm change commits with its writes
		err = b.finish(ctx)
	} else {
		b.abort()
	}
	if err == nil {
		for _, f := range tx.onCommit {
			f()
		}
	} else {
		for _, f := range tx.onRollback {
			f()
		}
	}
	if err != nil {
		db.close()
		rt.open.Add(-1)
		if !ok {
			// A new object whose first New failed was never made: it
			// does not exist (Exists), and the next call makes it anew,
			// its name recorded with its first commit (a file kept now
			// would be taken for a made object, nameless).
			if err := e.remove(context.WithoutCancel(ctx), path); err != nil {
				e.logger().Warn("objects: remove the record of an object whose construction failed", "err", err)
			}
		}
		return fmt.Errorf("construct %s/%q: %w", e.ns.name, e.name, err)
	}
	inst.obj = obj
	e.mu.Lock()
	e.inst = inst
	e.mu.Unlock()
	if l := rt.logger(); l.Enabled(ctx, slog.LevelDebug) {
		l.Debug("objects: woke", "namespace", e.ns.name, "object", e.name, "new", !ok, "took", time.Since(start))
	}
	if unsettled {
		e.outboxMarked = true
		rt.drain(e.ns, e.name, nil)
	}
	return nil
}

func (e *entry) construct(ctx context.Context, inst *instance, tx *Tx) (obj any, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	tx.ctx = ctx
	return e.ns.class.New(ctx, inst.h, tx)
}

// runBatch runs calls inside one transaction, each in its own savepoint so
// that one can fail alone, commits once, and only then releases their
// results: the output gate of invariant 3.
func (e *entry) runBatch(batch []*call) {
	inst := e.inst
	b := &batchTx{e: e, inst: inst, savepoints: len(batch) > 1, relaxed: batch[0].relaxed}
	// A lone single-statement call (Stub.Exec) needs no transaction of its
	// own: SQLite commits the statement by itself. A new object's first
	// commit also records its name, so it keeps the transaction.
	b.autocommit = len(batch) == 1 && batch[0].single && !inst.needsMeta
	start := time.Now()
	var ran int
	var hooks, undo []func() // the OnCommit and OnRollback hooks of the calls that succeeded
	var ok []*call
	var rest []*call // not run: after a panic, for a new instance
	for i, c := range batch {
		if inst.discard {
			// A call panicked (or the batch's transaction was lost): the
			// instance may hold what it changed before it panicked, so
			// the rest of the batch goes back to the queue, to run on a
			// new one, as the next call after a panic does.
			rest = batch[i:]
			break
		}
		if !c.state.CompareAndSwap(callQueued, callRunning) {
			e.rt.inflight.Done()
			continue
		}
		ran++
		if err := c.ctx.Err(); err != nil {
			c.err = err
			continue
		}
		// The call's context also ends when Close gives up waiting for it
		// (Runtime.stopCalls).
		ctx, cancel := context.WithCancelCause(c.ctx)
		e.mu.Lock()
		e.stop = cancel
		e.mu.Unlock()
		if e.rt.stopping.Load() {
			cancel(ErrClosed)
		}
		tx := &Tx{b: b, ctx: ctx}
		res, err := e.invoke(ctx, c, inst, tx)
		e.mu.Lock()
		e.stop = nil
		e.mu.Unlock()
		cancel(nil)
		err = tx.end(err)
		c.res, c.err = res, err
		if err != nil {
			for _, f := range tx.onRollback {
				f()
			}
			continue
		}
		hooks = append(hooks, tx.onCommit...)
		undo = append(undo, tx.onRollback...)
		b.merge(tx)
		ok = append(ok, c)
	}
	if err := b.finish(context.Background()); err != nil {
		inst.discard = true
		for _, c := range ok {
			c.res, c.err = nil, fmt.Errorf("commit %s/%q: %w", e.ns.name, e.name, err)
		}
		// The calls that succeeded fail with the batch: their OnRollback
		// hooks run as a failed call's do.
		for _, f := range undo {
			f()
		}
	} else {
		for _, f := range hooks {
			f()
		}
	}
	elapsed := time.Since(start)
	e.mu.Lock()
	e.usage.calls += int64(ran)
	e.usage.rowsRead += b.rowsRead
	e.usage.rowsWritten += b.rowsWritten
	if ran > 0 {
		per := elapsed / time.Duration(ran)
		e.perCall = (e.perCall*7 + per) / 8
	}
	e.mu.Unlock()
	for _, c := range batch {
		if c.state.Load() == callRunning {
			e.release(c)
		}
	}
	if len(rest) > 0 {
		e.mu.Lock()
		e.queue = append(slices.Clone(rest), e.queue...)
		e.mu.Unlock()
	}
	// The callers have their answers: now the WAL's checkpoint, if due,
	// delays only the next batch.
	if !inst.discard && inst.db.checkpointDue() {
		if err := inst.db.checkpoint(context.Background()); err != nil {
			e.logger().Warn("objects: checkpoint; will retry after the next batch", "err", err)
		}
	}
}

func (e *entry) invoke(ctx context.Context, c *call, inst *instance, tx *Tx) (res any, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
			inst.discard = true
			e.logger().Error("objects: call panicked", "panic", v)
		}
	}()
	return c.fn(ctx, inst.obj, tx)
}

// delete removes the object's files and index record.
func (e *entry) delete(c *call) {
	if !c.state.CompareAndSwap(callQueued, callRunning) {
		e.rt.inflight.Done()
		return
	}
	defer e.release(c)
	closeSockets(socketsOf(e), StatusNormalClosure, ReasonDeleted, true)
	ctx := context.Background()
	var path string
	// The outbox goes with the object: what is unpublished of it is
	// dropped, and an object made again starts afresh, with a drainer of
	// its own. The old drainer stops first, so it cannot mark the new
	// object's events published (the entry may be dropped and made again
	// before the old drainer's bus answers).
	k := entryKey{e.ns.name, e.name}
	if c.handOver != nil {
		e.rt.haltDrain(k, haltDrainWait)
	}
	e.rt.stopDrain(k)
	if c.handOver != nil {
		evs, err := e.unpublished(ctx)
		if err == nil {
			if err = c.handOver(c.ctx, evs); err != nil {
				err = fmt.Errorf("hand over the events of %s/%q: %w", e.ns.name, e.name, err)
			}
		} else {
			err = fmt.Errorf("read the outbox of %s/%q: %w", e.ns.name, e.name, err)
		}
		if err != nil {
			e.rt.drain(e.ns, e.name, nil) // not deleted: its drain goes on
			c.err = err
			return
		}
	}
	e.published.Store(0)
	e.outboxMarked = false
	if inst := e.inst; inst != nil {
		e.mu.Lock()
		e.inst = nil
		e.usage = usageDelta{}
		e.mu.Unlock()
		inst.db.close()
		e.rt.open.Add(-1)
		path = inst.path
	} else {
		p, ok, err := e.rt.index.lookup(ctx, e.ns.name, e.name)
		if err != nil {
			c.err = err
			return
		}
		if !ok {
			return
		}
		path = p
	}
	c.err = e.remove(ctx, path)
}

// remove removes the object's index record, its subscriptions and its
// database files at path (a deletion, or a new object whose construction
// failed). Only the record's removal can fail it: files left behind are
// in the index's trash, removed at start-up.
func (e *entry) remove(ctx context.Context, path string) error {
	if err := e.rt.index.remove(ctx, e.ns.name, e.name, path); err != nil {
		return err
	}
	e.rt.subs.removeAll(entryKey{e.ns.name, e.name})
	e.rt.applyFilter(ctx)
	// removeDBFiles syncs the folder: the trash record goes only once a
	// power loss can no longer bring the files back.
	if err := removeDBFiles(filepath.Join(e.rt.Dir, path)); err != nil {
		e.logger().Warn("objects: remove an object's files (retried at start-up)", "err", err)
		return nil
	}
	if err := e.rt.index.trashDone(ctx, path); err != nil {
		e.logger().Warn("objects: clear trash record", "err", err)
	}
	return nil
}

// haltDrainWait bounds how long DeleteHandingOver waits for the answer to
// a publish of the object's events under way: past it, it hands the
// events over as unpublished, and they may be published twice.
const haltDrainWait = time.Second

// unpublished returns the rows of the object's outbox after what the bus
// acknowledged, in order (for DeleteHandingOver). It reads the open
// database, or a hibernated object's file; an object without one has none.
func (e *entry) unpublished(ctx context.Context) ([]Event, error) {
	var conn interface {
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	}
	if inst := e.inst; inst != nil {
		conn = inst.db.conn
	} else {
		path, ok, err := e.rt.index.lookup(ctx, e.ns.name, e.name)
		if err != nil || !ok {
			return nil, err
		}
		db, err := openDB(ctx, filepath.Join(e.rt.Dir, path), dbOptions{synchronous: "NORMAL", exclusive: true, cacheKiB: 256, mustExist: true})
		if err != nil {
			return nil, err
		}
		defer db.Close()
		conn = db
	}
	rows, err := conn.QueryContext(ctx, `SELECT id, subject, data FROM _outbox WHERE seq > ? AND done = 0 ORDER BY seq`, e.published.Load())
	if isNoTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var evs []Event
	for rows.Next() {
		var ev Event
		if err := rows.Scan(&ev.ID, &ev.Subject, &ev.Data); err != nil {
			return nil, err
		}
		evs = append(evs, ev)
	}
	return evs, rows.Err()
}

// batchTx is the transaction a batch of calls shares. It begins lazily, on
// the first statement, so calls that touch no storage cost no transaction.
type batchTx struct {
	e          *entry
	inst       *instance
	savepoints bool
	began      bool
	// autocommit: the batch is one statement, run without BEGIN and COMMIT
	// (see Stub.Exec); finish still flushes it in full durability.
	autocommit bool

	relaxed               bool // commit without the WAL sync of full durability (CallOptions.Durability)
	rowsRead, rowsWritten int64
	wrote                 bool // a statement of the batch was an Exec
	alarm                 *alarmOp
	alarmStored           bool        // storeAlarm wrote alarm to the object's record
	outbox                []outboxRow // rows the batch's calls added to the outbox, for the drainer
	subs                  []subOp     // subscription changes, in the order the calls made them
	// What beforeCommit did to the node index, for undoEarly and
	// afterCommit (see beforeCommit).
	prevAlarm           *alarmRow // the alarm the index had before the batch's new one
	alarmLate           bool      // the batch moves the alarm later: written after the commit
	subsAdd, subsRemove []string  // the net subscription changes
	subsNew             []string  // of subsAdd, those the index did not have
	// lost is set when the shared transaction ended under the batch (a
	// savepoint is gone): later statements would run outside it, so they
	// fail, and so does the commit.
	lost error
}

// lose records that the batch's transaction is gone.
func (b *batchTx) lose(err error) {
	if b.lost == nil {
		b.lost = fmt.Errorf("transaction of the batch lost: %w", err)
	}
	b.inst.discard = true
}

// checkAlive runs after a statement of the batch's transaction failed.
// SQLite ends the whole transaction on some errors (a trigger's
// RAISE(ROLLBACK), ON CONFLICT ROLLBACK, and maybe SQLITE_FULL, IOERR,
// NOMEM, BUSY or an interrupt), and then runs each later statement in a
// transaction of its own, committed at once whatever becomes of its call:
// a failing call would leave writes, and the calls after it in the batch
// would commit theirs unflushed. A BEGIN tells: refused inside a
// transaction, it succeeds only outside one (and is rolled back at once).
// The batch is then lost: no statement runs in it any more, and every call
// of it fails.
func (b *batchTx) checkAlive(cause error) {
	if !b.began || b.lost != nil {
		return
	}
	ctx := context.Background()
	if _, err := b.inst.db.exec(ctx, "BEGIN"); err != nil {
		return // still inside the batch's transaction
	}
	b.inst.db.exec(ctx, "ROLLBACK")
	b.began = false
	b.lose(fmt.Errorf("a statement's error ended it: %w", cause))
}

func (b *batchTx) begin(ctx context.Context) error {
	if b.began {
		return nil
	}
	if _, err := b.inst.db.exec(ctx, "BEGIN"); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	b.began = true
	if b.inst.needsMeta {
		if _, err := b.inst.db.exec(ctx, `INSERT OR REPLACE INTO _object (id, namespace, name, created_at) VALUES (1, ?, ?, ?)`,
			b.e.ns.name, b.e.name, time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("record name: %w", err)
		}
	}
	return nil
}

func (b *batchTx) merge(tx *Tx) {
	b.rowsRead += tx.rowsRead
	b.rowsWritten += tx.rowsWritten
	if tx.alarm != nil {
		b.alarm = tx.alarm
	}
	b.outbox = append(b.outbox, tx.outbox...)
	b.subs = append(b.subs, tx.subs...)
}

func (b *batchTx) abort() {
	if b.began {
		b.inst.db.exec(context.Background(), "ROLLBACK")
		b.began = false
	}
}

// finish commits the batch, then applies what must follow the commit (the
// alarm in the node index) before any result is released.
func (b *batchTx) finish(ctx context.Context) error {
	if b.lost != nil {
		b.abort()
		return b.lost
	}
	if b.inst.needsMeta && !b.began {
		if err := b.begin(ctx); err != nil {
			b.abort()
			return err
		}
	}
	if err := b.storeAlarm(ctx); err != nil {
		b.abort()
		return err
	}
	if err := b.beforeCommit(ctx); err != nil {
		b.abort()
		return err
	}
	// Published outbox rows go with the next batch that writes anyway: the
	// table stays one page, most often one the batch writes already (a
	// deletion every few dozen rows measured 3.5 pages per posted turn
	// instead of 3: page splits and the freelist). Rows left when the
	// process dies are published again (the bus de-duplicates by id).
	var deleteTo int64
	if inst, published := b.inst, b.e.published.Load(); b.began && b.wrote && published > inst.deleted {
		q := deleteOutbox
		if len(b.outbox) > 0 {
			// The batch's own rows are newer than anything published:
			// every published row goes, none is left to mark.
			q = q[:1]
		}
		if err := inst.db.execAll(ctx, q, published); err == nil {
			deleteTo = published
		}
	}
	// committed: the batch's writes are in SQLite now, by COMMIT or (a lone
	// Stub.Exec) by its statement alone.
	committed, wrote := false, false
	if b.began {
		// Only a batch that wrote has anything to flush: a read-only one
		// (GET /turns) must not wait for the disk.
		wrote = b.wrote || b.inst.needsMeta // the outbox cleanup above only runs when b.wrote
		if _, err := b.inst.db.exec(ctx, "COMMIT"); err != nil {
			b.abort()
			b.undoEarly(ctx)
			return fmt.Errorf("commit: %w", err)
		}
		b.began = false
		b.inst.needsMeta = false
		if b.alarmStored {
			b.inst.hasAlarm = true
		}
		if deleteTo > 0 {
			b.inst.deleted = deleteTo
		}
		committed = true
	} else if b.autocommit && b.wrote {
		committed, wrote = true, true
	}
	var syncErr error
	if committed {
		if wrote && b.e.rt.Durability == DurabilityFull && !b.relaxed {
			if err := b.inst.db.syncWAL(); err != nil {
				// Committed in SQLite but perhaps not on the disk: no
				// result may say it is, and the connection is not trusted.
				// The node index still follows what SQLite now holds. No
				// later flush can vouch for what a failed fsync lost: the
				// runtime refuses every call from now on. A flush that
				// could not begin (no file descriptor to open the WAL
				// with) lost nothing: the next instance's flushes the
				// WAL, this commit's pages with it.
				b.inst.discard = true
				var nf *notFlushedError
				if !errors.As(err, &nf) {
					b.e.rt.Fence(fmt.Errorf("WAL flush: %w", err))
				}
				syncErr = fmt.Errorf("commit: %w: %w", ErrNotDurable, err)
			} else if err := b.e.rt.Fault(); err != nil {
				// Another flush failed before this one ended: its
				// success cannot vouch for this commit either.
				b.inst.discard = true
				syncErr = fmt.Errorf("commit: %w: %w", ErrNotDurable, err)
			}
		}
		b.e.rt.commits.Add(1)
	}
	if committed && testHookCommitted != nil {
		testHookCommitted()
	}
	b.afterCommit(ctx, syncErr == nil)
	return syncErr
}

// testHookCommitted, when set (by tests), runs after a batch's commit and
// WAL sync, before afterCommit: the window a crash test kills the process
// in.
var testHookCommitted func()

// Tx is an object's storage during one call. It is valid only until the
// call returns and must not be used from another goroutine.
//
// Statements of all calls in a batch share one SQLite transaction; each call
// runs in its own savepoint, so a call that returns an error leaves no trace.
type Tx struct {
	b          *batchTx
	ctx        context.Context
	sp         bool
	onCommit   []func()
	onRollback []func()
	alarm      *alarmOp
	outbox     []outboxRow
	subs       []subOp

	rowsRead, rowsWritten int64
	stmts                 int // statements run, counted only for an autocommit batch
}

func (tx *Tx) use(ctx context.Context) error {
	if tx.b == nil {
		return ErrTxDone
	}
	if tx.b.lost != nil {
		return tx.b.lost
	}
	if tx.b.autocommit {
		if tx.stmts > 0 {
			return errNotSingle
		}
		tx.stmts++
		return nil
	}
	if err := tx.b.begin(context.WithoutCancel(ctx)); err != nil { // BEGIN is instant: no interrupt watcher
		return err
	}
	if tx.b.savepoints && !tx.sp {
		if _, err := tx.b.inst.db.exec(tx.sqlCtx(ctx), "SAVEPOINT c"); err != nil {
			return fmt.Errorf("savepoint: %w", err)
		}
		tx.sp = true
	}
	return nil
}

// end closes the call's savepoint (or, alone in its batch, rolls the
// transaction back on failure) and returns err or the error of doing so.
func (tx *Tx) end(err error) error {
	b := tx.b
	tx.b = nil
	ctx := context.Background()
	if tx.sp {
		if err != nil {
			if _, rerr := b.inst.db.exec(ctx, "ROLLBACK TO c"); rerr != nil {
				b.lose(rerr)
			}
		}
		if b.lost == nil {
			if _, rerr := b.inst.db.exec(ctx, "RELEASE c"); rerr != nil {
				b.lose(rerr)
			}
		}
		if err == nil && b.lost != nil {
			err = b.lost
		}
	} else if err != nil && b.began && !b.savepoints {
		b.abort()
	}
	// tx.b stays nil: a Tx kept past its call must not reach the
	// database, which by then belongs to other calls.
	if err != nil {
		tx.alarm, tx.subs, tx.outbox = nil, nil, nil
	}
	return err
}

// sqlCtx is the context a statement runs with. When ctx ends, the driver
// interrupts the statement, and SQLite answers an interrupted write by
// rolling back the whole transaction: in a batch shared with other calls
// that would undo their writes too. There ctx's end does not reach SQLite;
// the call still sees it through ctx. A call alone in its batch keeps
// interruptible statements.
func (tx *Tx) sqlCtx(ctx context.Context) context.Context {
	if tx.b.savepoints {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

// Exec runs a statement that returns no rows.
func (tx *Tx) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := tx.use(ctx); err != nil {
		return nil, err
	}
	r, err := tx.b.inst.db.exec(tx.sqlCtx(ctx), query, args...)
	if err != nil {
		tx.b.checkAlive(err)
		return nil, err
	}
	tx.b.wrote = true
	if n, err := r.RowsAffected(); err == nil {
		tx.rowsWritten += n
	}
	return r, nil
}

// Query runs a statement that returns rows. Close the rows before the call returns.
func (tx *Tx) Query(ctx context.Context, query string, args ...any) (*Rows, error) {
	if err := tx.use(ctx); err != nil {
		return nil, err
	}
	r, err := tx.b.inst.db.query(tx.sqlCtx(ctx), query, args...)
	if err != nil {
		tx.b.checkAlive(err)
		return nil, err
	}
	if mayWrite(query) {
		tx.b.wrote = true // UPDATE … RETURNING: synced in full as an Exec is
	}
	return &Rows{Rows: r, tx: tx}, nil
}

// mayWrite reports whether a query may change the database: anything but
// a SELECT, VALUES or EXPLAIN, a PRAGMA that sets nothing, or a WITH whose
// statement writes nothing. It errs on the side of writing (a sync too
// many, never one too few).
func mayWrite(query string) bool {
	q := strings.ToUpper(query)
	words := strings.FieldsFunc(q, func(r rune) bool { return (r < 'A' || r > 'Z') && r != '_' })
	if len(words) == 0 {
		return true
	}
	switch words[0] {
	case "SELECT", "VALUES", "EXPLAIN":
		return false
	case "PRAGMA":
		return strings.Contains(q, "=")
	case "WITH":
		// Whole words: a column such as updated_at is no UPDATE.
		return slices.ContainsFunc(words, func(w string) bool {
			return w == "INSERT" || w == "UPDATE" || w == "DELETE" || w == "REPLACE"
		})
	}
	return true
}

// QueryRow runs a statement expected to return at most one row.
func (tx *Tx) QueryRow(ctx context.Context, query string, args ...any) *Row {
	rows, err := tx.Query(ctx, query, args...)
	return &Row{rows: rows, err: err}
}

// OnCommit registers f to run after the call's writes are committed and
// before its result is released: after the whole batch's commit, so after
// the later calls of the batch have run. Use it for effects outside the
// object (telling clients, starting work), not for the instance's own
// in-memory state, which those later calls must see at once (see Func).
func (tx *Tx) OnCommit(f func()) { tx.onCommit = append(tx.onCommit, f) }

// OnRollback registers f to run if the call fails and its writes are undone.
func (tx *Tx) OnRollback(f func()) { tx.onRollback = append(tx.onRollback, f) }

// Handle returns the runtime handle of the object the call runs on, or nil
// once the call has returned.
func (tx *Tx) Handle() *Handle {
	if tx.b == nil {
		return nil
	}
	return tx.b.inst.h
}

// errNotSingle: a single-statement call (Stub.Exec) ran a second one. It
// cannot happen through the API; it guards the autocommit path.
var errNotSingle = errors.New("objects: second statement in a single-statement call")

// ErrTxDone is returned by a Tx used after its call returned.
var ErrTxDone = errors.New("objects: Tx used after its call returned")

// Rows wraps *sql.Rows to count rows read.
type Rows struct {
	*sql.Rows
	tx *Tx
}

// Next advances to the next row.
func (r *Rows) Next() bool {
	if r.Rows.Next() {
		r.tx.rowsRead++
		return true
	}
	return false
}

// Row is the result of QueryRow.
type Row struct {
	rows *Rows
	err  error
}

// Scan copies the row's columns into dest; sql.ErrNoRows if there was none.
func (r *Row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	return r.rows.Close()
}

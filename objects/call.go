package objects

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"time"
)

// Stub routes calls to the one instance of a named object, creating or
// waking it as needed. A Stub is a small value: get one per use or keep it.
// Safe for concurrent use.
type Stub struct {
	ns   *Namespace
	name string
}

// Name returns the object's name.
func (s *Stub) Name() string { return s.name }

// Queued returns how many calls wait for the object (not counting the batch
// running now). It does not wake the object.
func (s *Stub) Queued() int {
	e := s.ns.rt.lookupEntry(s.ns.name, s.name)
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.queue)
}

// Namespace returns the object's namespace.
func (s *Stub) Namespace() *Namespace { return s.ns }

// Func is the body of a call: it runs alone on the object (no other call,
// alarm or socket delivery of that object runs at the same time), with obj
// the instance built by Class.New and tx the object's storage.
//
// If Func returns an error (or panics) its writes are rolled back and no
// other call is affected. Make in-memory changes to obj at the end, after
// the last fallible step: the next call of the same batch must see them,
// and a failed call must leave the instance as it found it. (If the batch's
// commit fails, or a call panics, the instance is discarded and rebuilt from
// storage.) Effects outside the object — telling clients, starting work —
// belong in tx.OnCommit, which runs after the commit: durable before visible.
type Func func(ctx context.Context, obj any, tx *Tx) (any, error)

const (
	callQueued int32 = iota
	callRunning
	callCancelled
)

type callKind uint8

const (
	kindCall callKind = iota
	kindDelete
)

type call struct {
	ctx     context.Context
	fn      Func
	relaxed bool // commit without the WAL sync of full durability
	single  bool // one statement (Stub.Exec): alone in its batch, it runs without BEGIN/COMMIT
	// onWorker: never run on the caller's goroutine (see callFromSocket).
	onWorker bool
	// existing: run only on an object that exists; fail with ErrNotFound
	// rather than create it (see callExisting).
	existing bool
	// from: the held socket whose message this is (Socket.read). Once
	// Delete has closed the socket the call is existing-only, as a close
	// is: a message read before the deletion must not make the object
	// again. Before that a message may make it, as any call may.
	from *Socket
	// handOver: a deletion that hands the outbox's unpublished events to
	// this function before it removes anything (DeleteHandingOver).
	handOver func(ctx context.Context, evs []Event) error
	kind     callKind
	state    atomic.Int32
	res      any
	err      error
	done     chan struct{}
}

// Call runs fn on the object and returns its result once fn's writes are
// committed (durable before visible). Calls to one object run one at a time
// in the order they were made; a call whose ctx ends while it is still
// queued never runs. When the object's queue is full Call fails at once
// with *OverloadedError.
//
// A Func must not Call (or Delete) its own object: the call would wait for
// the one running it. Work that must come back to the object later goes in
// a goroutine started from tx.OnCommit (see Handle.Hold).
func (s *Stub) Call(ctx context.Context, fn Func) (any, error) {
	return s.CallWith(ctx, nil, fn)
}

// CallOptions are the options of CallWith. Nil means defaults.
type CallOptions struct {
	// Durability overrides the runtime's for this call's commit, downwards
	// only: DurabilityNormal commits without an fsync even when the runtime
	// is full, for writes whose loss on power failure is acceptable (a
	// crash of the process still loses nothing), such as progress that is
	// saved again moments later. Calls with another durability never share
	// its commit. Zero means the runtime's.
	Durability Durability
}

// CallWith is Call with options.
func (s *Stub) CallWith(ctx context.Context, opts *CallOptions, fn Func) (any, error) {
	return s.run(&call{ctx: ctx, fn: fn, done: make(chan struct{}), relaxed: s.relaxed(opts)})
}

// relaxed reports whether a call with opts commits without the WAL sync
// the runtime's durability would give it.
func (s *Stub) relaxed(opts *CallOptions) bool {
	return opts != nil && opts.Durability == DurabilityNormal && s.ns.rt.Durability == DurabilityFull
}

// Exec runs one statement on the object's database as a call of its own,
// with Call's guarantees (one at a time with the object's other calls,
// durable before it returns). Unlike a Call whose Func runs the same
// statement, it costs no BEGIN and COMMIT when it runs alone: SQLite
// commits the statement by itself. Use it for frequent small writes that
// need nothing of the object's in-memory state, such as saving progress.
// It does not wake the object's class (Class.New) any differently from
// Call: the instance is built if the object was asleep.
func (s *Stub) Exec(ctx context.Context, opts *CallOptions, query string, args ...any) (sql.Result, error) {
	v, err := s.run(&call{ctx: ctx, done: make(chan struct{}), single: true, relaxed: s.relaxed(opts),
		fn: func(ctx context.Context, _ any, tx *Tx) (any, error) { return tx.Exec(ctx, query, args...) }})
	r, _ := v.(sql.Result)
	return r, err
}

// callFromSocket is Call for a message of the held socket sock, from its
// reader, a long-lived goroutine: the call runs on a pooled worker, never
// inline, so that SQLite's call depth does not stay in the stack of a
// goroutine that then idles for hours (it made an idle socket cost 33 KiB
// instead of 25). Once Delete has closed sock the call is existing-only
// (see call.from).
func (s *Stub) callFromSocket(ctx context.Context, sock *Socket, fn Func) (any, error) {
	return s.run(&call{ctx: ctx, fn: fn, done: make(chan struct{}), onWorker: true, from: sock})
}

// callExisting is Call for the runtime's own deliveries to an object (its
// alarm, an event it subscribed to, a read of its outbox): they must not
// bring back an object deleted since they were decided. It fails with
// ErrNotFound when the object does not exist.
func (s *Stub) callExisting(ctx context.Context, fn Func) (any, error) {
	return s.run(&call{ctx: ctx, fn: fn, done: make(chan struct{}), existing: true})
}

// callExistingOnWorker is callExisting run on a worker, as callFromSocket
// runs a message: a socket's close, which must reach its object through a full
// queue but never bring back one deleted meanwhile.
func (s *Stub) callExistingOnWorker(ctx context.Context, fn Func) (any, error) {
	return s.run(&call{ctx: ctx, fn: fn, done: make(chan struct{}), existing: true, onWorker: true})
}

// existingOnly reports whether c must not make its object (callExisting).
// It is called on the object's worker, where a deletion is settled.
func (c *call) existingOnly() bool {
	return c.existing || c.from != nil && c.from.deleted()
}

func (s *Stub) run(c *call) (any, error) {
	e, err := s.ns.rt.enqueue(s.ns, s.name, c)
	if err != nil {
		return nil, err
	}
	if e != nil {
		if c.onWorker {
			s.ns.rt.workers.run(e.work)
		} else {
			e.runInline()
		}
	}
	return c.wait()
}

// Do is Call with typed object and result.
func Do[O any, R any](ctx context.Context, s *Stub, fn func(ctx context.Context, obj O, tx *Tx) (R, error)) (R, error) {
	v, err := s.Call(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) {
		o, ok := obj.(O)
		if !ok {
			var zero R
			return zero, fmt.Errorf("objects: %s holds %T, not the requested type", s.ns.name, obj)
		}
		return fn(ctx, o, tx)
	})
	r, _ := v.(R)
	return r, err
}

// Delete removes the object: its database files, its index record, its
// alarm and subscriptions, and closes its sockets. Calls queued before it
// run first; calls after it see a new, empty object. Deleting an object
// that does not exist succeeds.
func (s *Stub) Delete(ctx context.Context) error {
	_, err := s.delete(&call{ctx: ctx, kind: kindDelete, done: make(chan struct{})})
	return err
}

// DeleteHandingOver is Delete that hands the events of the object's
// outbox the bus had not acknowledged, in order, to keep rather than drop
// them with it: for keep to store them durably in another object, which
// publishes them with their IDs (Tx.PublishID), so that an object's last
// events outlive it, a crash at any point included. keep runs before
// anything is removed (on the deletion's goroutine, with no lock of the
// runtime held: it may call other objects); if it fails, nothing is
// deleted and its error is returned. A publish under way is waited for,
// up to a second; one not answered by then is handed over too, and may
// reach the bus twice (the bus and subscribers de-duplicate by ID). A
// hibernated object's outbox is read from its file; if that fails,
// nothing is deleted.
func (s *Stub) DeleteHandingOver(ctx context.Context, keep func(ctx context.Context, evs []Event) error) error {
	_, err := s.delete(&call{ctx: ctx, kind: kindDelete, handOver: keep, done: make(chan struct{})})
	return err
}

func (s *Stub) delete(c *call) (any, error) {
	e, err := s.ns.rt.enqueue(s.ns, s.name, c)
	if err != nil {
		return nil, err
	}
	if e != nil {
		e.runInline()
	}
	return c.wait()
}

func (c *call) wait() (any, error) {
	select {
	case <-c.done:
		return c.res, c.err
	case <-c.ctx.Done():
		if c.state.CompareAndSwap(callQueued, callCancelled) {
			return nil, c.ctx.Err()
		}
		<-c.done // already running: its outcome is the answer
		return c.res, c.err
	}
}

// enqueue queues c on its object. When the object had no worker, the caller
// takes the role: enqueue returns the entry, and the caller must run
// e.runInline() before waiting.
func (rt *Runtime) enqueue(ns *Namespace, name string, c *call) (*entry, error) {
	if err := c.ctx.Err(); err != nil {
		return nil, err
	}
	if err := rt.Fault(); err != nil {
		return nil, err
	}
	for {
		rt.mu.Lock()
		if rt.state != stateOpen {
			rt.mu.Unlock()
			return nil, ErrClosed
		}
		e := rt.entryLocked(ns, name)
		rt.inflight.Add(1)
		rt.mu.Unlock()

		e.mu.Lock()
		if e.dead {
			e.mu.Unlock()
			rt.inflight.Done()
			continue
		}
		if n := len(e.queue); n >= rt.QueueLimit {
			retry := time.Duration(n) * e.perCall
			retry = min(max(retry, 10*time.Millisecond), 10*time.Second)
			e.mu.Unlock()
			rt.inflight.Done()
			return nil, &OverloadedError{Namespace: ns.name, Name: name, Queued: n, RetryAfter: retry}
		}
		e.queue = append(e.queue, c)
		e.stopIdleLocked()
		if !e.running {
			e.running = true
			rt.wg.Add(1)
			e.mu.Unlock()
			return e, nil
		}
		e.mu.Unlock()
		return nil, nil
	}
}

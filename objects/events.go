package objects

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// EventBus carries events between objects and to other services: a
// JetStream stream in sessiond (objects/natsbus adapts one). Publish must
// de-duplicate by id; deliver is called at least once for every event
// published by anyone, in publish order per publisher, until stop (for a
// FilteringBus: every event its filter lets through), each with a non-empty
// Event.ID that is the same at every delivery of it.
type EventBus interface {
	Publish(ctx context.Context, subject string, data []byte, id string) error
	Subscribe(ctx context.Context, deliver func(ctx context.Context, ev Event) error) (stop func(), err error)
}

// FilteringBus is an EventBus that can limit what it delivers to the node:
// the runtime calls Filter with every pattern its objects subscribe to,
// before Subscribe and whenever the set changes (before the subscribing
// call returns). From then on deliver is called at least once for every
// event whose subject matches one of patterns; it may be called for others
// too (a bus that cannot express the set delivers everything). [">"] asks
// for everything; an empty list for nothing.
type FilteringBus interface {
	EventBus
	Filter(ctx context.Context, patterns []string) error
}

// BatchPublisher is an EventBus that can publish several events without
// waiting for each acknowledgement in turn. PublishBatch publishes events
// (Subject, Data and ID) in order and returns how many of the first ones
// the bus acknowledged, with the error that stopped it; events after those
// may have been stored too, and are published again (the bus
// de-duplicates by ID).
type BatchPublisher interface {
	PublishBatch(ctx context.Context, events []Event) (int, error)
}

// Event is one event as a subscriber sees it.
type Event struct {
	Subject   string
	Data      []byte
	ID        string    // unique per event; the runtime de-duplicates deliveries by it (an event without one is handled at every delivery)
	Published time.Time // when the bus stored it (zero if unknown)
}

// EventHandler is implemented by objects that subscribe to subjects. Event
// runs like a call; each event is handled once per object even when the bus
// delivers it twice (the runtime records handled ids in the object's
// database, in the handler's transaction). Returning an error rolls the
// handler's writes back and the event is delivered again later.
type EventHandler interface {
	Event(ctx context.Context, tx *Tx, ev Event) error
}

// LimitedBus is an EventBus that carries events only up to a size: a NATS
// server's max_payload, less room for headers, say. The runtime asks at
// Open, and Tx.Publish then refuses larger events with ErrTooLarge (the
// call can fail cleanly) instead of accepting one the bus can never take.
// A bus that is given an event too large anyway (written under a larger
// limit, before a move to another server) returns an error wrapping
// ErrTooLarge; the runtime then logs the event and drops it, rather than
// holding back every later event of its object.
type LimitedBus interface {
	EventBus
	// MaxEventBytes returns the largest payload the bus carries, or 0 when
	// it does not know.
	MaxEventBytes() int
}

// ErrNoBus is returned by Tx.Publish and Tx.Subscribe when the runtime has
// no EventBus.
var ErrNoBus = errors.New("objects: no event bus configured")

// MaxEventBytes bounds one event's payload.
const MaxEventBytes = 1 << 20

// seenRetention is how long handled event ids are remembered. The bus keeps
// events no longer than this, so an older one cannot come back.
const seenRetention = 8 * 24 * time.Hour

type subOp struct {
	pattern string
	remove  bool
}

// ValidateSubject checks an event subject (wildcards=false) or a
// subscription pattern (wildcards=true): dot-separated non-empty tokens of
// printable ASCII without spaces; in patterns a token may be "*", and the
// last may be ">".
func ValidateSubject(s string, wildcards bool) error {
	if s == "" || len(s) > 256 {
		return fmt.Errorf("objects: subject must be 1 to 256 bytes")
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		if t == "" {
			return fmt.Errorf("objects: subject %q has an empty token", s)
		}
		if t == "*" || t == ">" {
			if !wildcards {
				return fmt.Errorf("objects: subject %q: wildcards are only for subscriptions", s)
			}
			if t == ">" && i != len(toks)-1 {
				return fmt.Errorf("objects: pattern %q: > must be the last token", s)
			}
			continue
		}
		for _, c := range t {
			if c <= ' ' || c >= 0x7f || c == '*' || c == '>' {
				return fmt.Errorf("objects: subject %q: token %q has a character that is not allowed", s, t)
			}
		}
	}
	return nil
}

// Publish records an event in the object's outbox, in the call's
// transaction: it is published only if the call commits, after the commit,
// and a crash in between only delays it (the outbox is drained on wake and
// at start-up).
func (tx *Tx) Publish(ctx context.Context, subject string, data []byte) error {
	return tx.publish(ctx, subject, randomID(), data)
}

// PublishID is Publish with the event's id given: that of an event another
// object recorded, whose outbox went with it unpublished
// (Stub.DeleteHandingOver), so that the object that outlives it
// publishes it as it was. An event recorded twice with one id is handled
// once: the bus de-duplicates by id (within its window), and so does every
// subscriber. id is 1 to 64 bytes of letters, digits, '-', '_', '.' and
// ':'.
func (tx *Tx) PublishID(ctx context.Context, subject, id string, data []byte) error {
	if !validEventID(id) {
		return fmt.Errorf("objects: event id %q: must be 1 to 64 bytes of letters, digits, '-', '_', '.' and ':'", id)
	}
	return tx.publish(ctx, subject, id, data)
}

func validEventID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

func (tx *Tx) publish(ctx context.Context, subject, id string, data []byte) error {
	if tx.b == nil {
		return ErrTxDone
	}
	e := tx.b.e
	if e.rt.Bus == nil {
		return ErrNoBus
	}
	if err := ValidateSubject(subject, false); err != nil {
		return err
	}
	if max := e.rt.maxEvent; len(data) > max {
		return fmt.Errorf("event of %d bytes, the limit is %d: %w", len(data), max, ErrTooLarge)
	}
	if err := tx.ensureOutbox(ctx); err != nil {
		return err
	}
	r, err := tx.Exec(ctx, `INSERT INTO _outbox (id, subject, data, created_at) VALUES (?, ?, ?, ?)`,
		id, subject, data, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("record event: %w", err)
	}
	seq, err := r.LastInsertId()
	if err != nil {
		return fmt.Errorf("record event: %w", err)
	}
	tx.outbox = append(tx.outbox, outboxRow{seq: seq, id: id, subject: subject, data: data})
	return nil
}

// outboxTable is the outbox's schema. Published rows are deleted, but never
// the newest one: seq is an INTEGER PRIMARY KEY, numbered from the highest
// present, and a seq used again after the table emptied would sit below the
// mark of what the bus acknowledged and never be published. The newest row,
// once published, stays with done = 1. (AUTOINCREMENT guards the same way
// but writes its sqlite_sequence page in every commit with an event.)
const outboxTable = `CREATE TABLE IF NOT EXISTS _outbox (
		seq INTEGER PRIMARY KEY, id TEXT NOT NULL, subject TEXT NOT NULL, data BLOB NOT NULL, created_at INTEGER NOT NULL,
		done INTEGER NOT NULL DEFAULT 0)`

// deleteOutbox deletes the outbox rows up to seq published but the newest
// row, which it marks done instead (see outboxTable).
var deleteOutbox = []string{
	`DELETE FROM _outbox WHERE seq <= ?1 AND seq < (SELECT max(seq) FROM _outbox)`,
	`UPDATE _outbox SET done = 1 WHERE seq <= ?1 AND done = 0`,
}

func (tx *Tx) ensureOutbox(ctx context.Context) error {
	if tx.b.inst.hasOutbox {
		return nil
	}
	var def string
	err := tx.QueryRow(ctx, `SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '_outbox'`).Scan(&def)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.Exec(ctx, outboxTable); err != nil {
			return fmt.Errorf("create outbox: %w", err)
		}
	case err != nil:
		return fmt.Errorf("read outbox schema: %w", err)
	case !strings.Contains(def, "done"):
		// An outbox of an earlier schema (seq plain, then AUTOINCREMENT):
		// copy it over, rows and numbering kept; its sqlite_sequence row,
		// if any, is left unused.
		for _, q := range []string{
			`ALTER TABLE _outbox RENAME TO _outbox_old`,
			outboxTable,
			`INSERT INTO _outbox (seq, id, subject, data, created_at) SELECT seq, id, subject, data, created_at FROM _outbox_old`,
			`DROP TABLE _outbox_old`,
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("upgrade outbox: %w", err)
			}
		}
	}
	inst := tx.b.inst
	tx.OnCommit(func() { inst.hasOutbox = true }) // not before: the call may roll back
	return nil
}

// Subscribe makes the object receive events whose subject matches pattern
// (NATS wildcards: * one token, > the rest), from the call's commit on. The
// subscription lasts across hibernation and restarts until Unsubscribe or
// Delete; events wake the object.
func (tx *Tx) Subscribe(pattern string) error {
	if tx.b == nil {
		return ErrTxDone
	}
	if tx.b.e.rt.Bus == nil {
		return ErrNoBus
	}
	if err := ValidateSubject(pattern, true); err != nil {
		return err
	}
	tx.subs = append(tx.subs, subOp{pattern: pattern})
	return nil
}

// Unsubscribe ends a subscription when the call commits.
func (tx *Tx) Unsubscribe(pattern string) {
	tx.subs = append(tx.subs, subOp{pattern: pattern, remove: true})
}

// beforeCommit runs just before the batch commits and makes the node index
// ready for it. The index is another database, so a crash can fall between
// the two commits; each change to it is made on the side where such a crash
// errs towards something spare, never something lost:
//   - the outbox mark: a mark without rows only costs a look at start-up;
//   - a new alarm, or one moved earlier: at worst an alarm fires that the
//     object never committed, which alarm handlers must bear anyway
//     (delivery is at least once); an alarm moved later waits for
//     afterCommit, so that the earlier one is never lost: a crash before
//     that leaves the earlier time in the index, when fireAlarm finds the
//     later one in the object's own record (alarmTable, written in the
//     commit) and moves the index there instead of delivering it;
//   - new subscriptions: at worst events the object did not ask for.
//
// Clearing an alarm (which fireAlarm then finds cleared in the object's
// record) and ending subscriptions wait for afterCommit, for the same
// reason. A failure here fails the batch before anything is committed,
// so no call is told it failed while its writes stay. If the commit itself
// fails, undoEarly takes these changes back.
func (b *batchTx) beforeCommit(ctx context.Context) error {
	e := b.e
	if len(b.outbox) > 0 && !e.outboxMarked {
		if _, err := e.rt.index.exec(ctx, `INSERT OR IGNORE INTO outbox_pending (namespace, name) VALUES (?, ?)`, e.ns.name, e.name); err != nil {
			return fmt.Errorf("mark outbox: %w", err)
		}
		e.outboxMarked = true
	}
	if b.alarm != nil && !b.alarm.at.IsZero() {
		prev, err := e.rt.index.alarmRow(ctx, e.ns.name, e.name)
		if err != nil {
			return err
		}
		if prev.at.Valid && prev.at.Int64 < b.alarm.at.UnixMilli() {
			// Moved later: the earlier alarm stays until the commit (a
			// crash between leaves it, and at that time fireAlarm moves
			// it to the time the object committed); afterCommit writes
			// the new time.
			b.alarmLate = true
		} else {
			if err := e.rt.index.setAlarm(ctx, e.ns.name, e.name, b.alarm.at, 0); err != nil {
				return err
			}
			b.prevAlarm = &prev
		}
	}
	b.subsAdd, b.subsRemove = netSubs(b.subs)
	for _, p := range b.subsAdd {
		res, err := e.rt.index.exec(ctx, `INSERT OR IGNORE INTO subscriptions (namespace, name, pattern) VALUES (?, ?, ?)`, e.ns.name, e.name, p)
		if err != nil {
			b.undoEarly(ctx)
			return fmt.Errorf("subscribe %q: %w", p, err)
		}
		if n, err := res.RowsAffected(); err != nil || n > 0 {
			b.subsNew = append(b.subsNew, p)
		}
	}
	return nil
}

// undoEarly takes back what beforeCommit wrote to the node index, when the
// batch does not commit. A failure is logged: what is left is spare (see
// beforeCommit), not lost.
func (b *batchTx) undoEarly(ctx context.Context) {
	ctx = context.WithoutCancel(ctx) // a caller gone must not leave the index ahead
	e := b.e
	if b.prevAlarm != nil {
		if err := e.rt.index.restoreAlarm(ctx, e.ns.name, e.name, b.alarm.at, *b.prevAlarm); err != nil {
			e.logger().Error("objects: restore alarm after a failed commit; it may fire once spuriously", "err", err)
		}
		b.prevAlarm = nil
	}
	for _, p := range b.subsNew {
		if _, err := e.rt.index.exec(ctx, `DELETE FROM subscriptions WHERE namespace = ? AND name = ? AND pattern = ?`, e.ns.name, e.name, p); err != nil {
			e.logger().Error("objects: remove subscription after a failed commit; the object may get events it did not ask for", "pattern", p, "err", err)
		}
	}
	b.subsNew = nil
}

// netSubs reduces subscription changes to their net effect per pattern (the
// last change wins), in the order the patterns first appear.
func netSubs(ops []subOp) (add, remove []string) {
	if len(ops) == 0 {
		return nil, nil
	}
	last := make(map[string]bool, len(ops)) // pattern → removed
	var order []string
	for _, s := range ops {
		if _, ok := last[s.pattern]; !ok {
			order = append(order, s.pattern)
		}
		last[s.pattern] = s.remove
	}
	for _, p := range order {
		if last[p] {
			remove = append(remove, p)
		} else {
			add = append(add, p)
		}
	}
	return add, remove
}

// afterCommit applies the rest of the batch's changes once its writes are in
// SQLite: the alarm and subscriptions in memory, the index changes that had
// to wait for the commit (see beforeCommit), and, when durable (drain), the
// outbox's draining. The calls' writes are committed whatever happens here,
// so a failure is logged rather than turned into a failed call that a
// client would retry; it leaves an alarm the scheduler brings in line with
// the object's record when it comes due, or a subscription spare.
func (b *batchTx) afterCommit(ctx context.Context, drain bool) {
	ctx = context.WithoutCancel(ctx) // committed: a caller gone must not stop the rest
	e := b.e
	k := entryKey{e.ns.name, e.name}
	if b.alarm != nil {
		switch {
		case b.alarm.at.IsZero():
			if err := e.rt.index.setAlarm(ctx, e.ns.name, e.name, time.Time{}, 0); err != nil {
				e.logger().Error("objects: clear alarm after commit; the scheduler clears it when due", "err", err)
			}
		case b.alarmLate:
			if err := e.rt.index.setAlarm(ctx, e.ns.name, e.name, b.alarm.at, 0); err != nil {
				e.logger().Error("objects: move alarm later after commit; the scheduler moves it when the earlier time comes", "err", err)
			}
			e.rt.pokeAlarms()
		default:
			e.rt.pokeAlarms()
		}
	}
	for _, p := range b.subsAdd {
		e.rt.subs.add(k, p)
	}
	for _, p := range b.subsRemove {
		if _, err := e.rt.index.exec(ctx, `DELETE FROM subscriptions WHERE namespace = ? AND name = ? AND pattern = ?`, e.ns.name, e.name, p); err != nil {
			e.logger().Error("objects: end subscription after commit; it comes back at the next start", "pattern", p, "err", err)
		}
		e.rt.subs.remove(k, p)
	}
	if len(b.subsAdd)+len(b.subsRemove) > 0 {
		e.rt.applyFilter(ctx)
	}
	if drain && len(b.outbox) > 0 {
		e.rt.drain(e.ns, e.name, b.outbox)
	}
}

// busEventLimit returns the largest event the runtime takes with its Bus.
func (rt *Runtime) busEventLimit() int {
	lb, ok := rt.Bus.(LimitedBus)
	if !ok {
		return MaxEventBytes
	}
	n := lb.MaxEventBytes()
	if n <= 0 || n >= MaxEventBytes {
		return MaxEventBytes
	}
	rt.logger().Warn("objects: the event bus carries smaller events than the runtime allows; larger ones are refused",
		"bus_max_bytes", n, "runtime_max_bytes", MaxEventBytes)
	return n
}

// filterTimeout bounds one change of a FilteringBus's filter.
const filterTimeout = 5 * time.Second

// applyFilter tells a FilteringBus the patterns the node's objects
// subscribe to, if they changed since it last did. If the bus refuses them
// it is asked for everything: a wider filter only costs deliveries nobody
// wants, a narrower one would lose events.
func (rt *Runtime) applyFilter(ctx context.Context) {
	fb, ok := rt.Bus.(FilteringBus)
	if !ok {
		return
	}
	// A commit waits for this: bound it. A bus that does not answer in
	// time is asked for everything (below), which it may not answer either;
	// the next change tries again.
	ctx, cancel := context.WithTimeout(ctx, filterTimeout)
	defer cancel()
	rt.filterMu.Lock()
	defer rt.filterMu.Unlock()
	patterns := rt.subs.patterns()
	if rt.filterSet && slices.Equal(patterns, rt.filterApplied) {
		return
	}
	err := fb.Filter(ctx, patterns)
	if err != nil {
		rt.logger().Warn("objects: filter events by subscription; taking every event", "patterns", len(patterns), "err", err)
		patterns = []string{">"}
		wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), filterTimeout)
		err = fb.Filter(wctx, patterns)
		wcancel()
		if err != nil {
			rt.logger().Error("objects: filter events: new subscriptions miss events until it succeeds; retrying", "in", filterRetryDelay, "err", err)
			rt.filterSet = false
			rt.retryFilterLocked()
			return
		}
	}
	rt.filterApplied, rt.filterSet = patterns, true
}

// filterRetryDelay is how long after a failed filter change it is tried
// again.
var filterRetryDelay = 2 * time.Second

// retryFilterLocked schedules applyFilter again, once, unless the runtime
// closes first (Close stops the timer and waits for a retry running).
func (rt *Runtime) retryFilterLocked() {
	if rt.filterRetry != nil {
		return
	}
	rt.filterRetry = time.AfterFunc(filterRetryDelay, func() {
		rt.filterMu.Lock()
		rt.filterRetry = nil
		rt.filterMu.Unlock()
		rt.mu.Lock()
		open := rt.state == stateOpen
		if open {
			rt.wg.Add(1)
		}
		rt.mu.Unlock()
		if open {
			defer rt.wg.Done()
			rt.applyFilter(rt.ctx)
		}
	})
}

// drainState is an object's running drainer: the rows committed since it
// last looked, handed over in memory, and whether it must read the outbox
// from the database (after a restart, a wake, or a failed publish).
type drainState struct {
	rows []outboxRow
	read bool
	// halted ends with haltDrain: the drainer stops once the publish under
	// way, if any, is answered (it records what the bus acknowledged), and
	// before any other step. ended is closed as the drainer returns.
	halted context.Context
	halt   context.CancelFunc
	ended  chan struct{}
}

// drain hands an object's newly committed outbox rows to its drainer,
// starting one unless one runs. rows == nil asks for a read of the whole
// outbox (events a crash or an earlier failure left).
func (rt *Runtime) drain(ns *Namespace, name string, rows []outboxRow) {
	rt.drainMu.Lock()
	defer rt.drainMu.Unlock()
	k := entryKey{ns.name, name}
	if rt.draining == nil {
		rt.draining = make(map[entryKey]*drainState)
	}
	if st, ok := rt.draining[k]; ok {
		st.rows = append(st.rows, rows...)
		st.read = st.read || rows == nil
		return
	}
	rt.mu.Lock()
	open := rt.state == stateOpen
	if open {
		rt.wg.Add(1)
	}
	rt.mu.Unlock()
	if !open {
		return
	}
	st := &drainState{rows: rows, read: rows == nil, ended: make(chan struct{})}
	st.halted, st.halt = context.WithCancel(rt.ctx)
	rt.draining[k] = st
	rt.workers.run(func() {
		defer close(st.ended)
		defer st.halt()
		rt.drainLoop(ns, name, st)
	})
}

// haltDrain stops the drainer of an object about to be deleted once the
// publish it has under way is answered, waiting for it at most wait, so
// that the object's published mark says what the bus took: the events
// after it are those DeleteHandingOver hands over. A drainer waiting to
// read the outbox (a call queued behind the deletion) or to retry stops
// at once. Called by the deletion, on the object's worker, before
// stopDrain.
func (rt *Runtime) haltDrain(k entryKey, wait time.Duration) {
	rt.drainMu.Lock()
	st := rt.draining[k]
	rt.drainMu.Unlock()
	if st == nil {
		return
	}
	st.halt()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-st.ended:
	case <-t.C:
	}
}

// stopDrain ends the drain of a deleted object's outbox, whose unpublished
// events go with it. The drainer may be waiting for the bus: it stops at
// its next step, and the commits of an object made again under the name
// start a drainer of their own, which owns the entry's published mark from
// then on. Called by the deletion, on the object's worker.
func (rt *Runtime) stopDrain(k entryKey) {
	rt.drainMu.Lock()
	defer rt.drainMu.Unlock()
	delete(rt.draining, k)
}

// endDrain forgets the drainer st of k, unless stopDrain did already.
func (rt *Runtime) endDrain(k entryKey, st *drainState) {
	rt.drainMu.Lock()
	defer rt.drainMu.Unlock()
	if rt.draining[k] == st {
		delete(rt.draining, k)
	}
}

// goneLocked reports whether the drainer st of k was stopped by its
// object's deletion (stopDrain): a drainer leaves rt.draining only as it
// ends, so st no longer there means the deletion took it out. The drainer
// then stops and records nothing more on the object's entry, which an
// object made again under the name may have by then. drainMu is held.
func (rt *Runtime) goneLocked(k entryKey, st *drainState) bool {
	return rt.draining[k] != st
}

type outboxRow struct {
	seq         int64
	id, subject string
	data        []byte
}

// drainLoop publishes an object's outbox in order. Rows come in memory from
// the commits that wrote them; the database is read only when the drainer
// cannot tell that memory holds everything after what the bus acknowledged
// (its first round for an object it knows nothing of, a gap, a failure).
// What the bus acknowledged is recorded on the object's entry; the rows are
// deleted by the object's next write or at sleep, so a drain costs no call
// and no commit of its own in the common case. st is the drainer's state
// in rt.draining, until the object is deleted (stopDrain).
func (rt *Runtime) drainLoop(ns *Namespace, name string, st *drainState) {
	defer rt.wg.Done()
	k := entryKey{ns.name, name}
	stub := &Stub{ns: ns, name: name}
	ctx := rt.ctx
	backoff := 100 * time.Millisecond
	published := rt.publishedOf(k) // seq of the last event the bus acknowledged
	for {
		rt.drainMu.Lock()
		if rt.goneLocked(k, st) || st.halted.Err() != nil {
			rt.drainMu.Unlock()
			return
		}
		rows, read := st.rows, st.read
		st.rows, st.read = nil, false
		if len(rows) == 0 && !read {
			delete(rt.draining, k)
			rt.drainMu.Unlock()
			return
		}
		rt.drainMu.Unlock()
		var err error
		if read || rows[0].seq > published+1 { // memory may not hold everything unpublished
			var stored []outboxRow
			stored, err = rt.readOutbox(st.halted, stub, published)
			rt.drainMu.Lock()
			gone := rt.goneLocked(k, st)
			rt.drainMu.Unlock()
			if err == nil && gone {
				return // what it read may be an object's made again since
			}
			if err == nil {
				mem := rows
				var more bool
				if rows, more = mergeRows(stored, mem); more {
					// A page of a longer backlog: publish it, then read
					// on. The rows in memory wait for the pages before
					// them.
					rt.drainMu.Lock()
					st.rows = append(mem, st.rows...)
					st.read = true
					rt.drainMu.Unlock()
				}
			}
		}
		if err == nil {
			var last int64
			last, err = rt.publishRows(ctx, rows, published)
			if last > published {
				published = last
				rt.notePublished(k, st, published)
			}
		}
		if errors.Is(err, ErrTooLarge) {
			// The bus will never take this event: drop it, publish the
			// rest (see LimitedBus).
			if r, ok := firstAfter(rows, published); ok {
				rt.logger().Error("objects: event too large for the bus, dropped", "namespace", ns.name, "object", name,
					"subject", r.subject, "id", r.id, "bytes", len(r.data), "err", err)
				published = r.seq
				rt.notePublished(k, st, published)
				rt.drainMu.Lock()
				st.read = true // the rows after it, from the database
				rt.drainMu.Unlock()
				continue
			}
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			continue
		}
		if ctx.Err() != nil || errors.Is(err, ErrClosed) || errors.Is(err, ErrNotFound) { // ErrNotFound: deleted, outbox and all
			rt.endDrain(k, st)
			return
		}
		if st.halted.Err() != nil {
			return // its object is being deleted
		}
		rt.logger().Warn("objects: publish outbox, will retry", "namespace", ns.name, "object", name, "in", backoff, "err", err)
		rt.drainMu.Lock()
		st.read = true // start again from what the bus acknowledged
		rt.drainMu.Unlock()
		select {
		case <-st.halted.Done(): // ends with ctx too
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// firstAfter returns the first row after seq published.
func firstAfter(rows []outboxRow, published int64) (outboxRow, bool) {
	for _, r := range rows {
		if r.seq > published {
			return r, true
		}
	}
	return outboxRow{}, false
}

// mergeRows returns the rows to publish after a read of the outbox: stored
// (a page of it, in seq order) followed by the rows of mem it does not
// already hold. A full page may end before the rows in memory begin; then
// it returns stored alone, and more: rows between them are not read yet,
// and joining mem on would skip them.
func mergeRows(stored, mem []outboxRow) (rows []outboxRow, more bool) {
	if len(stored) == 0 {
		return mem, false
	}
	last := stored[len(stored)-1].seq
	i := slices.IndexFunc(mem, func(r outboxRow) bool { return r.seq > last })
	if len(stored) == outboxPage && (i < 0 || mem[i].seq != last+1) {
		return stored, true
	}
	if i < 0 {
		return stored, false
	}
	return append(stored, mem[i:]...), false
}

// publishedOf returns what the bus has acknowledged of an object's outbox,
// as far as this node remembers (0 when it does not).
func (rt *Runtime) publishedOf(k entryKey) int64 {
	rt.mu.Lock()
	e := rt.entries[k]
	rt.mu.Unlock()
	if e == nil {
		return 0
	}
	return e.published.Load()
}

// notePublished records that the bus acknowledged an object's outbox up to
// seq, for its drainer st. seq only grows (see outboxTable). It records
// nothing once the object is deleted: drainMu, held throughout, orders it
// before stopDrain, and the deletion resets the mark after that.
func (rt *Runtime) notePublished(k entryKey, st *drainState, seq int64) {
	rt.drainMu.Lock()
	defer rt.drainMu.Unlock()
	if rt.goneLocked(k, st) {
		return
	}
	rt.mu.Lock()
	e := rt.entries[k]
	if e == nil {
		// Asleep and forgotten, the acknowledgement late (a slow or
		// unreachable bus): the entry of its next wake takes the mark,
		// so that its drain does not publish these rows again.
		rt.asleepPublished[k] = max(rt.asleepPublished[k], seq)
		rt.mu.Unlock()
		return
	}
	rt.mu.Unlock()
	for {
		cur := e.published.Load()
		if cur >= seq || e.published.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// outboxPage is how many outbox rows readOutbox returns at most: a backlog
// is published a page at a time.
const outboxPage = 256

// readOutbox returns up to outboxPage outbox rows after seq published, in
// order. It writes nothing.
func (rt *Runtime) readOutbox(ctx context.Context, stub *Stub, published int64) ([]outboxRow, error) {
	v, err := stub.callExisting(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) {
		inst := tx.b.inst
		exists := 1
		if !inst.hasOutbox {
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_outbox'`).Scan(&exists); err != nil {
				return nil, err
			}
		}
		var rows []outboxRow
		if exists > 0 {
			r, err := tx.Query(ctx, `SELECT seq, id, subject, data FROM _outbox WHERE seq > ? AND done = 0 ORDER BY seq LIMIT ?`, published, outboxPage)
			if isNoTable(err) { // created by a call that then rolled back
				return []outboxRow(nil), nil
			}
			if err != nil {
				return nil, err
			}
			defer r.Close()
			for r.Next() {
				var o outboxRow
				if err := r.Scan(&o.seq, &o.id, &o.subject, &o.data); err != nil {
					return nil, err
				}
				rows = append(rows, o)
			}
			if err := r.Err(); err != nil {
				return nil, err
			}
		}
		return rows, nil
	})
	rows, _ := v.([]outboxRow)
	return rows, err
}

// publishRows publishes the rows after seq published, in order, and returns
// the seq of the last one the bus acknowledged (0 if none), with the error
// that stopped it.
func (rt *Runtime) publishRows(ctx context.Context, rows []outboxRow, published int64) (int64, error) {
	var last int64
	for len(rows) > 0 && rows[0].seq <= published {
		rows = rows[1:]
	}
	if bp, ok := rt.Bus.(BatchPublisher); ok && len(rows) > 0 {
		// One round trip for the lot: a busy object commits dozens of
		// events per batch. Even for one row it beats a request: the
		// drainers of a thousand objects contended less for the bus's
		// connection (1,000 sessions x 64 conns: 167-188 -> 157-163 µs of
		// server CPU per posted turn, alternating builds).
		evs := make([]Event, len(rows))
		for i, r := range rows {
			evs[i] = Event{Subject: r.subject, Data: r.data, ID: r.id}
		}
		n, err := bp.PublishBatch(ctx, evs)
		if n > 0 {
			last = rows[n-1].seq
		}
		return last, err
	}
	for _, r := range rows {
		if err := rt.Bus.Publish(ctx, r.subject, r.data, r.id); err != nil {
			return last, err
		}
		last = r.seq
	}
	return last, nil
}

func isNoTable(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no such table")
}

// resumeDrains drains every outbox the node index has marked: the events a
// crash left between commit and publish. O(marked objects).
func (rt *Runtime) resumeDrains(ctx context.Context) error {
	if rt.Bus == nil {
		return nil
	}
	rows, err := rt.index.db.QueryContext(ctx, `SELECT namespace, name FROM outbox_pending`)
	if err != nil {
		return fmt.Errorf("read pending outboxes: %w", err)
	}
	type key struct{ ns, name string }
	var keys []key
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.ns, &k.name); err != nil {
			rows.Close()
			return err
		}
		keys = append(keys, k)
	}
	rows.Close()
	for _, k := range keys {
		if ns, ok := rt.classes[k.ns]; ok {
			rt.drain(ns, k.name, nil)
		}
	}
	return nil
}

// deliverEvent hands one event from the bus to every object subscribed to
// a pattern matching its subject. An error makes the bus deliver it again;
// objects that already handled it skip it then.
func (rt *Runtime) deliverEvent(ctx context.Context, ev Event) error {
	subs := rt.subs.match(ev.Subject)
	var errs []error
	for _, k := range subs {
		ns, ok := rt.classes[k.ns]
		if !ok {
			continue
		}
		stub := &Stub{ns: ns, name: k.name}
		_, err := stub.callExisting(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) {
			h, ok := obj.(EventHandler)
			if !ok {
				return nil, nil
			}
			if ev.ID == "" {
				// Nothing to remember it by, and recording "" would
				// drop every later event without an id as a
				// redelivery of this one: handle it every time.
				return nil, h.Event(ctx, tx, ev)
			}
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS _seen (id TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID`); err != nil {
				return nil, err
			}
			now := time.Now()
			r, err := tx.Exec(ctx, `INSERT OR IGNORE INTO _seen (id, at) VALUES (?, ?)`, ev.ID, now.UnixMilli())
			if err != nil {
				return nil, err
			}
			if n, _ := r.RowsAffected(); n == 0 {
				return nil, nil // handled before: a redelivery
			}
			if now.UnixNano()%64 == 0 { // now and then, forget ids the bus can no longer send
				tx.Exec(ctx, `DELETE FROM _seen WHERE at < ?`, now.Add(-seenRetention).UnixMilli())
			}
			return nil, h.Event(ctx, tx, ev)
		})
		if err != nil && !errors.Is(err, ErrNotFound) { // ErrNotFound: deleted since it subscribed
			errs = append(errs, fmt.Errorf("deliver %s to %s/%q: %w", ev.Subject, k.ns, k.name, err))
		}
	}
	return errors.Join(errs...)
}

// outboxPending reports whether the node index has the object in
// outbox_pending as it wakes: a previous instance committed events and
// did not go to sleep with them all published (a crash, or a bus that was
// down), so its outbox must be drained.
func (rt *Runtime) outboxPending(ctx context.Context, e *entry) bool {
	var n int
	err := rt.index.db.QueryRowContext(ctx, `SELECT count(*) FROM outbox_pending WHERE namespace = ? AND name = ?`, e.ns.name, e.name).Scan(&n)
	return err == nil && n > 0
}

// startEvents subscribes the node to the bus and resumes interrupted drains.
func (rt *Runtime) startEvents(ctx context.Context) error {
	if rt.Bus == nil {
		return nil
	}
	if err := rt.subs.load(ctx, rt.index); err != nil {
		return err
	}
	rt.applyFilter(ctx)
	stop, err := rt.Bus.Subscribe(ctx, rt.deliverEvent)
	if err != nil {
		return fmt.Errorf("subscribe to events: %w", err)
	}
	rt.busStop = stop
	return rt.resumeDrains(ctx)
}

// unmarkOutbox clears the object's outbox mark in the node index if its
// outbox is empty. It runs when the object goes to sleep, with nothing else
// touching its database.
func (rt *Runtime) unmarkOutbox(ctx context.Context, e *entry, inst *instance) {
	if published := e.published.Load(); published > inst.deleted {
		if err := inst.db.execAll(ctx, deleteOutbox, published); err == nil {
			inst.deleted = published
		}
	}
	if !e.outboxMarked {
		return
	}
	var n int
	r, err := inst.db.query(ctx, `SELECT count(*) FROM _outbox WHERE done = 0`)
	if isNoTable(err) {
		err = nil
	} else if err == nil {
		if r.Next() {
			r.Scan(&n)
		}
		r.Close()
	}
	if err != nil || n > 0 {
		return // keep the mark: the next start drains it
	}
	if _, err := rt.index.exec(ctx, `DELETE FROM outbox_pending WHERE namespace = ? AND name = ?`, e.ns.name, e.name); err == nil {
		e.outboxMarked = false
	}
}

package objects

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Alarm retry policy: at-least-once delivery with exponential backoff.
const (
	// DefaultAlarmRetryBase is the first retry delay of a failed alarm;
	// each further retry doubles it.
	DefaultAlarmRetryBase = 2 * time.Second
	// DefaultAlarmMaxRetries is how many times a failed alarm is retried
	// after its first try before it is dropped.
	DefaultAlarmMaxRetries = 6
)

// AlarmHandler is implemented by objects that use alarms. Alarm runs like a
// call (serially, inside a transaction). Returning an error rolls its writes
// back and schedules a retry; after the last retry the alarm is dropped.
// Unless the handler sets a new alarm, the alarm is cleared when the handler
// succeeds.
type AlarmHandler interface {
	Alarm(ctx context.Context, tx *Tx, info AlarmInfo) error
}

// AlarmInfo describes one delivery of an alarm.
type AlarmInfo struct {
	Scheduled  time.Time // when the alarm was set to fire (the same on every retry)
	RetryCount int       // 0 on the first try, then 1, 2, …
}

type alarmOp struct {
	at  time.Time // zero: delete
	set bool      // set by the object during this call (not the runtime's default)
}

// SetAlarm sets the object's one alarm to fire at t (replacing any other),
// effective when the call commits. A time in the past fires at once.
func (tx *Tx) SetAlarm(t time.Time) {
	if t.IsZero() {
		t = time.Now()
	}
	tx.alarm = &alarmOp{at: t, set: true}
}

// DeleteAlarm clears the object's alarm when the call commits.
func (tx *Tx) DeleteAlarm() { tx.alarm = &alarmOp{set: true} }

// Alarm returns the object's alarm as this call sees it (its own pending
// change included), and whether one is set: the time the object set, also
// while a failed delivery waits for its retry.
func (tx *Tx) Alarm(ctx context.Context) (time.Time, bool, error) {
	if tx.alarm != nil {
		return tx.alarm.at, !tx.alarm.at.IsZero(), nil
	}
	if tx.b == nil {
		return time.Time{}, false, ErrTxDone
	}
	if tx.b.alarm != nil {
		return tx.b.alarm.at, !tx.b.alarm.at.IsZero(), nil
	}
	at, known, err := tx.storedAlarm(ctx)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read alarm: %w", err)
	}
	if known {
		return at, !at.IsZero(), nil
	}
	e := tx.b.e
	at, _, err = e.rt.index.alarm(ctx, e.ns.name, e.name)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read alarm: %w", err)
	}
	return at, !at.IsZero(), nil
}

// alarmTable is the object's own record of its alarm, written in the commit
// of the call that sets, moves or clears it (batchTx.storeAlarm): one row,
// at NULL when the object has none. The node index holds the alarm too, for
// the scheduler, but its write may fall on either side of the object's
// commit, and a crash or a failed write in between leaves it behind (see
// beforeCommit); fireAlarm then goes by this record. An object without the
// table or its row last set its alarm before the runtime kept it here: the
// index speaks for it.
const alarmTable = `CREATE TABLE IF NOT EXISTS _alarm (
		id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER)`

// storedAlarm reads the object's alarm from its own database, in the
// batch's transaction: at is zero when the object has none, and known is
// false when the object has no record of it (see alarmTable).
func (tx *Tx) storedAlarm(ctx context.Context) (at time.Time, known bool, err error) {
	if err := tx.use(ctx); err != nil {
		return time.Time{}, false, err
	}
	// Straight to the connection, not tx.Query: the runtime's own read
	// is not the object's, and counts in no usage.
	rows, err := tx.b.inst.db.query(tx.sqlCtx(ctx), `SELECT at FROM _alarm WHERE id = 1`)
	if isNoTable(err) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read stored alarm: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		return time.Time{}, false, rows.Err()
	}
	var v sql.NullInt64
	if err := rows.Scan(&v); err != nil {
		return time.Time{}, false, fmt.Errorf("read stored alarm: %w", err)
	}
	if v.Valid {
		at = time.UnixMilli(v.Int64)
	}
	return at, true, rows.Close()
}

// storeAlarm writes the batch's alarm change, if any, to the object's own
// record (alarmTable), in the batch's transaction, before it commits.
func (b *batchTx) storeAlarm(ctx context.Context) error {
	if b.alarm == nil {
		return nil
	}
	if err := b.begin(ctx); err != nil {
		return err
	}
	db := b.inst.db
	if !b.inst.hasAlarm {
		if _, err := db.exec(ctx, alarmTable); err != nil {
			return fmt.Errorf("create alarm record: %w", err)
		}
	}
	var v any
	if !b.alarm.at.IsZero() {
		v = b.alarm.at.UnixMilli()
	}
	if _, err := db.exec(ctx, `INSERT OR REPLACE INTO _alarm (id, at) VALUES (1, ?)`, v); err != nil {
		return fmt.Errorf("store alarm: %w", err)
	}
	b.wrote = true // a change to flush in full durability like any other
	b.alarmStored = true
	return nil
}

func (rt *Runtime) pokeAlarms() {
	select {
	case rt.alarmWake <- struct{}{}:
	default:
	}
}

// runAlarms fires due alarms. It keeps a timer for the earliest future
// alarm, so an alarm fires within a few milliseconds of its time.
func (rt *Runtime) runAlarms() {
	defer rt.wg.Done()
	ctx := rt.ctx
	var mu sync.Mutex
	firing := make(map[entryKey]bool)
	finished := make(chan struct{}, 1)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if rt.Fault() != nil {
			// Fenced (ErrDiskFailed): no call can run, and an alarm tried
			// now would spend its retries, then be dropped. It stays in
			// the index for the restart.
			<-ctx.Done()
			return
		}
		now := time.Now()
		due, err := rt.index.alarmsBefore(ctx, now, 1024)
		if err != nil && ctx.Err() == nil {
			rt.logger().Warn("objects: read due alarms", "err", err)
		}
		for _, a := range due {
			k := entryKey{a.ns, a.name}
			mu.Lock()
			busy := firing[k]
			if !busy {
				firing[k] = true
			}
			mu.Unlock()
			if busy {
				continue
			}
			rt.wg.Add(1)
			go func() {
				defer rt.wg.Done()
				rt.fireAlarm(ctx, a)
				mu.Lock()
				delete(firing, k)
				mu.Unlock()
				select {
				case finished <- struct{}{}:
				default:
				}
			}()
		}
		wait := time.Minute
		if next, err := rt.index.nextAlarmAfter(ctx, now); err == nil && !next.IsZero() {
			wait = min(wait, time.Until(next))
		}
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
			return
		case <-rt.alarmWake:
		case <-finished:
		case <-timer.C:
		}
	}
}

// dueVerdict is what an alarm the node index says is due comes to, once
// compared with the object's own view of it (checkDue).
type dueVerdict int

const (
	dueRun   dueVerdict = iota // deliver it
	dueStale                   // the index changed since it was read: the scheduler reads it again
	dueMove                    // the object's record says later: move the index there
	dueClear                   // the object has no alarm: clear the index
)

// checkDue compares a due alarm a, read from the node index, with the
// object's own view of it, inside a call on the object. The object's
// record (alarmTable) wins over the index, which a crash or a failed write
// after a commit can leave holding an earlier time or a cleared alarm:
// that alarm is neither delivered early nor lost (the index is moved to
// the record's time). scheduled is the time to report to the handler.
func (tx *Tx) checkDue(ctx context.Context, a dueAlarm) (v dueVerdict, scheduled time.Time, err error) {
	if p := tx.b.alarm; p != nil {
		// A call before this one in the batch changed it, not yet
		// committed: as this call sees it.
		if !p.at.Equal(a.at) {
			return dueStale, time.Time{}, nil
		}
		return dueRun, a.setFor, nil
	}
	e := tx.b.e
	at, _, err := e.rt.index.alarm(ctx, e.ns.name, e.name)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("read alarm: %w", err)
	}
	if !at.Equal(a.at) { // changed or deleted since it was read
		return dueStale, time.Time{}, nil
	}
	stored, known, err := tx.storedAlarm(ctx)
	switch {
	case err != nil:
		return 0, time.Time{}, err
	case !known: // set before the runtime kept a record: the index speaks for it
		return dueRun, a.setFor, nil
	case stored.IsZero():
		return dueClear, time.Time{}, nil
	case stored.UnixMilli() > a.setFor.UnixMilli():
		return dueMove, stored, nil
	}
	return dueRun, stored, nil
}

// fireAlarm delivers one alarm as a call and, if it fails, schedules the
// next try. An alarm the object's own record has moved or cleared is not
// delivered; the index is brought in line with the record instead.
func (rt *Runtime) fireAlarm(ctx context.Context, a dueAlarm) {
	ns, err := rt.Namespace(a.ns)
	if err != nil {
		rt.logger().Warn("objects: alarm for unknown namespace dropped", "namespace", a.ns, "object", a.name)
		rt.index.setAlarm(ctx, a.ns, a.name, time.Time{}, 0)
		return
	}
	stub := &Stub{ns: ns, name: a.name}
	var verdict dueVerdict
	var moveTo time.Time
	// A full queue is no failure of the alarm, which never ran: it waits
	// its turn (RetryAfter, 10 ms to 10 s) without using up a retry, until
	// the runtime closes.
	err = rt.untilRoom(func() error {
		verdict = dueRun
		_, err := stub.callExisting(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) {
			v, scheduled, err := tx.checkDue(ctx, a)
			if err != nil {
				return nil, err
			}
			if verdict, moveTo = v, scheduled; v != dueRun {
				return nil, nil
			}
			h, ok := obj.(AlarmHandler)
			if !ok {
				return nil, fmt.Errorf("%s/%q has an alarm: %w", a.ns, a.name, ErrNotSupported)
			}
			tx.alarm = &alarmOp{} // cleared on success unless the handler sets another
			return nil, h.Alarm(ctx, tx, AlarmInfo{Scheduled: scheduled, RetryCount: a.retry})
		})
		return err
	})
	if err == nil && verdict != dueRun {
		rt.reconcileAlarm(ctx, a, verdict, moveTo)
		return
	}
	if err == nil || errors.Is(err, ErrClosed) || errors.Is(err, ErrNotFound) || ctx.Err() != nil {
		return // ErrNotFound: deleted since its alarm was read, alarm and all
	}
	if rt.Fault() != nil {
		// Fenced (refused, or its own flush failed): the alarm stays in
		// the index as it is, its tries unspent, for the restart;
		// runAlarms tries nothing more.
		return
	}
	retry := a.retry + 1
	if retry > rt.alarmMaxRetries() || errors.Is(err, ErrNotSupported) {
		rt.logger().Error("objects: alarm dropped after its last try", "namespace", a.ns, "object", a.name, "tries", retry, "err", err)
		rt.dropAlarm(ctx, stub, a)
		return
	}
	delay := rt.alarmRetryBase() << (retry - 1)
	rt.logger().Warn("objects: alarm failed, will retry", "namespace", a.ns, "object", a.name, "retry", retry, "in", delay, "err", err)
	if err := rt.index.setAlarmIf(ctx, a.ns, a.name, a.at, time.Now().Add(delay), retry); err != nil {
		rt.logger().Warn("objects: schedule alarm retry", "err", err)
	}
}

// reconcileAlarm brings the node index's alarm a in line with the object's
// record, as checkDue found it: moved to at (dueMove) or cleared
// (dueClear). It changes nothing if the index no longer holds a.
func (rt *Runtime) reconcileAlarm(ctx context.Context, a dueAlarm, v dueVerdict, at time.Time) {
	var err error
	switch v {
	case dueMove:
		err = rt.index.moveAlarmIf(ctx, a.ns, a.name, a.at, at)
		rt.pokeAlarms()
	case dueClear:
		err = rt.index.setAlarmIf(ctx, a.ns, a.name, a.at, time.Time{}, 0)
	default:
		return
	}
	if err != nil {
		// The index still holds a: the next look finds it due again.
		rt.logger().Warn("objects: bring alarm in line with the object's record", "namespace", a.ns, "object", a.name, "err", err)
	}
}

// dropAlarm clears an alarm given up on, in the object's record and the
// index (a call that deletes it), unless the object has set another since.
// If the object cannot take the call, the index alone is cleared.
func (rt *Runtime) dropAlarm(ctx context.Context, stub *Stub, a dueAlarm) {
	if rt.Fault() != nil {
		return // fenced: kept for the restart (see fireAlarm)
	}
	_, err := stub.callExisting(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) {
		v, _, err := tx.checkDue(ctx, a)
		if err == nil && v == dueRun {
			tx.DeleteAlarm()
		}
		return nil, err
	})
	if err != nil && !errors.Is(err, ErrNotFound) && ctx.Err() == nil {
		if err := rt.index.setAlarmIf(ctx, a.ns, a.name, a.at, time.Time{}, 0); err != nil {
			rt.logger().Warn("objects: clear dropped alarm", "namespace", a.ns, "object", a.name, "err", err)
		}
	}
}

func (rt *Runtime) alarmRetryBase() time.Duration {
	if rt.AlarmRetryBase > 0 {
		return rt.AlarmRetryBase
	}
	return DefaultAlarmRetryBase
}

func (rt *Runtime) alarmMaxRetries() int {
	if rt.AlarmMaxRetries > 0 {
		return rt.AlarmMaxRetries
	}
	return DefaultAlarmMaxRetries
}

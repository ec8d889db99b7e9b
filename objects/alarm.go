package objects

import (
	"context"
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
// change included), and whether one is set.
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
	e := tx.b.e
	at, _, err := e.rt.index.alarm(ctx, e.ns.name, e.name)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read alarm: %w", err)
	}
	return at, !at.IsZero(), nil
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

// fireAlarm delivers one alarm as a call and, if it fails, schedules the
// next try.
func (rt *Runtime) fireAlarm(ctx context.Context, a dueAlarm) {
	ns, err := rt.Namespace(a.ns)
	if err != nil {
		rt.logger().Warn("objects: alarm for unknown namespace dropped", "namespace", a.ns, "object", a.name)
		rt.index.setAlarm(ctx, a.ns, a.name, time.Time{}, 0)
		return
	}
	stub := &Stub{ns: ns, name: a.name}
	var skipped bool
	// A full queue is no failure of the alarm, which never ran: it waits
	// its turn (RetryAfter, 10 ms to 10 s) without using up a retry, until
	// the runtime closes.
	err = rt.untilRoom(func() error {
		_, err := stub.callExisting(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) {
			// As this call sees it: a call before it in the batch may have
			// changed it, not yet committed.
			at, _, err := tx.Alarm(ctx)
			if err != nil {
				return nil, err
			}
			if !at.Equal(a.at) { // changed or deleted since it was read
				skipped = true
				return nil, nil
			}
			h, ok := obj.(AlarmHandler)
			if !ok {
				return nil, fmt.Errorf("%s/%q has an alarm: %w", a.ns, a.name, ErrNotSupported)
			}
			tx.alarm = &alarmOp{} // cleared on success unless the handler sets another
			return nil, h.Alarm(ctx, tx, AlarmInfo{Scheduled: a.setFor, RetryCount: a.retry})
		})
		return err
	})
	if err == nil || skipped || errors.Is(err, ErrClosed) || errors.Is(err, ErrNotFound) || ctx.Err() != nil {
		return // ErrNotFound: deleted since its alarm was read, alarm and all
	}
	retry := a.retry + 1
	if retry > rt.alarmMaxRetries() || errors.Is(err, ErrNotSupported) {
		rt.logger().Error("objects: alarm dropped after its last try", "namespace", a.ns, "object", a.name, "tries", retry, "err", err)
		rt.index.setAlarmIf(ctx, a.ns, a.name, a.at, time.Time{}, 0)
		return
	}
	delay := rt.alarmRetryBase() << (retry - 1)
	rt.logger().Warn("objects: alarm failed, will retry", "namespace", a.ns, "object", a.name, "retry", retry, "in", delay, "err", err)
	if err := rt.index.setAlarmIf(ctx, a.ns, a.name, a.at, time.Now().Add(delay), retry); err != nil {
		rt.logger().Warn("objects: schedule alarm retry", "err", err)
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

package objects_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"sessiond/objects"
)

// alarmRecorder is the shared state of alarmClass objects: it outlives any
// one instance, so deliveries are seen across hibernation.
type alarmRecorder struct {
	mu         sync.Mutex
	deliveries []alarmDelivery
	// onAlarm decides what a delivery does; nil succeeds.
	onAlarm func(ctx context.Context, tx *objects.Tx, info objects.AlarmInfo, n int) error
}

type alarmDelivery struct {
	info objects.AlarmInfo
	at   time.Time
}

func (r *alarmRecorder) list() []alarmDelivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]alarmDelivery(nil), r.deliveries...)
}

type alarmObject struct{ rec *alarmRecorder }

func (a *alarmObject) Alarm(ctx context.Context, tx *objects.Tx, info objects.AlarmInfo) error {
	a.rec.mu.Lock()
	a.rec.deliveries = append(a.rec.deliveries, alarmDelivery{info, time.Now()})
	n := len(a.rec.deliveries)
	f := a.rec.onAlarm
	a.rec.mu.Unlock()
	if f != nil {
		return f(ctx, tx, info, n)
	}
	return nil
}

func registerAlarmClass(tb testing.TB, rt *objects.Runtime, rec *alarmRecorder) *objects.Namespace {
	tb.Helper()
	ns, err := rt.Register("alarmer", objects.Class{
		New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
			return &alarmObject{rec: rec}, nil
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return ns
}

func setAlarm(t *testing.T, s *objects.Stub, at time.Time) {
	t.Helper()
	if _, err := s.Call(context.Background(), func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		tx.SetAlarm(at)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
}

// alarmOf reads the object's alarm through a call (Tx.Alarm).
func alarmOf(t *testing.T, s *objects.Stub) (time.Time, bool) {
	t.Helper()
	type res struct {
		at time.Time
		ok bool
	}
	r, err := objects.Do(context.Background(), s, func(ctx context.Context, _ any, tx *objects.Tx) (res, error) {
		at, ok, err := tx.Alarm(ctx)
		return res{at, ok}, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return r.at, r.ok
}

// alarmRows counts the rows the counter's alarm handler wrote.
func alarmRows(t *testing.T, s *objects.Stub) int {
	t.Helper()
	n, err := objects.Do(context.Background(), s, func(ctx context.Context, _ *counter, tx *objects.Tx) (int, error) {
		var n int
		err := tx.QueryRow(ctx, `SELECT count(*) FROM log WHERE body = 'alarm'`).Scan(&n)
		return n, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func infoAlarm(t *testing.T, ns *objects.Namespace, name string) time.Time {
	t.Helper()
	oi, err := ns.Info(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return oi.Alarm
}

func TestAlarmSetGetDelete(t *testing.T) {
	ctx := context.Background()
	_, ns := newOpenRuntime(t, nil)
	s := stub(t, ns, "clock")
	if _, ok := alarmOf(t, s); ok {
		t.Fatal("new object has an alarm")
	}
	at := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	// The call sees its own pending alarm before it commits.
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		tx.SetAlarm(at)
		got, ok, err := tx.Alarm(ctx)
		if err != nil || !ok || !got.Equal(at) {
			return nil, errors.New("own pending alarm not visible")
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, ok := alarmOf(t, s); !ok || !got.Equal(at) {
		t.Fatalf("Alarm=%v,%v want %v", got, ok, at)
	}
	if got := infoAlarm(t, ns, "clock"); !got.Equal(at) {
		t.Fatalf("Info.Alarm=%v, want %v", got, at)
	}

	// A failed call's alarm change leaves no trace.
	_, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		tx.DeleteAlarm()
		return nil, errors.New("fails on purpose")
	})
	if err == nil {
		t.Fatal("failing call succeeded")
	}
	if got, ok := alarmOf(t, s); !ok || !got.Equal(at) {
		t.Fatalf("after failed delete Alarm=%v,%v want %v", got, ok, at)
	}

	// Replacing the alarm.
	at2 := at.Add(time.Hour)
	setAlarm(t, s, at2)
	if got, ok := alarmOf(t, s); !ok || !got.Equal(at2) {
		t.Fatalf("after replace Alarm=%v,%v want %v", got, ok, at2)
	}

	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		tx.DeleteAlarm()
		if _, ok, _ := tx.Alarm(ctx); ok {
			return nil, errors.New("own pending delete not visible")
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, ok := alarmOf(t, s); ok {
		t.Fatalf("after delete Alarm=%v, want none", got)
	}
	if got := infoAlarm(t, ns, "clock"); !got.IsZero() {
		t.Fatalf("after delete Info.Alarm=%v, want zero", got)
	}
}

func TestAlarmFires(t *testing.T) {
	ctx := context.Background()
	_, ns := newOpenRuntime(t, nil)
	s := stub(t, ns, "ring")
	at := time.Now().Add(20 * time.Millisecond)
	setAlarm(t, s, at)
	checkFor(t, 10*time.Second, "alarm row", func() bool { return alarmRows(t, s) == 1 })
	if got := infoAlarm(t, ns, "ring"); !got.IsZero() {
		t.Fatalf("alarm still set after a successful delivery: %v", got)
	}
	infos, err := objects.Do(ctx, s, func(ctx context.Context, c *counter, tx *objects.Tx) ([]objects.AlarmInfo, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return append([]objects.AlarmInfo(nil), c.alarms...), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].RetryCount != 0 || !infos[0].Scheduled.Equal(at.Truncate(time.Millisecond)) {
		t.Fatalf("deliveries %+v, want one first try scheduled at %v", infos, at)
	}
	t.Logf("fired %v after its time", time.Since(at))
}

// TestAlarmWakesHibernatedObject: the object hibernates (nothing of it left
// in memory) before its alarm is due; the alarm wakes it from disk.
func TestAlarmWakesHibernatedObject(t *testing.T) {
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.IdleTimeout = time.Millisecond })
	s := stub(t, ns, "sleeper")
	if _, err := add(context.Background(), s, 1); err != nil {
		t.Fatal(err)
	}
	// The alarm must still be pending when hibernation is seen; on a slow
	// machine try again with more room.
	var opens int64
	for lead := 200 * time.Millisecond; ; lead *= 2 {
		if lead > 10*time.Second {
			t.Fatal("could not see the object hibernated before its alarm was due")
		}
		at := time.Now().Add(lead)
		setAlarm(t, s, at)
		checkFor(t, 10*time.Second, "hibernated", func() bool { return rt.Stats().Entries == 0 })
		opens = rt.Stats().ObjectOpens
		if time.Now().Before(at) && !infoAlarm(t, ns, "sleeper").IsZero() {
			break
		}
		t.Logf("alarm due before hibernation was seen (lead %v); again", lead)
		checkFor(t, 10*time.Second, "alarm delivered", func() bool { return infoAlarm(t, ns, "sleeper").IsZero() })
		checkFor(t, 10*time.Second, "hibernated", func() bool { return rt.Stats().Entries == 0 })
		if _, err := s.Call(context.Background(), func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			_, err := tx.Exec(ctx, `DELETE FROM log`)
			return nil, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 10*time.Second, "alarm delivered", func() bool { return infoAlarm(t, ns, "sleeper").IsZero() })
	if got := rt.Stats().ObjectOpens; got <= opens {
		t.Fatalf("ObjectOpens=%d after the alarm, was %d: the alarm did not wake the object from disk", got, opens)
	}
	if got := alarmRows(t, s); got != 1 {
		t.Fatalf("alarm rows=%d, want 1", got)
	}
}

// TestAlarmSurvivesRestart: an alarm set before Close fires in the next
// runtime on the same folder. It is due only after Close returned, so the
// first runtime cannot have fired it.
func TestAlarmSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	var dir string
	var at time.Time
	for lead := 300 * time.Millisecond; ; lead *= 2 {
		if lead > 10*time.Second {
			t.Fatal("could not close the runtime before the alarm was due")
		}
		// A new folder for each try: an attempt given up on may have fired
		// its alarm already, and its row would count in the next one's.
		dir = t.TempDir()
		rt, ns := newRuntime(t, dir, nil)
		if err := rt.Open(ctx); err != nil {
			t.Fatal(err)
		}
		at = time.Now().Add(lead)
		setAlarm(t, stub(t, ns, "phoenix"), at)
		if err := rt.Close(); err != nil {
			t.Fatal(err)
		}
		if time.Now().Before(at) {
			break
		}
		t.Logf("alarm due before Close returned (lead %v); again", lead)
	}
	rt2, ns2 := newRuntime(t, dir, nil)
	if err := rt2.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	checkFor(t, 10*time.Second, "alarm delivered after restart", func() bool { return infoAlarm(t, ns2, "phoenix").IsZero() })
	if rt2.Stats().ObjectOpens < 1 {
		t.Fatal("the alarm did not open the object")
	}
	if got := alarmRows(t, stub(t, ns2, "phoenix")); got != 1 {
		t.Fatalf("alarm rows=%d, want 1", got)
	}
	t.Logf("fired %v after its time", time.Since(at))
}

// TestAlarmRetryBackoff: a handler failing 3 times sees retries 0,1,2,3 in
// order; the 4th try succeeds and clears the alarm.
func TestAlarmRetryBackoff(t *testing.T) {
	ctx := context.Background()
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.AlarmRetryBase = 20 * time.Millisecond })
	s := stub(t, ns, "flaky")
	at := time.Now()
	if _, err := objects.Do(ctx, s, func(ctx context.Context, c *counter, tx *objects.Tx) (int, error) {
		c.mu.Lock()
		c.failN = 3
		c.mu.Unlock()
		tx.SetAlarm(at)
		return 0, nil
	}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "alarm delivered", func() bool { return alarmRows(t, s) == 1 })
	if got := infoAlarm(t, ns, "flaky"); !got.IsZero() {
		t.Fatalf("alarm still set after success: %v", got)
	}
	infos, err := objects.Do(ctx, s, func(ctx context.Context, c *counter, tx *objects.Tx) ([]objects.AlarmInfo, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return append([]objects.AlarmInfo(nil), c.alarms...), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 4 {
		t.Fatalf("%d deliveries, want 4: %+v", len(infos), infos)
	}
	for i, in := range infos {
		if in.RetryCount != i {
			t.Fatalf("delivery %d has RetryCount %d: %+v", i, in.RetryCount, infos)
		}
		if !in.Scheduled.Equal(at.Truncate(time.Millisecond)) {
			t.Fatalf("delivery %d (retry %d) says Scheduled %v, want the time set, %v", i, in.RetryCount, in.Scheduled, at)
		}
		t.Logf("delivery %d: RetryCount=%d Scheduled=+%v", i, in.RetryCount, in.Scheduled.Sub(at).Round(time.Millisecond))
	}
}

// TestAlarmDroppedAfterMaxRetries: a handler that always fails gets the first
// try plus AlarmMaxRetries retries, then the alarm is dropped.
func TestAlarmDroppedAfterMaxRetries(t *testing.T) {
	rec := &alarmRecorder{onAlarm: func(context.Context, *objects.Tx, objects.AlarmInfo, int) error {
		return errors.New("always fails")
	}}
	const maxRetries = 3
	var ns *objects.Namespace
	newOpenRuntime(t, func(rt *objects.Runtime) {
		rt.AlarmRetryBase = 5 * time.Millisecond
		rt.AlarmMaxRetries = maxRetries
		rt.Logger = slog.New(slog.DiscardHandler) // the failures are expected
		ns = registerAlarmClass(t, rt, rec)
	})
	s := stub(t, ns, "doomed")
	start := time.Now()
	setAlarm(t, s, start)
	checkFor(t, 10*time.Second, "alarm dropped", func() bool {
		return len(rec.list()) > 0 && infoAlarm(t, ns, "doomed").IsZero()
	})
	got := rec.list()
	if len(got) != maxRetries+1 {
		t.Fatalf("%d deliveries, want %d (first try + %d retries)", len(got), maxRetries+1, maxRetries)
	}
	for i, d := range got {
		if d.info.RetryCount != i {
			t.Fatalf("delivery %d has RetryCount %d", i, d.info.RetryCount)
		}
		t.Logf("delivery %d at +%v", i, d.at.Sub(start).Round(time.Millisecond))
	}
}

// TestAlarmHandlerSetsNext: an alarm set by the handler replaces the one
// being delivered instead of being cleared with it.
func TestAlarmHandlerSetsNext(t *testing.T) {
	far := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	rec := &alarmRecorder{onAlarm: func(ctx context.Context, tx *objects.Tx, info objects.AlarmInfo, n int) error {
		switch n {
		case 1:
			tx.SetAlarm(time.Now().Add(10 * time.Millisecond)) // fires again soon
		case 2:
			tx.SetAlarm(far)
		}
		return nil
	}}
	var ns *objects.Namespace
	newOpenRuntime(t, func(rt *objects.Runtime) { ns = registerAlarmClass(t, rt, rec) })
	s := stub(t, ns, "repeat")
	setAlarm(t, s, time.Now())
	checkFor(t, 10*time.Second, "two deliveries", func() bool { return len(rec.list()) >= 2 })
	checkFor(t, 10*time.Second, "far alarm set", func() bool { return infoAlarm(t, ns, "repeat").Equal(far) })
	if got, ok := alarmOf(t, s); !ok || !got.Equal(far) {
		t.Fatalf("Alarm=%v,%v, want %v", got, ok, far)
	}
	if got := rec.list(); len(got) != 2 || got[0].info.RetryCount != 0 || got[1].info.RetryCount != 0 {
		t.Fatalf("deliveries %+v, want two first tries", got)
	}
}

// TestAlarmSetInNew: Class.New may write, and an alarm it sets is a write
// like any other: it must be in effect once the first call returns. Its
// OnCommit hooks run too, before the first call.
func TestAlarmSetInNew(t *testing.T) {
	ctx := context.Background()
	at := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	type wound struct{ committed bool }
	var ns *objects.Namespace
	newOpenRuntime(t, func(rt *objects.Runtime) {
		var err error
		ns, err = rt.Register("selfwinding", objects.Class{
			New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
				w := &wound{}
				if _, ok, err := tx.Alarm(ctx); err != nil || ok {
					return w, err
				}
				tx.SetAlarm(at)
				tx.OnCommit(func() { w.committed = true })
				return w, nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	s := stub(t, ns, "w")
	committed, err := objects.Do(ctx, s, func(ctx context.Context, w *wound, tx *objects.Tx) (bool, error) {
		return w.committed, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !committed {
		t.Fatal("New's OnCommit hook did not run before the first call")
	}
	if got := infoAlarm(t, ns, "w"); !got.Equal(at) {
		t.Fatalf("Info.Alarm=%v after New set %v", got, at)
	}
}

// An alarm that a call replaced is not delivered, also when the call and
// the old alarm's delivery share a batch: the delivery sees the batch's
// pending change, and the new alarm stands.
func TestAlarmReplacedInTheSameBatch(t *testing.T) {
	ctx := context.Background()
	rec := &alarmRecorder{}
	var ns *objects.Namespace
	newOpenRuntime(t, func(rt *objects.Runtime) { ns = registerAlarmClass(t, rt, rec) })
	s, err := ns.Get("replaced")
	if err != nil {
		t.Fatal(err)
	}
	setAlarm(t, s, time.Now().Add(300*time.Millisecond))
	unblock := blockObject(t, s)
	later := time.Now().Add(time.Hour)
	done := make(chan error, 1)
	go func() { // queued first: replaces the alarm
		_, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			tx.SetAlarm(later)
			return nil, nil
		})
		done <- err
	}()
	checkFor(t, 5*time.Second, "the call queued", func() bool { return s.Queued() == 1 })
	checkFor(t, 5*time.Second, "the old alarm's delivery queued behind it", func() bool { return s.Queued() == 2 })
	unblock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // a delivery would have run by now
	if n := len(rec.list()); n != 0 {
		t.Errorf("the replaced alarm was delivered %d times", n)
	}
	if got, ok := alarmOf(t, s); !ok || !got.Equal(later.Truncate(time.Millisecond)) {
		t.Errorf("alarm %v (set %v), want %v", got, ok, later.Truncate(time.Millisecond))
	}
}

// TestAlarmWaitsOutFullQueue: an alarm that finds its object's queue full
// has not failed, for it never ran: it waits its turn without using up a
// retry, and is delivered once the queue has room rather than dropped
// after the last retry.
func TestAlarmWaitsOutFullQueue(t *testing.T) {
	ctx := context.Background()
	rec := &alarmRecorder{}
	var ns *objects.Namespace
	rt, _ := newOpenRuntime(t, func(rt *objects.Runtime) {
		rt.QueueLimit = 1
		rt.AlarmRetryBase = time.Millisecond
		rt.AlarmMaxRetries = 1
		ns = registerAlarmClass(t, rt, rec)
	})
	s := stub(t, ns, "busy")
	noop := func(ctx context.Context, obj any, tx *objects.Tx) (any, error) { return nil, nil }
	running, release := make(chan struct{}), make(chan struct{})
	calls := make(chan error, 2)
	go func() {
		_, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			close(running)
			<-release
			return nil, nil
		})
		calls <- err
	}()
	<-running
	go func() { _, err := s.Call(ctx, noop); calls <- err }()
	checkFor(t, 10*time.Second, "a full queue", func() bool { return s.Queued() == 1 })
	if err := objects.SetAlarmInIndex(rt, "alarmer", "busy", time.Now()); err != nil {
		t.Fatal(err)
	}
	// Far past the retries a failing alarm would get here (one, after
	// 1 ms), and its drop.
	time.Sleep(200 * time.Millisecond)
	close(release)
	for range 2 {
		if err := <-calls; err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 10*time.Second, "the alarm delivered", func() bool { return len(rec.list()) > 0 })
	if got := rec.list()[0].info.RetryCount; got != 0 {
		t.Fatalf("delivered with RetryCount %d, want 0: a full queue is no failure of the alarm", got)
	}
}

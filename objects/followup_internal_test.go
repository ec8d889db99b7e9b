package objects

import (
	"context"
	"slices"
	"testing"
	"time"
)

// A batch's alarm and subscription changes live in the node index, another
// database than the object's. These tests make the index refuse a change
// (a trigger raising an error, as a full disk or an I/O error would) and
// check the contract: a call's answer matches what is stored. A failure
// before the commit fails the call with nothing stored; a failure after it
// leaves the call's writes and its success, and at worst something spare (an
// alarm that fires once more, a subscription that stays), never something
// lost.

// quietBus accepts every event and delivers none: Subscribe needs a bus.
type quietBus struct{}

func (quietBus) Publish(context.Context, string, []byte, string) error { return nil }
func (quietBus) Subscribe(context.Context, func(context.Context, Event) error) (func(), error) {
	return func() {}, nil
}

func openFollowUps(t *testing.T) (*Runtime, *Stub) {
	t.Helper()
	ctx := context.Background()
	rt := NewRuntime(t.TempDir())
	rt.Durability = DurabilityNormal
	rt.Bus = quietBus{}
	ns, err := rt.Register("f", Class{
		Migrations: []string{`CREATE TABLE v (x INTEGER);
			CREATE TABLE p (id INTEGER PRIMARY KEY);
			CREATE TABLE c (pid INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)`},
		New: func(ctx context.Context, h *Handle, tx *Tx) (any, error) { return struct{}{}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	s, err := ns.Get("one")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Exec(ctx, nil, `INSERT INTO v VALUES (0)`); err != nil {
		t.Fatal(err)
	}
	return rt, s
}

// refuse makes the node index fail the statements a trigger matches, until
// the test ends or the returned function is called.
func refuse(t *testing.T, rt *Runtime, name, trigger string) (allow func()) {
	t.Helper()
	ctx := context.Background()
	if _, err := rt.index.db.ExecContext(ctx, `CREATE TRIGGER `+name+` `+trigger+` BEGIN SELECT RAISE(ABORT, 'injected index failure'); END`); err != nil {
		t.Fatal(err)
	}
	allow = func() { rt.index.db.ExecContext(ctx, `DROP TRIGGER IF EXISTS `+name) }
	t.Cleanup(allow)
	return allow
}

// writeWith runs a call that inserts x into v and then does more.
func writeWith(s *Stub, x int, more func(tx *Tx) error) error {
	_, err := s.Call(context.Background(), func(ctx context.Context, obj any, tx *Tx) (any, error) {
		if _, err := tx.Exec(ctx, `INSERT INTO v VALUES (?)`, x); err != nil {
			return nil, err
		}
		return nil, more(tx)
	})
	return err
}

func stored(t *testing.T, s *Stub, x int) bool {
	t.Helper()
	var n int
	if _, err := s.Call(context.Background(), func(ctx context.Context, obj any, tx *Tx) (any, error) {
		return nil, tx.QueryRow(ctx, `SELECT count(*) FROM v WHERE x = ?`, x).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func indexAlarm(t *testing.T, rt *Runtime) time.Time {
	t.Helper()
	at, _, err := rt.index.alarm(context.Background(), "f", "one")
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// subscribed reports whether the pattern is in the index's table and in the
// runtime's memory.
func subscribed(t *testing.T, rt *Runtime, pattern string) (inIndex, inMemory bool) {
	t.Helper()
	var n int
	if err := rt.index.db.QueryRow(`SELECT count(*) FROM subscriptions WHERE namespace = 'f' AND name = 'one' AND pattern = ?`, pattern).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0, slices.Contains(rt.subs.patterns(), pattern)
}

func TestAlarmRefusedFailsCallUncommitted(t *testing.T) {
	rt, s := openFollowUps(t)
	allow := refuse(t, rt, "no_alarm", `BEFORE UPDATE OF alarm_at ON objects WHEN NEW.alarm_at IS NOT NULL`)
	at := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	err := writeWith(s, 1, func(tx *Tx) error { tx.SetAlarm(at); return nil })
	if err == nil || stored(t, s, 1) {
		t.Fatalf("index refused the alarm: call err=%v, row stored=%v; want a failed call and no row", err, stored(t, s, 1))
	}
	if got := indexAlarm(t, rt); !got.IsZero() {
		t.Fatalf("alarm %v set by a failed call", got)
	}
	allow()
	if err := writeWith(s, 2, func(tx *Tx) error { tx.SetAlarm(at); return nil }); err != nil {
		t.Fatal(err)
	}
	if !stored(t, s, 2) || !indexAlarm(t, rt).Equal(at) {
		t.Fatalf("after the index recovered: row stored=%v, alarm %v; want the row and %v", stored(t, s, 2), indexAlarm(t, rt), at)
	}
}

func TestAlarmClearRefusedKeepsCommittedCall(t *testing.T) {
	rt, s := openFollowUps(t)
	at := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	if err := writeWith(s, 1, func(tx *Tx) error { tx.SetAlarm(at); return nil }); err != nil {
		t.Fatal(err)
	}
	refuse(t, rt, "no_clear", `BEFORE UPDATE OF alarm_at ON objects WHEN NEW.alarm_at IS NULL`)
	if err := writeWith(s, 2, func(tx *Tx) error { tx.DeleteAlarm(); return nil }); err != nil || !stored(t, s, 2) {
		t.Fatalf("committed call: err=%v, row stored=%v; want success and its row", err, stored(t, s, 2))
	}
	// The spare side: the alarm is still there and would fire once.
	if got := indexAlarm(t, rt); !got.Equal(at) {
		t.Fatalf("alarm %v, want the old %v left (the clear was refused)", got, at)
	}
}

func TestCommitFailureRestoresIndex(t *testing.T) {
	ctx := context.Background()
	rt, s := openFollowUps(t)
	at := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	if err := writeWith(s, 1, func(tx *Tx) error { tx.SetAlarm(at); return tx.Subscribe("kept.one") }); err != nil {
		t.Fatal(err)
	}
	// With foreign keys on, a deferred violation passes its statement and
	// fails the COMMIT.
	if _, err := s.Exec(ctx, nil, `PRAGMA foreign_keys = ON`); err != nil {
		t.Fatal(err)
	}
	err := writeWith(s, 2, func(tx *Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO c (pid) VALUES (42)`); err != nil {
			return err
		}
		tx.SetAlarm(at.Add(time.Hour))
		if err := tx.Subscribe("kept.one"); err != nil {
			return err
		}
		return tx.Subscribe("new.one")
	})
	if err == nil || stored(t, s, 2) {
		t.Fatalf("commit should fail on the deferred foreign key: err=%v, row stored=%v", err, stored(t, s, 2))
	}
	if got := indexAlarm(t, rt); !got.Equal(at) {
		t.Fatalf("alarm %v after the failed commit, want the earlier %v", got, at)
	}
	if idx, mem := subscribed(t, rt, "new.one"); idx || mem {
		t.Fatalf("subscription of the failed commit: in index %v, in memory %v", idx, mem)
	}
	if idx, mem := subscribed(t, rt, "kept.one"); !idx || !mem {
		t.Fatalf("earlier subscription lost by the failed commit: in index %v, in memory %v", idx, mem)
	}
}

func TestSubscribeRefusedFailsCallUncommitted(t *testing.T) {
	rt, s := openFollowUps(t)
	at := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	refuse(t, rt, "no_sub", `BEFORE INSERT ON subscriptions`)
	err := writeWith(s, 1, func(tx *Tx) error { tx.SetAlarm(at); return tx.Subscribe("a.b") })
	if err == nil || stored(t, s, 1) {
		t.Fatalf("index refused the subscription: err=%v, row stored=%v; want a failed call and no row", err, stored(t, s, 1))
	}
	if idx, mem := subscribed(t, rt, "a.b"); idx || mem {
		t.Fatalf("refused subscription: in index %v, in memory %v", idx, mem)
	}
	// The alarm set before the subscription was refused is taken back.
	if got := indexAlarm(t, rt); !got.IsZero() {
		t.Fatalf("alarm %v left by a failed call", got)
	}
}

func TestUnsubscribeRefusedKeepsCommittedCall(t *testing.T) {
	rt, s := openFollowUps(t)
	if err := writeWith(s, 1, func(tx *Tx) error { return tx.Subscribe("a.b") }); err != nil {
		t.Fatal(err)
	}
	refuse(t, rt, "no_unsub", `BEFORE DELETE ON subscriptions`)
	if err := writeWith(s, 2, func(tx *Tx) error { tx.Unsubscribe("a.b"); return nil }); err != nil || !stored(t, s, 2) {
		t.Fatalf("committed call: err=%v, row stored=%v; want success and its row", err, stored(t, s, 2))
	}
	// Ended for this run; the index keeps the row (spare, back after a
	// restart).
	if idx, mem := subscribed(t, rt, "a.b"); !idx || mem {
		t.Fatalf("in index %v (want true: the delete was refused), in memory %v (want false)", idx, mem)
	}
}

// Within a batch the last change to a pattern wins, whichever order the
// index applies additions and removals in.
func TestSubscriptionChangesNetPerPattern(t *testing.T) {
	rt, s := openFollowUps(t)
	if err := writeWith(s, 1, func(tx *Tx) error { return tx.Subscribe("x.y") }); err != nil {
		t.Fatal(err)
	}
	if err := writeWith(s, 2, func(tx *Tx) error {
		tx.Unsubscribe("x.y")
		if err := tx.Subscribe("x.y"); err != nil {
			return err
		}
		if err := tx.Subscribe("z.w"); err != nil {
			return err
		}
		tx.Unsubscribe("z.w")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if idx, mem := subscribed(t, rt, "x.y"); !idx || !mem {
		t.Fatalf("x.y unsubscribed then subscribed: in index %v, in memory %v; want both", idx, mem)
	}
	if idx, mem := subscribed(t, rt, "z.w"); idx || mem {
		t.Fatalf("z.w subscribed then unsubscribed: in index %v, in memory %v; want neither", idx, mem)
	}
}

// An alarm moved later is written after the commit: the earlier one stays
// until then, so a crash between the two databases fires it early rather
// than losing it. Refused after the commit, the call keeps its success.
func TestAlarmMovedLaterAfterCommit(t *testing.T) {
	rt, s := openFollowUps(t)
	at := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	if err := writeWith(s, 1, func(tx *Tx) error { tx.SetAlarm(at); return nil }); err != nil {
		t.Fatal(err)
	}
	allow := refuse(t, rt, "no_later", `BEFORE UPDATE OF alarm_at ON objects WHEN NEW.alarm_at > OLD.alarm_at`)
	if err := writeWith(s, 2, func(tx *Tx) error { tx.SetAlarm(at.Add(time.Hour)); return nil }); err != nil || !stored(t, s, 2) {
		t.Fatalf("committed call: err=%v, row stored=%v; want success and its row", err, stored(t, s, 2))
	}
	if got := indexAlarm(t, rt); !got.Equal(at) {
		t.Fatalf("alarm %v, want the earlier %v kept (the later one was refused)", got, at)
	}
	allow()
	if err := writeWith(s, 3, func(tx *Tx) error { tx.SetAlarm(at.Add(2 * time.Hour)); return nil }); err != nil {
		t.Fatal(err)
	}
	if got := indexAlarm(t, rt); !got.Equal(at.Add(2 * time.Hour)) {
		t.Fatalf("alarm %v, want it moved to %v", got, at.Add(2*time.Hour))
	}
}

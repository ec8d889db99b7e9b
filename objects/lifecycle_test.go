package objects_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sessiond/objects"
)

// script is a fixed sequence of calls on several objects; it returns what
// each call answered.
func script(t *testing.T, ns *objects.Namespace, between func()) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for round := range 4 {
		for _, name := range []string{"x", "y", "z"} {
			s := stub(t, ns, name)
			n, err := add(ctx, s, int64(round+len(name)))
			out = append(out, fmt.Sprint(name, n, err))
			g, err := get(ctx, s)
			out = append(out, fmt.Sprint(name, g, err))
		}
		between()
	}
	return out
}

// TestHibernationInvisible runs the same calls with and without evictions in
// between and expects the same answers.
func TestHibernationInvisible(t *testing.T) {
	_, awake := newOpenRuntime(t, func(rt *objects.Runtime) { rt.IdleTimeout = time.Hour })
	want := script(t, awake, func() {})

	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.IdleTimeout = 5 * time.Millisecond })
	evictions := 0
	got := script(t, ns, func() {
		checkFor(t, 5*time.Second, "all objects hibernated", func() bool { return rt.Stats().Active == 0 })
		evictions++
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("with hibernation:\n%v\nwithout:\n%v", got, want)
	}
	if opens := rt.Stats().ObjectOpens; opens < 9 {
		t.Fatalf("only %d wakes from disk: hibernation did not happen", opens)
	}
	// A hibernated object without sockets holds nothing in memory.
	checkFor(t, 5*time.Second, "no entries in memory", func() bool { return rt.Stats().Entries == 0 })
}

// TestStartupOpensNoObject creates objects, restarts, and counts database
// opens: start-up must open none of them.
func TestStartupOpensNoObject(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rt, ns := newRuntime(t, dir, nil)
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := add(ctx, stub(t, ns, fmt.Sprint("o", i)), 1); err != nil {
			t.Fatal(err)
		}
	}
	rt.Close()

	rt2, ns2 := newRuntime(t, dir, nil)
	if err := rt2.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	if got := rt2.Stats().ObjectOpens; got != 0 {
		t.Fatalf("start-up opened %d object databases, want 0", got)
	}
	if n, err := get(ctx, stub(t, ns2, "o7")); err != nil || n != 1 {
		t.Fatalf("o7=%d err=%v", n, err)
	}
	if got := rt2.Stats().ObjectOpens; got != 1 {
		t.Fatalf("one call opened %d object databases, want 1", got)
	}
}

// TestMaxOpenCap drives more objects than the cap: the least recently used
// idle ones hibernate early and every call still works.
func TestMaxOpenCap(t *testing.T) {
	ctx := context.Background()
	const maxOpen = 20
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) {
		rt.MaxOpen = maxOpen
		rt.IdleTimeout = time.Hour
	})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				name := fmt.Sprint("cap", w, "-", i)
				if _, err := add(ctx, stub(t, ns, name), 2); err != nil {
					t.Error(err)
					return
				}
				if open := rt.Stats().OpenDatabases; open > maxOpen+8 {
					t.Errorf("%d databases open, cap %d", open, maxOpen)
				}
			}
		}()
	}
	wg.Wait()
	for w := range 4 {
		for i := range 50 {
			name := fmt.Sprint("cap", w, "-", i)
			if n, err := get(ctx, stub(t, ns, name)); err != nil || n != 2 {
				t.Fatalf("%s=%d err=%v", name, n, err)
			}
		}
	}
	if open := rt.Stats().OpenDatabases; open > maxOpen {
		t.Fatalf("%d databases open after the run, cap %d", open, maxOpen)
	}
}

func TestDeleteRemovesEverything(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, nil)
	s := stub(t, ns, "doomed")
	if _, err := add(ctx, s, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		tx.SetAlarm(time.Now().Add(time.Hour))
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	oi, err := ns.Info(ctx, "doomed")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(rt.Dir, oi.Path)
	if err := s.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := ns.Exists(ctx, "doomed"); ok {
		t.Fatal("exists after delete")
	}
	for _, p := range []string{file, file + "-wal", file + "-shm"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s still there (err=%v)", p, err)
		}
	}
	// The next call sees a new, empty object.
	if n, err := get(ctx, s); err != nil || n != 0 {
		t.Fatalf("after delete n=%d err=%v, want 0", n, err)
	}
	oi2, err := ns.Info(ctx, "doomed")
	if err != nil {
		t.Fatal(err)
	}
	if !oi2.Alarm.IsZero() {
		t.Fatalf("alarm survived delete: %v", oi2.Alarm)
	}
	// Deleting what does not exist is fine.
	if err := stub(t, ns, "never").Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestUsageCounters(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.IdleTimeout = 5 * time.Millisecond })
	s := stub(t, ns, "billed")
	for range 3 {
		if _, err := add(ctx, s, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := get(ctx, s); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, "hibernated", func() bool { return rt.Stats().Entries == 0 })
	oi, err := ns.Info(ctx, "billed")
	if err != nil {
		t.Fatal(err)
	}
	u := oi.Usage
	if u.Calls != 4 || u.RowsWritten != 3 || u.RowsRead < 1 || u.Active <= 0 || u.SizeBytes <= 0 {
		t.Fatalf("usage %+v, want 4 calls, 3 rows written, some read, active and size", u)
	}
}

func TestHoldKeepsAwake(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.IdleTimeout = 5 * time.Millisecond })
	s := stub(t, ns, "held")
	release, err := objects.Do(ctx, s, func(ctx context.Context, c *counter, tx *objects.Tx) (func(), error) {
		return c.h.Hold(), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Idle timers would have fired many times over; it stays.
	for range 5 {
		if _, err := get(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(30 * time.Millisecond) // not waiting for state: giving the idle timer a chance to (wrongly) fire
	if rt.Stats().Active != 1 || rt.Stats().ObjectOpens != 0 {
		t.Fatalf("held object hibernated: %+v", rt.Stats())
	}
	release()
	checkFor(t, 5*time.Second, "hibernated after release", func() bool { return rt.Stats().Active == 0 })
}

// An object's database keeps SQLite's exclusive lock with its WAL index in
// memory: no -shm file (no shared memory, no lock system calls per
// transaction). The driver's order of DSN pragmas once put WAL mode first,
// which silently brought the -shm file back.
func TestObjectDatabaseHasNoSharedMemoryFile(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.IdleTimeout = 20 * time.Millisecond })
	s := stub(t, ns, "noshm")
	for round := range 2 { // created, then woken from disk
		// Held open while its files are looked at: on a loaded machine the
		// short idle timeout (for the wake of round 1) could otherwise close
		// the database, and its WAL with it, before the first look.
		release, err := objects.Do(ctx, s, func(ctx context.Context, c *counter, tx *objects.Tx) (func(), error) {
			if _, err := tx.Exec(ctx, `UPDATE counter SET n = n + 1 WHERE id = 1`); err != nil {
				return nil, err
			}
			c.n++
			return c.h.Hold(), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		oi, err := ns.Info(ctx, "noshm")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(rt.Dir, oi.Path)
		if _, err := os.Stat(path + "-wal"); err != nil {
			t.Fatalf("round %d: the object is open but has no WAL: %v", round, err)
		}
		if _, err := os.Stat(path + "-shm"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("round %d: %s-shm exists (err %v): the WAL index is in shared memory", round, oi.Path, err)
		}
		var lock, journal string
		var syncMode, cache int
		if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			for q, dst := range map[string]any{`PRAGMA locking_mode`: &lock, `PRAGMA journal_mode`: &journal,
				`PRAGMA synchronous`: &syncMode, `PRAGMA cache_size`: &cache} {
				if err := tx.QueryRow(ctx, q).Scan(dst); err != nil {
					return nil, fmt.Errorf("%s: %w", q, err)
				}
			}
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		if lock != "exclusive" || journal != "wal" || syncMode != 1 || cache != -rt.CacheKiB {
			t.Fatalf("round %d: locking_mode %s, journal_mode %s, synchronous %d, cache_size %d; want exclusive, wal, 1 (NORMAL), %d",
				round, lock, journal, syncMode, cache, -rt.CacheKiB)
		}
		release()
		checkFor(t, 10*time.Second, "hibernated", func() bool { return rt.Stats().Entries == 0 })
	}
}

// A wake serves every call of its batch: the first caller's context ending
// during the wake fails that caller alone, not the calls queued with it.
func TestWakeOutlivesFirstCallersContext(t *testing.T) {
	ctx := context.Background()
	var wakes atomic.Int32
	waking := make(chan struct{})
	resume := make(chan struct{})
	var ns *objects.Namespace
	newOpenRuntime(t, func(rt *objects.Runtime) {
		var err error
		ns, err = rt.Register("slowwake", objects.Class{
			Migrations: []string{`CREATE TABLE t (x INTEGER)`},
			New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
				if wakes.Add(1) == 2 { // the wake after the panic: slow
					close(waking)
					<-resume
				}
				var n int
				return struct{}{}, tx.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	s := stub(t, ns, "x")
	noop := func(ctx context.Context, obj any, tx *objects.Tx) (any, error) { return nil, nil }
	if _, err := s.Call(ctx, noop); err != nil {
		t.Fatal(err)
	}
	// A call holds the object while A and B queue, then panics: the
	// instance is dropped, and A and B's batch wakes it again.
	running, panicNow := make(chan struct{}), make(chan struct{})
	errP := make(chan error, 1)
	go func() {
		_, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			close(running)
			<-panicNow
			panic("dropping the instance on purpose")
		})
		errP <- err
	}()
	<-running
	actx, cancelA := context.WithCancel(ctx)
	errA, errB := make(chan error, 1), make(chan error, 1)
	go func() { _, err := s.Call(actx, noop); errA <- err }()
	checkFor(t, 5*time.Second, "A queued", func() bool { return s.Queued() == 1 })
	go func() { _, err := s.Call(ctx, noop); errB <- err }()
	checkFor(t, 5*time.Second, "B queued", func() bool { return s.Queued() == 2 })
	close(panicNow)
	if err := <-errP; err == nil {
		t.Fatal("the panicking call succeeded")
	}
	<-waking
	cancelA() // A gives up while the object wakes for it and B
	if err := <-errA; !errors.Is(err, context.Canceled) {
		t.Errorf("A: %v, want context.Canceled", err)
	}
	close(resume)
	if err := <-errB; err != nil {
		t.Fatalf("B, whose context never ended, failed: %v", err)
	}
}

// Two runtimes never open one folder at once: the second Open fails with
// ErrLocked, and succeeds once the first has closed.
func TestOpenLocksDir(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := objects.NewRuntime(dir)
	if err := a.Open(ctx); err != nil {
		t.Fatal(err)
	}
	b := objects.NewRuntime(dir)
	if err := b.Open(ctx); !errors.Is(err, objects.ErrLocked) {
		t.Fatalf("a second Open on the folder: %v, want objects.ErrLocked", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	c := objects.NewRuntime(dir)
	if err := c.Open(ctx); err != nil {
		t.Fatalf("Open after the first closed: %v", err)
	}
	c.Close()
}

// TestHibernationIsLoggedAtDebug: an operator sees objects wake and
// hibernate with --log-level debug (nothing else shows it).
func TestHibernationIsLoggedAtDebug(t *testing.T) {
	var log syncBuffer
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) {
		rt.IdleTimeout = 10 * time.Millisecond
		rt.Logger = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	s := stub(t, ns, "sleepy")
	if _, err := add(context.Background(), s, 1); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, "the hibernation logged", func() bool {
		return strings.Contains(log.String(), `msg="objects: hibernated" namespace=counter object=sleepy`)
	})
	if !strings.Contains(log.String(), `msg="objects: woke" namespace=counter object=sleepy new=true`) {
		t.Fatalf("the wake not logged:\n%s", log.String())
	}
}

// TestFailedFirstNewMakesNothing: a new object whose Class.New fails on
// its first call was never made: it does not exist, and the next call
// makes it whole. (Its index record and file stayed, without the name
// its first commit records.)
func TestFailedFirstNewMakesNothing(t *testing.T) {
	ctx := context.Background()
	rt := objects.NewRuntime(t.TempDir())
	rt.Durability = objects.DurabilityNormal
	var fail atomic.Bool
	fail.Store(true)
	ns, err := rt.Register("fragile", objects.Class{
		Migrations: []string{`CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)`},
		New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
			if fail.Load() {
				return nil, errors.New("not today")
			}
			return struct{}{}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	s := stub(t, ns, "first")
	write := func(ctx context.Context, _ any, tx *objects.Tx) (any, error) {
		_, err := tx.Exec(ctx, `INSERT INTO kv VALUES ('a', 'b')`)
		return nil, err
	}
	if _, err := s.Call(ctx, write); err == nil {
		t.Fatal("a call whose New fails succeeded")
	}
	if ok, err := ns.Exists(ctx, "first"); err != nil || ok {
		t.Fatalf("after its New failed: exists=%v (%v), want not made", ok, err)
	}
	fail.Store(false)
	if _, err := s.Call(ctx, write); err != nil {
		t.Fatalf("the next call: %v", err)
	}
	if ok, err := ns.Exists(ctx, "first"); err != nil || !ok {
		t.Fatalf("after a call that made it: exists=%v (%v)", ok, err)
	}
}

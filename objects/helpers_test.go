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

// counter is a test object: a persisted integer plus an in-memory copy.
type counter struct {
	h *objects.Handle
	n int64

	mu     sync.Mutex
	alarms []objects.AlarmInfo
	failN  int // fail this many alarm deliveries
}

var counterClass = objects.Class{
	Migrations: []string{
		`CREATE TABLE counter (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
		 INSERT INTO counter (id, n) VALUES (1, 0);`,
		`CREATE TABLE log (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)`,
	},
	New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
		c := &counter{h: h}
		if err := tx.QueryRow(ctx, `SELECT n FROM counter WHERE id = 1`).Scan(&c.n); err != nil {
			return nil, err
		}
		return c, nil
	},
}

// add increments the stored counter and returns the new value.
func add(ctx context.Context, stub *objects.Stub, d int64) (int64, error) {
	return objects.Do(ctx, stub, func(ctx context.Context, c *counter, tx *objects.Tx) (int64, error) {
		if _, err := tx.Exec(ctx, `UPDATE counter SET n = n + ? WHERE id = 1`, d); err != nil {
			return 0, err
		}
		c.n += d // last step: the next call of the batch sees it
		return c.n, nil
	})
}

func get(ctx context.Context, stub *objects.Stub) (int64, error) {
	return objects.Do(ctx, stub, func(ctx context.Context, c *counter, tx *objects.Tx) (int64, error) {
		var n int64
		err := tx.QueryRow(ctx, `SELECT n FROM counter WHERE id = 1`).Scan(&n)
		if err == nil && n != c.n {
			return 0, errors.New("memory and storage disagree")
		}
		return n, err
	})
}

func (c *counter) Alarm(ctx context.Context, tx *objects.Tx, info objects.AlarmInfo) error {
	c.mu.Lock()
	c.alarms = append(c.alarms, info)
	fail := c.failN > 0
	if fail {
		c.failN--
	}
	c.mu.Unlock()
	if fail {
		return errors.New("alarm handler fails on purpose")
	}
	_, err := tx.Exec(ctx, `INSERT INTO log (body) VALUES (?)`, "alarm")
	return err
}

type testLogWriter struct{ tb testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.tb.Log(string(p))
	return len(p), nil
}

// newRuntime returns an unopened runtime in a temp folder with a counter
// namespace registered, logging to the test.
func newRuntime(tb testing.TB, dir string, configure func(*objects.Runtime)) (*objects.Runtime, *objects.Namespace) {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	rt := objects.NewRuntime(dir)
	rt.Durability = objects.DurabilityNormal
	if _, ok := tb.(*testing.B); !ok {
		rt.Logger = slog.New(slog.NewTextHandler(testLogWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if configure != nil {
		configure(rt)
	}
	ns, err := rt.Register("counter", counterClass)
	if err != nil {
		tb.Fatal(err)
	}
	return rt, ns
}

// newOpenRuntime is newRuntime, opened, closed at cleanup.
func newOpenRuntime(tb testing.TB, configure func(*objects.Runtime)) (*objects.Runtime, *objects.Namespace) {
	tb.Helper()
	rt, ns := newRuntime(tb, "", configure)
	if err := rt.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rt.Close() })
	return rt, ns
}

func stub(tb testing.TB, ns *objects.Namespace, name string) *objects.Stub {
	tb.Helper()
	s, err := ns.Get(name)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// checkFor polls cond until it holds or the deadline passes.
func checkFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

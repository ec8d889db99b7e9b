package objects_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"modernc.org/sqlite"

	"sessiond/objects"
)

// cancelFromSQL holds cancel funcs that the SQL function test_cancel(id)
// calls, so that a test can end a call's context in the middle of one of its
// statements, deterministically.
var cancelFromSQL sync.Map // int64 → context.CancelFunc

func init() {
	sqlite.MustRegisterScalarFunction("test_cancel", 1, func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		if id, ok := args[0].(int64); ok {
			if f, ok := cancelFromSQL.Load(id); ok {
				f.(context.CancelFunc)()
			}
		}
		runtime.Gosched() // let the driver's watcher see the context end
		return "cancelled", nil
	})
}

// queueBatch runs fns as one batch: each is queued behind a blocked call,
// then the object is released. ctxs[i] (nil for Background) is call i's
// context. It returns each call's error.
func queueBatch(t *testing.T, s *objects.Stub, ctxs []context.Context, fns []objects.Func) []error {
	t.Helper()
	unblock := blockObject(t, s)
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		ctx := context.Background()
		if ctxs != nil && ctxs[i] != nil {
			ctx = ctxs[i]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Call(ctx, fn)
		}()
		checkFor(t, 5*time.Second, "call queued", func() bool { return s.Queued() == i+1 })
	}
	unblock()
	wg.Wait()
	return errs
}

func countRows(t *testing.T, s *objects.Stub, where string) int {
	t.Helper()
	n, err := objects.Do(context.Background(), s, func(ctx context.Context, _ *counter, tx *objects.Tx) (int, error) {
		var n int
		err := tx.QueryRow(ctx, `SELECT count(*) FROM log WHERE `+where).Scan(&n)
		return n, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func insertSeq(seq int) objects.Func {
	return func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		_, err := tx.Exec(ctx, `INSERT INTO log (seq, body) VALUES (?, 'row')`, seq)
		return nil, err
	}
}

// TestCancelMidStatementKeepsBatch: the context of one call in a batch ends
// while its statement runs (a client hanging up). SQLite answers an
// interrupted write inside a transaction by rolling back the whole
// transaction, which used to take the other calls' writes with it: the
// earlier call was told its commit failed, and the later one was told it
// failed although its write had been committed on its own. The other calls
// must succeed, and every call's answer must match what is stored.
func TestCancelMidStatementKeepsBatch(t *testing.T) {
	ctx := context.Background()
	_, ns := newOpenRuntime(t, nil)
	s := stub(t, ns, "hangup")
	if _, err := add(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cancelFromSQL.Store(int64(1), cancel)
	defer cancelFromSQL.Delete(int64(1))
	errs := queueBatch(t, s, []context.Context{nil, cctx, nil}, []objects.Func{
		insertSeq(1),
		func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			// The first row cancels the call's context; SQLite's progress
			// handler would interrupt the statement within 1000 steps.
			_, err := tx.Exec(ctx, `WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM r WHERE i < 20000)
				INSERT INTO log (seq, body) SELECT 10000 + i, test_cancel(1) FROM r`)
			return nil, err
		},
		insertSeq(3),
	})
	if cctx.Err() == nil {
		t.Fatal("the statement did not cancel its call's context")
	}
	for _, c := range []struct {
		call int
		seq  string
	}{{0, "1"}, {2, "3"}} {
		present := countRows(t, s, "seq = "+c.seq) == 1
		if errs[c.call] != nil || !present {
			t.Errorf("call %d (not cancelled): err=%v, row present=%v; want success and its row", c.call, errs[c.call], present)
		}
	}
	n := countRows(t, s, "body = 'cancelled'")
	if (errs[1] == nil) != (n == 20000) || (errs[1] != nil && n != 0) {
		t.Errorf("cancelled call: err=%v with %d of its 20000 rows stored", errs[1], n)
	}
}

// TestLostTransactionFailsBatch: a call that ends the batch's transaction
// under the runtime (here an explicit ROLLBACK; an I/O error does the same)
// must not leave later calls writing outside any transaction: every call's
// answer must match what is stored.
func TestLostTransactionFailsBatch(t *testing.T) {
	ctx := context.Background()
	_, ns := newOpenRuntime(t, nil)
	s := stub(t, ns, "lost")
	if _, err := add(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	// Every call learns its fate through exactly one of its hooks, the
	// one its answer says: OnCommit, or OnRollback (also when the call
	// itself succeeded and the batch's commit failed).
	var mu sync.Mutex
	fate := map[int]string{}
	hooked := func(i int, f objects.Func) objects.Func {
		return func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			tx.OnCommit(func() { mu.Lock(); fate[i] += "commit"; mu.Unlock() })
			tx.OnRollback(func() { mu.Lock(); fate[i] += "rollback"; mu.Unlock() })
			return f(ctx, obj, tx)
		}
	}
	errs := queueBatch(t, s, nil, []objects.Func{
		hooked(0, insertSeq(1)),
		hooked(1, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			_, err := tx.Exec(ctx, `ROLLBACK`)
			return nil, err
		}),
		hooked(2, insertSeq(3)),
		hooked(3, insertSeq(4)),
	})
	for i, seq := range []string{"1", "", "3", "4"} {
		want := "commit"
		if errs[i] != nil {
			want = "rollback"
		}
		mu.Lock()
		if fate[i] != want {
			t.Errorf("call %d (err %v): hooks ran %q, want %q", i, errs[i], fate[i], want)
		}
		mu.Unlock()
		if seq == "" {
			if errs[i] == nil {
				t.Errorf("call %d ended the transaction and succeeded", i)
			}
			continue
		}
		present := countRows(t, s, "seq = "+seq) == 1
		if (errs[i] == nil) != present {
			t.Errorf("call %d: err=%v but row present=%v", i, errs[i], present)
		}
	}
	// The object works normally afterwards.
	if _, err := s.Call(ctx, insertSeq(5)); err != nil {
		t.Fatal(err)
	}
	if countRows(t, s, "seq = 5") != 1 {
		t.Fatal("row 5 missing")
	}
}

// A Tx kept past its call (or past New) is refused, not run on the
// connection that by then serves other calls.
func TestTxRefusedAfterItsCall(t *testing.T) {
	ctx := context.Background()
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Bus = &recordingBus{} })
	s := stub(t, ns, "kept")
	var kept *objects.Tx
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		kept = tx
		_, err := tx.Exec(ctx, `INSERT INTO log (body) VALUES ('in the call')`)
		return nil, err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := kept.Exec(ctx, `INSERT INTO log (body) VALUES ('after')`); !errors.Is(err, objects.ErrTxDone) {
		t.Errorf("Exec after the call: %v, want ErrTxDone", err)
	}
	if _, err := kept.Query(ctx, `SELECT 1`); !errors.Is(err, objects.ErrTxDone) {
		t.Errorf("Query after the call: %v, want ErrTxDone", err)
	}
	if err := kept.Publish(ctx, "ev.late", nil); !errors.Is(err, objects.ErrTxDone) {
		t.Errorf("Publish after the call: %v, want ErrTxDone", err)
	}
	if err := kept.Subscribe("ev.>"); !errors.Is(err, objects.ErrTxDone) {
		t.Errorf("Subscribe after the call: %v, want ErrTxDone", err)
	}
	if _, _, err := kept.Alarm(ctx); !errors.Is(err, objects.ErrTxDone) {
		t.Errorf("Alarm after the call: %v, want ErrTxDone", err)
	}
	if h := kept.Handle(); h != nil {
		t.Errorf("Handle after the call: %v, want nil", h)
	}
	var n int
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		return nil, tx.QueryRow(ctx, `SELECT count(*) FROM log`).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d rows, want only the one written inside the call", n)
	}
}

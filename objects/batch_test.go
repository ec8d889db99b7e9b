package objects_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"sessiond/objects"
)

// blockObject runs a call that holds the object until the returned func is
// called, so that later calls queue up into one batch.
func blockObject(t *testing.T, s *objects.Stub) (unblock func()) {
	t.Helper()
	release := make(chan struct{})
	entered := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Call(context.Background(), func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			close(entered)
			<-release
			return nil, nil
		})
	}()
	<-entered
	return func() { close(release); <-done }
}

// TestBatchFailureIsolated queues calls behind a blocked one so they run as
// one batch with one commit; every third fails after writing. The failed
// calls leave no trace, their neighbours' writes all land.
func TestBatchFailureIsolated(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, nil)
	s := stub(t, ns, "batch")
	if _, err := add(ctx, s, 0); err != nil { // create it
		t.Fatal(err)
	}
	unblock := blockObject(t, s)
	before := rt.Stats().Commits
	const n = 30
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
				if _, err := tx.Exec(ctx, `INSERT INTO log (seq, body) VALUES (?, ?)`, i+1, "x"); err != nil {
					return nil, err
				}
				if i%3 == 2 {
					return nil, fmt.Errorf("call %d fails on purpose", i)
				}
				return nil, nil
			})
		}()
		checkFor(t, 5*time.Second, "call queued", func() bool { return s.Queued() == i+1 })
	}
	unblock()
	wg.Wait()
	if got := rt.Stats().Commits - before; got != 1 {
		t.Fatalf("%d commits for one batch of %d calls, want 1", got, n)
	}
	seqs, err := objects.Do(ctx, s, func(ctx context.Context, _ *counter, tx *objects.Tx) (map[int]bool, error) {
		r, err := tx.Query(ctx, `SELECT seq FROM log`)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		m := map[int]bool{}
		for r.Next() {
			var v int
			r.Scan(&v)
			m[v] = true
		}
		return m, r.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		failed := i%3 == 2
		if failed != (errs[i] != nil) {
			t.Errorf("call %d err=%v", i, errs[i])
		}
		if seqs[i+1] == failed {
			t.Errorf("call %d (failed=%v): row present=%v", i, failed, seqs[i+1])
		}
	}
}

// TestNoResponseBeforeCommit checks the output gate: when a caller gets its
// answer, the batch holding its write has committed (and, in full
// durability, been synced), and after Close an independent connection finds
// every acknowledged row. An object's database is held with SQLite's
// exclusive lock while it is open, so the commit is observed through the
// runtime's counters, which move only after COMMIT (and the sync) succeed.
func TestNoResponseBeforeCommit(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Durability = objects.DurabilityFull })
	s := stub(t, ns, "gate")
	if _, err := add(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	oi, err := ns.Info(ctx, "gate")
	if err != nil {
		t.Fatal(err)
	}
	const callers, per = 16, 20
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				seq := c*per + i + 1
				var seen objects.Stats // counters as the call ran, before its commit
				_, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
					seen = rt.Stats()
					_, err := tx.Exec(ctx, `INSERT INTO log (seq, body) VALUES (?, ?)`, seq, "y")
					return nil, err
				})
				if err != nil {
					t.Error(err)
					return
				}
				now := rt.Stats()
				if now.Commits <= seen.Commits || now.SyncedCommits <= seen.SyncedCommits {
					t.Errorf("row %d acknowledged before its batch committed and synced (commits %d→%d, synced %d→%d)",
						seq, seen.Commits, now.Commits, seen.SyncedCommits, now.SyncedCommits)
					return
				}
			}
		}()
	}
	wg.Wait()
	if c := rt.Stats().Commits; c >= callers*per {
		t.Logf("no coalescing happened (%d commits for %d calls)", c, callers*per)
	}
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	reader, err := sql.Open("sqlite", "file:"+filepath.Join(rt.Dir, oi.Path)+"?"+url.Values{"_pragma": {"busy_timeout(5000)"}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	var n, distinct int
	if err := reader.QueryRow(`SELECT count(*), count(DISTINCT seq) FROM log`).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != callers*per || distinct != n {
		t.Fatalf("after close: %d rows (%d distinct), want %d acknowledged", n, distinct, callers*per)
	}
}

// TestPanicRollsBackAndRebuilds: a panicking call's writes are undone and the
// next call sees a fresh instance built from storage.
func TestPanicRollsBackAndRebuilds(t *testing.T) {
	ctx := context.Background()
	_, ns := newOpenRuntime(t, nil)
	s := stub(t, ns, "panic")
	if _, err := add(ctx, s, 7); err != nil {
		t.Fatal(err)
	}
	_, err := objects.Do(ctx, s, func(ctx context.Context, c *counter, tx *objects.Tx) (int, error) {
		tx.Exec(ctx, `UPDATE counter SET n = 1000`)
		c.n = 1000 // corrupt memory too
		panic("boom")
	})
	var pe *objects.PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("err=%v, want PanicError", err)
	}
	if n, err := get(ctx, s); err != nil || n != 7 {
		t.Fatalf("after panic n=%d err=%v, want 7", n, err)
	}
}

// TestPanicRebuildsForTheRestOfItsBatch: the calls queued behind a
// panicking call in its batch run on a fresh instance too: they ran on the
// one it had left its memory changes in, and could write from them.
func TestPanicRebuildsForTheRestOfItsBatch(t *testing.T) {
	ctx := context.Background()
	_, ns := newOpenRuntime(t, nil)
	s := stub(t, ns, "panic-batch")
	if _, err := add(ctx, s, 7); err != nil {
		t.Fatal(err)
	}
	errs := queueBatch(t, s, nil, []objects.Func{
		func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			_, err := tx.Exec(ctx, `INSERT INTO log (seq, body) VALUES (1, 'before')`)
			return nil, err
		},
		func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			obj.(*counter).n = 1000 // corrupt memory, then panic
			panic("boom")
		},
		func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			// Writes what memory says: a stale instance would store 1001.
			c := obj.(*counter)
			if _, err := tx.Exec(ctx, `UPDATE counter SET n = ?`, c.n+1); err != nil {
				return nil, err
			}
			c.n++
			return nil, nil
		},
	})
	var pe *objects.PanicError
	if errs[0] != nil || !errors.As(errs[1], &pe) || errs[2] != nil {
		t.Fatalf("errs %v, want nil, a PanicError, nil", errs)
	}
	if n, err := get(ctx, s); err != nil || n != 8 {
		t.Fatalf("after the batch n=%d err=%v, want 8: the call after the panic saw its memory", n, err)
	}
	if countRows(t, s, "seq = 1") != 1 {
		t.Fatal("the call before the panic lost its write")
	}
}

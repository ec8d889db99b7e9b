package objects_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"sessiond/objects"
)

// Stub.Exec commits its statement with the runtime's durability (synced in
// full, not when relaxed), a failed one leaves nothing, and the object keeps
// working either way.
func TestExecCommitsAlone(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Durability = objects.DurabilityFull })
	s := stub(t, ns, "exec")
	// The first write of a new object also records its name: Exec must
	// keep that in its commit.
	r, err := s.Exec(ctx, nil, `INSERT INTO log (seq, body) VALUES (1, 'first')`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := r.RowsAffected(); n != 1 {
		t.Fatalf("RowsAffected %d, want 1", n)
	}
	if ok, err := ns.Exists(ctx, "exec"); err != nil || !ok {
		t.Fatalf("object not recorded after its first Exec: %v %v", ok, err)
	}

	before := rt.Stats()
	if _, err := s.Exec(ctx, nil, `INSERT INTO log (seq, body) VALUES (2, 'strict')`); err != nil {
		t.Fatal(err)
	}
	mid := rt.Stats()
	if mid.Commits-before.Commits != 1 || mid.SyncedCommits-before.SyncedCommits != 1 {
		t.Fatalf("strict Exec: %d commits, %d synced; want 1 and 1", mid.Commits-before.Commits, mid.SyncedCommits-before.SyncedCommits)
	}
	relaxed := &objects.CallOptions{Durability: objects.DurabilityNormal}
	if _, err := s.Exec(ctx, relaxed, `INSERT INTO log (seq, body) VALUES (3, 'relaxed')`); err != nil {
		t.Fatal(err)
	}
	after := rt.Stats()
	if after.Commits-mid.Commits != 1 || after.SyncedCommits != mid.SyncedCommits {
		t.Fatalf("relaxed Exec: %d commits, %d synced; want 1 and 0", after.Commits-mid.Commits, after.SyncedCommits-mid.SyncedCommits)
	}

	if _, err := s.Exec(ctx, nil, `INSERT INTO log (seq, body) VALUES (2, 'duplicate')`); err == nil {
		t.Fatal("Exec of a duplicate key succeeded")
	}
	if _, err := add(ctx, s, 5); err != nil {
		t.Fatalf("a call after a failed Exec: %v", err)
	}
	bodies := logBodies(t, s)
	if want := []string{"first", "strict", "relaxed"}; !slices.Equal(bodies, want) {
		t.Fatalf("log %q, want %q", bodies, want)
	}
}

// Execs that queue behind a running call share one batch with other calls
// (savepoints, one commit): a failing one is rolled back alone.
func TestExecInBatch(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, nil)
	s := stub(t, ns, "execbatch")
	if _, err := add(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	unblock := blockObject(t, s)
	before := rt.Stats().Commits
	seqs := []int{1, 2, 1, 3} // the second 1 fails
	errs := make([]error, len(seqs))
	var wg sync.WaitGroup
	for i, seq := range seqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Exec(ctx, nil, `INSERT INTO log (seq, body) VALUES (?, ?)`, seq, "b")
		}()
		checkFor(t, 5*time.Second, "exec queued", func() bool { return s.Queued() == i+1 })
	}
	unblock()
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 2) {
			t.Fatalf("exec %d: %v", i, err)
		}
	}
	if got := rt.Stats().Commits - before; got != 1 {
		t.Fatalf("%d commits for one batch, want 1", got)
	}
	if got := len(logBodies(t, s)); got != 3 {
		t.Fatalf("%d rows, want 3", got)
	}
}

func logBodies(t *testing.T, s *objects.Stub) []string {
	t.Helper()
	v, err := s.Call(context.Background(), func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		rows, err := tx.Query(ctx, `SELECT body FROM log ORDER BY seq`)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var b string
			if err := rows.Scan(&b); err != nil {
				return nil, err
			}
			out = append(out, b)
		}
		return out, rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := v.([]string)
	return out
}

// A write made through Query (UPDATE … RETURNING) is a write: in full
// durability its commit is synced before the result is released, as one
// through Exec is; a read through Query is not.
func TestQueryWritesAreSynced(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Durability = objects.DurabilityFull })
	s := stub(t, ns, "query-writes")
	if _, err := add(ctx, s, 1); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		query  string
		synced int64
	}{
		{`UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n`, 1},
		{`  with d AS (SELECT 1) update counter SET n = n + 1 WHERE id = 1 RETURNING n`, 1},
		{`SELECT n FROM counter WHERE id = 1`, 0},
		{"\n\tSELECT\n\t\tn FROM counter WHERE id = 1", 0},
		{`WITH RECURSIVE c(x) AS (SELECT 1) SELECT n FROM counter, c WHERE id = 1`, 0},
		{`WITH c(updated_at) AS (SELECT 1) SELECT n FROM counter, c WHERE id = updated_at`, 0},
	} {
		before := rt.Stats()
		_, err := objects.Do(ctx, s, func(ctx context.Context, c2 *counter, tx *objects.Tx) (int64, error) {
			var n int64
			err := tx.QueryRow(ctx, c.query).Scan(&n)
			return n, err
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := rt.Stats().SyncedCommits - before.SyncedCommits; got != c.synced {
			t.Errorf("%s: %d synced commits, want %d", c.query, got, c.synced)
		}
	}
}

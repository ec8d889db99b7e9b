package objects_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"sessiond/objects"
)

// A call with CallOptions.Durability normal commits with synchronous=NORMAL
// in a full runtime, alone or with others like it, and the connection is
// back to FULL for the next call.
func TestRelaxedCallsCommitApart(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Durability = objects.DurabilityFull })
	s := stub(t, ns, "relaxed")
	if _, err := add(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	syncMode := func(tx *objects.Tx) (n int) {
		if err := tx.QueryRow(ctx, `PRAGMA synchronous`).Scan(&n); err != nil {
			t.Error(err)
		}
		return n
	}
	unblock := blockObject(t, s)
	before := rt.Stats().Commits
	relaxed := &objects.CallOptions{Durability: objects.DurabilityNormal}
	var modes [4]int
	var wg sync.WaitGroup
	for i, opts := range []*objects.CallOptions{relaxed, relaxed, nil, relaxed} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.CallWith(ctx, opts, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
				modes[i] = syncMode(tx)
				_, err := tx.Exec(ctx, `INSERT INTO log (body) VALUES ('x')`)
				return nil, err
			})
			if err != nil {
				t.Error(err)
			}
		}()
		checkFor(t, 5*time.Second, "call queued", func() bool { return s.Queued() == i+1 })
	}
	unblock()
	wg.Wait()
	// NORMAL is 1, FULL is 2.
	if modes != [4]int{1, 1, 2, 1} {
		t.Fatalf("synchronous seen by the calls: %v, want [1 1 2 1]", modes)
	}
	if got := rt.Stats().Commits - before; got != 3 {
		t.Fatalf("%d commits, want 3 (relaxed pair, strict, relaxed)", got)
	}
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		if m := syncMode(tx); m != 2 {
			t.Errorf("after relaxed batches synchronous is %d, want 2 (FULL)", m)
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
}

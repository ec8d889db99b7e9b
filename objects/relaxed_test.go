package objects_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"sessiond/objects"
)

// A call with CallOptions.Durability normal commits without the WAL sync of
// a full runtime, alone or with others like it, and the next call is synced
// again.
func TestRelaxedCallsCommitApart(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Durability = objects.DurabilityFull })
	s := stub(t, ns, "relaxed")
	if _, err := add(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	unblock := blockObject(t, s)
	before := rt.Stats()
	relaxed := &objects.CallOptions{Durability: objects.DurabilityNormal}
	var wg sync.WaitGroup
	for i, opts := range []*objects.CallOptions{relaxed, relaxed, nil, relaxed} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.CallWith(ctx, opts, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
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
	after := rt.Stats()
	if got := after.Commits - before.Commits; got != 3 {
		t.Fatalf("%d commits, want 3 (relaxed pair, strict, relaxed)", got)
	}
	if got := after.SyncedCommits - before.SyncedCommits; got != 1 {
		t.Fatalf("%d commits synced, want 1 (the strict one)", got)
	}
	if _, err := add(ctx, s, 1); err != nil {
		t.Fatal(err)
	}
	if got := rt.Stats().SyncedCommits - after.SyncedCommits; got != 1 {
		t.Fatalf("a strict call after relaxed batches: %d commits synced, want 1", got)
	}
}

// A call that only reads commits without waiting for the disk, even in full
// durability; one that writes is synced.
func TestReadOnlyCallsAreNotSynced(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Durability = objects.DurabilityFull })
	s := stub(t, ns, "reader")
	if _, err := add(ctx, s, 1); err != nil {
		t.Fatal(err)
	}
	before := rt.Stats()
	for range 5 {
		if _, err := get(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	mid := rt.Stats()
	if mid.Syncs != before.Syncs || mid.SyncedCommits != before.SyncedCommits {
		t.Fatalf("5 read-only calls made %d syncs", mid.Syncs-before.Syncs)
	}
	if _, err := add(ctx, s, 1); err != nil {
		t.Fatal(err)
	}
	if got := rt.Stats().SyncedCommits - mid.SyncedCommits; got != 1 {
		t.Fatalf("a writing call: %d commits synced, want 1", got)
	}
}

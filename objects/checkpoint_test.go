package objects_test

import (
	"context"
	"strings"
	"testing"

	"sessiond/objects"
)

// walFrames runs a checkpoint on the object's database and returns how
// many frames its WAL held (those written since it last started over).
func walFrames(t *testing.T, s *objects.Stub) int {
	t.Helper()
	var busy, log, done int
	if _, err := s.Call(context.Background(), func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		return nil, tx.QueryRow(ctx, `PRAGMA main.wal_checkpoint(PASSIVE)`).Scan(&busy, &log, &done)
	}); err != nil {
		t.Fatal(err)
	}
	return log
}

// SQLite's automatic checkpoint is off for object databases; the runtime
// checkpoints between batches instead. Without that, the WAL of an open
// object would grow without end: after a 6 MiB commit, or 1,500 small
// ones, the WAL must have started over.
func TestRuntimeCheckpointsTheWAL(t *testing.T) {
	ctx := context.Background()
	_, ns := newOpenRuntime(t, nil)
	s := stub(t, ns, "ckpt")
	var auto int
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		return nil, tx.QueryRow(ctx, `PRAGMA wal_autocheckpoint`).Scan(&auto)
	}); err != nil {
		t.Fatal(err)
	}
	if auto != 0 {
		t.Fatalf("wal_autocheckpoint %d, want 0 (the runtime checkpoints)", auto)
	}

	if _, err := s.Exec(ctx, nil, `INSERT INTO log (body) VALUES (?)`, strings.Repeat("x", 6<<20)); err != nil {
		t.Fatal(err)
	}
	// The checkpoint comes after the big call's answer; this call waits
	// for it and starts the WAL over.
	if _, err := add(ctx, s, 1); err != nil {
		t.Fatal(err)
	}
	if n := walFrames(t, s); n >= 1000 {
		t.Fatalf("after a 6 MiB commit and one more: %d frames in the WAL, want it started over", n)
	}

	for i := range 1500 {
		if _, err := s.Exec(ctx, nil, `INSERT INTO log (body) VALUES (?)`, "small"); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
	}
	if n := walFrames(t, s); n >= 1500 {
		t.Fatalf("after 1,500 small commits: %d frames in the WAL, want it started over (at 500 to 1,499 frames)", n)
	}
}

// A class may size its databases' page cache and WAL: the cache is
// SQLite's cache_size on every open, and the runtime checkpoints at the
// class's threshold, not the default one.
func TestClassCacheAndCheckpointFrames(t *testing.T) {
	ctx := context.Background()
	rt := objects.NewRuntime(t.TempDir())
	rt.Durability = objects.DurabilityNormal
	def, err := rt.Register("default", counterClass)
	if err != nil {
		t.Fatal(err)
	}
	big := counterClass
	big.CacheKiB, big.CheckpointFrames = 4096, 40000
	bigNS, err := rt.Register("big", big)
	if err != nil {
		t.Fatal(err)
	}
	small := counterClass
	small.CheckpointFrames = 20
	smallNS, err := rt.Register("small", small)
	if err != nil {
		t.Fatal(err)
	}
	neg := counterClass
	neg.CacheKiB = -1
	if _, err := rt.Register("negative", neg); err == nil {
		t.Fatal("Register accepted a negative CacheKiB")
	}
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })

	cache := func(s *objects.Stub) (n int) {
		t.Helper()
		if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			return nil, tx.QueryRow(ctx, `PRAGMA main.cache_size`).Scan(&n)
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got, want := cache(stub(t, def, "a")), -objects.DefaultCacheKiB; got != want {
		t.Fatalf("default class: cache_size %d, want %d", got, want)
	}
	if got, want := cache(stub(t, bigNS, "a")), -4096; got != want {
		t.Fatalf("class with CacheKiB 4096: cache_size %d, want %d", got, want)
	}

	// 1,500 small commits: the default (500 to 1,499 frames) and a
	// threshold of 10 to 29 frames have checkpointed, one of 20,000 to
	// 59,999 frames has not.
	fill := func(s *objects.Stub) {
		t.Helper()
		for i := range 1500 {
			if _, err := s.Exec(ctx, nil, `INSERT INTO log (body) VALUES (?)`, "small"); err != nil {
				t.Fatalf("insert %d: %v", i, err)
			}
		}
	}
	for _, c := range []struct {
		ns       *objects.Namespace
		min, max int // frames the WAL may hold after the fill
	}{
		{def, 0, 1499},
		{smallNS, 0, 29},
		{bigNS, 1500, 1 << 30},
	} {
		s := stub(t, c.ns, "fill")
		fill(s)
		if n := walFrames(t, s); n < c.min || n > c.max {
			t.Fatalf("namespace %s after 1,500 commits: %d frames in the WAL, want %d to %d", c.ns.Name(), n, c.min, c.max)
		}
	}
}

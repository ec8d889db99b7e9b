package objects_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
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
	neg := counterClass
	neg.CacheKiB = -1
	if _, err := objects.NewRuntime(t.TempDir()).Register("negative", neg); err == nil {
		t.Fatal("Register accepted a negative CacheKiB")
	}

	big := counterClass
	big.CacheKiB, big.CheckpointFrames = 4096, 40000
	small := counterClass
	small.CheckpointFrames = 20
	for _, c := range []struct {
		name  string
		class objects.Class
		cache int
		// The most frames the WAL held during 1,500 one-row commits (its
		// file never shrinks; a checkpoint lets the next commit start it
		// over): it reaches the first threshold drawn, and after that
		// never more than a threshold and a commit.
		minHigh, maxHigh int64
	}{
		{"default", counterClass, -objects.DefaultCacheKiB, 500, 1510},
		{"small", small, -objects.DefaultCacheKiB, 10, 40},
		{"big", big, -4096, 1500, 1 << 30},
	} {
		dir := t.TempDir()
		rt := objects.NewRuntime(dir)
		rt.Durability = objects.DurabilityNormal
		rt.Spares = -1 // the object's is then the only object database
		ns, err := rt.Register("c", c.class)
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Open(ctx); err != nil {
			t.Fatal(err)
		}
		s := stub(t, ns, "fill")
		var cache int
		if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			return nil, tx.QueryRow(ctx, `PRAGMA main.cache_size`).Scan(&cache)
		}); err != nil {
			t.Fatal(err)
		}
		if cache != c.cache {
			t.Errorf("%s: cache_size %d, want %d", c.name, cache, c.cache)
		}
		for i := range 1500 {
			if _, err := s.Exec(ctx, nil, `INSERT INTO log (body) VALUES (?)`, "small"); err != nil {
				t.Fatalf("%s: insert %d: %v", c.name, i, err)
			}
		}
		high := walHighWater(t, dir)
		if err := rt.Close(); err != nil {
			t.Fatal(err)
		}
		if high < c.minHigh || high > c.maxHigh {
			t.Errorf("%s: the WAL held up to %d frames, want %d to %d", c.name, high, c.minHigh, c.maxHigh)
		}
	}
}

// walHighWater returns the most frames the WAL of the one object database
// under dir has held: its file's size in frames of a 4 KiB page.
func walHighWater(t *testing.T, dir string) int64 {
	t.Helper()
	var wals []string
	err := filepath.WalkDir(filepath.Join(dir, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, "-wal") {
			wals = append(wals, p)
		}
		return err
	})
	if err != nil || len(wals) != 1 {
		t.Fatalf("object WAL files under %s: %v (%v), want one", dir, wals, err)
	}
	fi, err := os.Stat(wals[0])
	if err != nil {
		t.Fatal(err)
	}
	return (fi.Size() - 32) / (4096 + 24)
}

package objects_test

import (
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sessiond/objects"
)

func dbFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(dir, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".db") {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSparesReusedAcrossRestarts: the spare databases a runtime made are
// taken up by the next one instead of new ones piling up on disk.
func TestSparesReusedAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const spares = 3
	for round := range 3 {
		rt, _ := newRuntime(t, dir, func(rt *objects.Runtime) { rt.Spares = spares })
		if err := rt.Open(ctx); err != nil {
			t.Fatal(err)
		}
		checkFor(t, 10*time.Second, "spares ready", func() bool { return rt.Stats().OpenDatabases == spares })
		if got := rt.Stats().Creates; round > 0 && got != 0 {
			t.Fatalf("round %d created %d databases, want 0 (the last run's spares)", round, got)
		}
		if err := rt.Close(); err != nil {
			t.Fatal(err)
		}
		if got := dbFiles(t, dir); got != spares {
			t.Fatalf("round %d: %d database files on disk, want %d", round, got, spares)
		}
	}
}

// TestSparesRefillAfterCap: when the open-database cap stops the spare maker,
// it must start again once there is room. It used to wait for a spare to be
// taken, which cannot happen when there are none, so every later object was
// created on the request path until restart.
func TestSparesRefillAfterCap(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) {
		rt.MaxOpen = 2
		rt.Spares = 1
		rt.IdleTimeout = time.Hour
	})
	// hold creates an object and keeps it awake (it cannot be evicted).
	hold := func(name string) func() {
		release, err := objects.Do(ctx, stub(t, ns, name), func(ctx context.Context, c *counter, tx *objects.Tx) (func(), error) {
			return c.h.Hold(), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return release
	}
	checkFor(t, 10*time.Second, "spare ready", func() bool { return rt.Stats().OpenDatabases == 1 })
	releaseA := hold("a")
	checkFor(t, 10*time.Second, "spare made again", func() bool { return rt.Stats().OpenDatabases == 2 })
	releaseB := hold("b") // takes the spare; the cap leaves no room for another
	if got := rt.Stats(); got.Active != 2 || got.OpenDatabases != 2 {
		t.Fatalf("stats %+v, want 2 active objects and no spare", got)
	}
	releaseA()
	releaseB()
	for _, name := range []string{"a", "b"} {
		if err := stub(t, ns, name).Delete(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Room again: the next creation must get the maker going.
	if _, err := add(ctx, stub(t, ns, "after"), 1); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "a spare made after the cap", func() bool { return rt.Stats().OpenDatabases == 2 })
}

// TestSparesNoOrphansWhenClosedEarly closes runtimes while their spare
// makers are still at work. Every database file must stay known to the
// index, so that the next runtime uses it: after the rounds, one runtime
// that fills its spares leaves exactly Spares files on disk. A file made
// before the index heard of it used to stay behind for good.
func TestSparesNoOrphansWhenClosedEarly(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const spares = 3
	for range 20 {
		rt, _ := newRuntime(t, dir, func(rt *objects.Runtime) { rt.Spares = spares })
		if err := rt.Open(ctx); err != nil {
			t.Fatal(err)
		}
		if err := rt.Close(); err != nil {
			t.Fatal(err)
		}
	}
	rt, _ := newRuntime(t, dir, func(rt *objects.Runtime) { rt.Spares = spares })
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "spares ready", func() bool { return rt.Stats().OpenDatabases == spares })
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	if got := dbFiles(t, dir); got != spares {
		t.Fatalf("%d database files on disk, want %d: some are unknown to the index", got, spares)
	}
}

// TestSpareTakenAtCapEvictsNothing: a new object that takes a spare adds no
// open database, so at the cap it must not hibernate an idle object to make
// room (it used to).
func TestSpareTakenAtCapEvictsNothing(t *testing.T) {
	ctx := context.Background()
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) {
		rt.MaxOpen = 2
		rt.Spares = 1
		rt.IdleTimeout = time.Hour
	})
	checkFor(t, 10*time.Second, "spare ready", func() bool { return rt.Stats().OpenDatabases == 1 })
	if _, err := add(ctx, stub(t, ns, "a"), 1); err != nil { // takes the spare
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "spare made again", func() bool { return rt.Stats().OpenDatabases == 2 })
	before := rt.Stats()
	if _, err := add(ctx, stub(t, ns, "b"), 1); err != nil { // takes the new spare, at the cap
		t.Fatal(err)
	}
	if _, err := add(ctx, stub(t, ns, "a"), 1); err != nil {
		t.Fatal(err)
	}
	after := rt.Stats()
	if after.ObjectOpens != before.ObjectOpens || after.Active != 2 {
		t.Fatalf("a was hibernated to make room for b (wakes from disk %d → %d, active %d)",
			before.ObjectOpens, after.ObjectOpens, after.Active)
	}
}

package objects

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// recordSyncs makes syncDir record the folders it syncs (and still sync
// them) until the test ends; before, if set, runs first at each sync.
func recordSyncs(t *testing.T, before func(dir string)) (synced func() []string) {
	t.Helper()
	var mu sync.Mutex
	var dirs []string
	old := syncDir
	syncDir = func(dir string) error {
		if before != nil {
			before(dir)
		}
		mu.Lock()
		dirs = append(dirs, filepath.Clean(dir))
		mu.Unlock()
		return old(dir)
	}
	t.Cleanup(func() { syncDir = old })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(dirs)
	}
}

// openPlain opens a runtime on dir with one namespace "k" whose objects
// take the hashed path (no spares).
func openPlain(t *testing.T, dir string) (*Runtime, *Namespace) {
	t.Helper()
	rt := NewRuntime(dir)
	rt.Durability = DurabilityNormal
	rt.Spares = -1
	ns, err := rt.Register("k", Class{
		Migrations: []string{`CREATE TABLE v (x INTEGER)`},
		New:        func(ctx context.Context, h *Handle, tx *Tx) (any, error) { return struct{}{}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt, ns
}

func writeRow(t *testing.T, ns *Namespace, name string) {
	t.Helper()
	s, _ := ns.Get(name)
	if _, err := s.Call(context.Background(), func(ctx context.Context, obj any, tx *Tx) (any, error) {
		_, err := tx.Exec(ctx, `INSERT INTO v VALUES (1)`)
		return nil, err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestNewFoldersAreSyncedIntoTheirParents: every folder the runtime makes
// (the data folder, objects/, objects/xx, objects/xx/yy) is synced into its
// parent, and so is each new database file into its folder, so that a power
// loss cannot take a file's folder away from under the index that records
// it.
func TestNewFoldersAreSyncedIntoTheirParents(t *testing.T) {
	synced := recordSyncs(t, nil)
	base := t.TempDir()
	dir := filepath.Join(base, "data")
	_, ns := openPlain(t, dir)
	writeRow(t, ns, "a")
	rel := objectFile("k", "a")
	leaf := filepath.Join(dir, filepath.Dir(rel))
	got := synced()
	for _, want := range []string{
		base,                          // the data folder's entry
		dir,                           // index.db's, objects/'s
		filepath.Join(dir, "objects"), // objects/xx's
		filepath.Dir(leaf),            // objects/xx/yy's
		leaf,                          // the database file's
	} {
		if !slices.Contains(got, want) {
			t.Errorf("folder %s was not synced; synced: %v", want, got)
		}
	}
}

// TestDeleteSyncsFolderBeforeForgettingTrash: a deleted object's files are
// unlinked and their folder synced before the trash record that would
// remove them again at start-up is cleared; otherwise a power loss can
// bring the files back with nothing left to remove them.
func TestDeleteSyncsFolderBeforeForgettingTrash(t *testing.T) {
	dir := t.TempDir()
	rt, ns := openPlain(t, dir)
	writeRow(t, ns, "gone")
	rel := objectFile("k", "gone")
	leaf := filepath.Clean(filepath.Join(dir, filepath.Dir(rel)))
	var mu sync.Mutex
	syncedWithRecord := false
	recordSyncs(t, func(d string) {
		if filepath.Clean(d) != leaf {
			return
		}
		if rt.index.inTrash(context.Background(), rel) {
			mu.Lock()
			syncedWithRecord = true
			mu.Unlock()
		}
	})
	s, _ := ns.Get("gone")
	if err := s.Delete(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rt.index.inTrash(context.Background(), rel) {
		t.Fatal("trash record left after a successful delete")
	}
	mu.Lock()
	defer mu.Unlock()
	if !syncedWithRecord {
		t.Fatal("the object's folder was not synced while its trash record was still there")
	}
}

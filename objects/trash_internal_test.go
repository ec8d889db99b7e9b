package objects

import (
	"context"
	"testing"
)

// A deletion that could not remove its files leaves the path in the trash
// until start-up. An object created again under the same name meanwhile must
// not take that path, or start-up would delete the new object's files.
func TestRecreateAfterFailedRemovalAvoidsTrashedPath(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func() (*Runtime, *Namespace) {
		// New objects take the hashed path.
		return openTable(t, dir, func(rt *Runtime) { rt.Spares = -1 }, nil)
	}
	write := func(ns *Namespace) {
		s, _ := ns.Get("same")
		if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) {
			_, err := tx.Exec(ctx, `INSERT INTO v VALUES (1)`)
			return nil, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	rt, ns := open()
	write(ns)
	hashed := objectFile("k", "same")
	// The deletion whose file removal failed: its path stays in the trash.
	s, _ := ns.Get("same")
	if err := s.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.index.exec(ctx, `INSERT INTO trash (path) VALUES (?)`, hashed); err != nil {
		t.Fatal(err)
	}
	write(ns)
	oi, err := ns.Info(ctx, "same")
	if err != nil {
		t.Fatal(err)
	}
	if oi.Path == hashed {
		t.Fatalf("the new object took the trashed path %s", hashed)
	}
	rt.Close()
	rt, ns = open() // start-up empties the trash
	defer rt.Close()
	var n int
	s, _ = ns.Get("same")
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *Tx) (any, error) {
		return nil, tx.QueryRow(ctx, `SELECT count(*) FROM v`).Scan(&n)
	}); err != nil || n != 1 {
		t.Fatalf("after restart the new object has %d rows (err %v), want 1", n, err)
	}
}

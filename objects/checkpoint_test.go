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

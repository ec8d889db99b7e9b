package objects_test

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"sessiond/objects"
)

// TestStuckTrashDoesNotStopOpen: a deleted object's path that cannot be
// removed (here a folder in its place) is logged, keeps its trash record
// for the next start, and does not keep the runtime from opening.
func TestStuckTrashDoesNotStopOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rt, _ := newRuntime(t, dir, nil)
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	rt.Close()
	stuck := filepath.Join("objects", "zz", "zz", "stuck.db")
	if err := os.MkdirAll(filepath.Join(dir, stuck, "in-the-way"), 0o700); err != nil {
		t.Fatal(err)
	}
	execIndex(t, dir, `INSERT INTO trash (path) VALUES (?)`, stuck)

	var logs syncBuffer
	rt, ns := newRuntime(t, dir, func(rt *objects.Runtime) { rt.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	if err := rt.Open(ctx); err != nil {
		t.Fatalf("Open with a trash path that cannot be removed: %v", err)
	}
	if _, err := add(ctx, stub(t, ns, "works"), 1); err != nil {
		t.Fatal(err)
	}
	rt.Close()
	if !strings.Contains(logs.String(), stuck) {
		t.Fatalf("the stuck path is not in the log:\n%s", logs.String())
	}
	if n := countIndex(t, dir, `SELECT count(*) FROM trash WHERE path = ?`, stuck); n != 1 {
		t.Fatalf("trash records for the stuck path: %d, want it kept for the next start", n)
	}

	// Once it can go, the next start removes it and forgets it.
	if err := os.RemoveAll(filepath.Join(dir, stuck)); err != nil {
		t.Fatal(err)
	}
	rt, _ = newRuntime(t, dir, nil)
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	rt.Close()
	if n := countIndex(t, dir, `SELECT count(*) FROM trash WHERE path = ?`, stuck); n != 0 {
		t.Fatalf("trash records for the removed path: %d, want 0", n)
	}
}

// execIndex runs a statement on dir's index.db, with no runtime open.
func execIndex(t *testing.T, dir, q string, args ...any) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "index.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatal(err)
	}
}

// countIndex runs a count query on dir's index.db, with no runtime open.
func countIndex(t *testing.T, dir, q string, args ...any) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "index.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// syncBuffer is a bytes.Buffer safe for the runtime's goroutines to log to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

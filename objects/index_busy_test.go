package objects_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"sessiond/objects"
)

// lockIndex takes the write lock of dir's index.db from a connection of its
// own, as an outside sqlite3 holding BEGIN IMMEDIATE would, until release
// is called.
func lockIndex(t *testing.T, dir string) (release func()) {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "index.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		conn.Close()
		db.Close()
		t.Fatal(err)
	}
	return func() {
		conn.ExecContext(ctx, "ROLLBACK")
		conn.Close()
		db.Close()
	}
}

// TestIndexWaitsForOutsideLock: an outside connection (sqlite3 on
// index.db, a backup script) holding the node index's write lock for a
// moment delays a call that writes the index; the call does not fail.
func TestIndexWaitsForOutsideLock(t *testing.T) {
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Spares = -1 })
	s := stub(t, ns, "created-while-locked") // its creation writes the index
	release := lockIndex(t, rt.Dir)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(200 * time.Millisecond) // holds the lock a moment, as a reader would
		release()
	}()
	_, err := add(context.Background(), s, 1)
	wg.Wait()
	if err != nil {
		t.Fatalf("call while an outside connection held the index: %v", err)
	}
}

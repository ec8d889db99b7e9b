package objects

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A node index made before objects had alarm_set_for gains the column, and
// its rows keep working.
func TestIndexUpgradeAddsAlarmSetFor(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	old, err := openDB(ctx, filepath.Join(dir, "index.db"), dbOptions{synchronous: "NORMAL", cacheKiB: 64})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec(`CREATE TABLE objects (namespace TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL,
		created_at INTEGER NOT NULL, last_active INTEGER NOT NULL, size INTEGER NOT NULL DEFAULT 0, alarm_at INTEGER,
		alarm_retry INTEGER NOT NULL DEFAULT 0, calls INTEGER NOT NULL DEFAULT 0, rows_read INTEGER NOT NULL DEFAULT 0,
		rows_written INTEGER NOT NULL DEFAULT 0, active_ns INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (namespace, name)) WITHOUT ROWID;
		INSERT INTO objects (namespace, name, path, created_at, last_active, alarm_at, alarm_retry) VALUES ('ns', 'a', 'p', 1, 1, 5000, 2)`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	x, err := openIndex(ctx, dir, DurabilityNormal)
	if err != nil {
		t.Fatal(err)
	}
	defer x.close()
	due, err := x.alarmsBefore(ctx, timeMillis(6000), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 1 || due[0].retry != 2 || !due[0].setFor.Equal(timeMillis(5000)) {
		t.Fatalf("due after upgrade: %+v", due)
	}
}

func timeMillis(ms int64) time.Time { return time.UnixMilli(ms) }

// Close folds index.db's WAL into the file and removes it even when its
// context interrupted an index statement just before, as Close's own
// cancel does to the alarm loop's: the driver then drops the connection
// with SQLite's interrupt still pending, which makes that close skip its
// checkpoint and leave index.db-wal behind (sessiond logged "stopped" with
// the folder not yet folded).
func TestCloseFoldsIndexWALAfterInterruptedStatement(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rt := NewRuntime(dir)
	rt.Durability = DurabilityNormal
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	wal := filepath.Join(dir, "index.db-wal")
	if _, err := os.Stat(wal); err != nil {
		t.Fatalf("no WAL after open: %v", err)
	}
	// A statement that runs until interrupted, cancelled while it runs.
	// Should the cancel land before it started, SQLite would stop it
	// without a pending interrupt: try again.
	for try := 0; rt.index.db.Stats().OpenConnections > 0; try++ {
		if try == 10 {
			t.Fatal("the index's connection was never dropped by an interrupt")
		}
		cctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			var n int64
			errc <- rt.index.db.QueryRowContext(cctx, `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c`).Scan(&n)
		}()
		for rt.index.db.Stats().InUse == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond) // not waiting for state: letting it step
		cancel()
		if err := <-errc; err == nil {
			t.Fatal("an endless statement ended without error")
		}
	}
	if _, err := os.Stat(wal); err != nil {
		t.Fatalf("the dropped connection folded the WAL: nothing left to test (%v)", err)
	}
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{wal, filepath.Join(dir, "index.db-shm")} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Close (err %v), want it folded and removed", filepath.Base(f), err)
		}
	}
}

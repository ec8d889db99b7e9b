package objects

import (
	"context"
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

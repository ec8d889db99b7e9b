package objects

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"sessiond/objects/internal/walvfs"
)

// Durability selects how far a commit is flushed before it is acknowledged.
type Durability int

const (
	// DurabilityNormal is SQLite's synchronous=NORMAL in WAL mode: a commit
	// survives a crash of the process (SIGKILL) but may be lost on power loss.
	DurabilityNormal Durability = 1
	// DurabilityFull: every commit is on the disk before it is acknowledged
	// and survives power loss. The object's WAL is flushed after COMMIT
	// (instanceDB.syncWAL); one flush serves every call of a batch, and
	// objects waiting at once share one (syncer).
	DurabilityFull Durability = 2
)

// String returns "normal" or "full".
func (d Durability) String() string {
	switch d {
	case DurabilityNormal:
		return "normal"
	case DurabilityFull:
		return "full"
	}
	return fmt.Sprintf("Durability(%d)", int(d))
}

// ParseDurability parses "normal" or "full" (any case).
func ParseDurability(s string) (Durability, error) {
	switch strings.ToLower(s) {
	case "normal":
		return DurabilityNormal, nil
	case "full":
		return DurabilityFull, nil
	}
	return 0, fmt.Errorf("objects: durability %q: want normal or full", s)
}

func (d Durability) pragma() string {
	if d == DurabilityFull {
		return "FULL"
	}
	return "NORMAL"
}

var walVFSWarning sync.Once

// Modes of what the runtime creates: its databases hold every object's
// data, so only the runtime's own user may read them.
const (
	dirMode  os.FileMode = 0o700
	fileMode os.FileMode = 0o600
)

// dbOptions are how openDB opens a database.
type dbOptions struct {
	// synchronous is SQLite's setting for it.
	synchronous string
	// exclusive takes SQLite's exclusive locking mode: the connection keeps
	// its locks and the WAL index lives in its heap (no -shm file, no lock
	// system calls per transaction), which is right for an object database
	// (one connection, in this process) and wrong for anything another
	// process or connection must read while it is open.
	exclusive bool
	// manualCheckpoint: SQLite does not checkpoint the WAL by itself (it
	// would, inside whichever commit crosses 1,000 frames, on that caller's
	// time): the caller does (instanceDB.checkpointDue).
	manualCheckpoint bool
	cacheKiB         int
	// busyTimeout is how long a statement waits for a lock another
	// connection holds before it fails with SQLITE_BUSY; 0 fails at once.
	busyTimeout time.Duration
	// mustExist: the file is known to exist; SQLite must not create it
	// (mode=rw) if it is gone, and the open fails instead.
	mustExist bool
}

// openDB opens the SQLite database at path in WAL mode with one connection
// and an explicit page cache. The folder must exist, and so should the file
// (createDBFile), unless SQLite may create it with the process's umask.
func openDB(ctx context.Context, path string, o dbOptions) (*sql.DB, error) {
	// Order matters and the driver sorts _pragma values by their text, then
	// runs _journal_mode: locking_mode must come before anything that reads
	// the file (cache_size and synchronous read the schema, WAL mode the
	// header), or an existing database's WAL index goes to a -shm file.
	// Hence "main." on the two that read, which sorts them after it.
	q := url.Values{}
	if o.exclusive {
		q.Add("_pragma", "locking_mode(EXCLUSIVE)")
	}
	if o.busyTimeout > 0 {
		q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", o.busyTimeout.Milliseconds()))
	}
	q.Add("_pragma", "main.synchronous("+o.synchronous+")")
	q.Add("_pragma", fmt.Sprintf("main.cache_size(-%d)", o.cacheKiB))
	if o.manualCheckpoint {
		q.Add("_pragma", "main.wal_autocheckpoint(0)")
	}
	q.Add("_journal_mode", "WAL")
	if o.mustExist {
		q.Add("mode", "rw") // SQLite's own URI parameter: open, never create
	}
	if err := walvfs.Register(); err == nil {
		q.Add("vfs", walvfs.Name) // a transaction's WAL frames in one write
	} else {
		// Register fails the same way at every open (each wake): say it once.
		walVFSWarning.Do(func() {
			slog.Warn("objects: SQLite's default VFS, writing WAL frames one by one", "err", err)
		})
	}
	// Every pragma is a statement run at each wake, so only those that
	// matter: no busy_timeout on object databases (one connection, in this
	// process, and WAL readers never block it) and no foreign_keys (no
	// schema declares any). Dropping those two took a wake from 0.78 to
	// 0.53 ms (BenchmarkWake10k).
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

// createDBFile creates an empty database file at path, readable and
// writable by the runtime's user only (fileMode), and syncs its folder so
// that the new entry survives a power loss. SQLite gives the -wal and -shm
// files it makes beside a database the database file's mode, so they are
// private too. A file already there is left as it is.
func createDBFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, fileMode)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// removeDBFiles removes a database and its WAL and shared-memory files, and
// then syncs their folder: until that sync, a power loss can bring the
// files back, and a caller that forgets them (clears a trash record) must
// not do so before it.
func removeDBFiles(path string) error {
	var first error
	removed := false
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		err := os.Remove(p)
		switch {
		case err == nil:
			removed = true
		case !errors.Is(err, fs.ErrNotExist) && first == nil:
			first = err
		}
	}
	if first != nil {
		return first
	}
	if !removed {
		return nil
	}
	return syncDir(filepath.Dir(path))
}

// mkdirSynced creates folder dir with mode perm, and its missing parents
// with it, as os.MkdirAll does, and syncs the folder holding each folder it
// creates: a file's entry made durable in a folder whose own entry a power
// loss takes is lost with it.
func mkdirSynced(dir string, perm os.FileMode) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s: not a folder", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirSynced(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // made meanwhile, by another
		}
		return err
	}
	return syncDir(parent)
}

// ensureDir makes sure the folder rel (relative to Dir) exists and its
// entry, and those of the folders above it up to Dir, are on the disk
// (mkdirSynced). The folders it knows to be there are remembered, so each
// costs the file system once per runtime.
func (rt *Runtime) ensureDir(rel string) error {
	rt.dirsMu.Lock()
	defer rt.dirsMu.Unlock()
	if rt.dirs[rel] {
		return nil
	}
	if err := mkdirSynced(filepath.Join(rt.Dir, rel), dirMode); err != nil {
		return fmt.Errorf("create folder %s: %w", rel, err)
	}
	if rt.dirs == nil {
		rt.dirs = make(map[string]bool)
	}
	rt.dirs[rel] = true
	return nil
}

// dbSize is the bytes on disk of a database and its WAL.
func dbSize(path string) int64 {
	var n int64
	for _, p := range []string{path, path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

const metaSchema = `CREATE TABLE IF NOT EXISTS _object (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	namespace TEXT NOT NULL,
	name TEXT NOT NULL,
	created_at INTEGER NOT NULL
)`

// migrate brings db's schema to len(migrations) via PRAGMA user_version, each
// step in its own transaction, and creates the runtime's own _object table.
func migrate(ctx context.Context, db *sql.DB, migrations []string) error {
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("read user_version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this build knows (%d)", v, len(migrations))
	}
	if v == len(migrations) && v > 0 {
		return nil
	}
	if v == 0 {
		if _, err := db.ExecContext(ctx, metaSchema); err != nil {
			return fmt.Errorf("create _object: %w", err)
		}
	}
	for i := v; i < len(migrations); i++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", i+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	return nil
}

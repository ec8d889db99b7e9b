package objects

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"

	"modernc.org/sqlite"
)

// maxCachedStmts bounds the prepared statements kept per open database.
const maxCachedStmts = 64

// instanceDB is one open object database: a single held connection and its
// prepared statements. Transactions are plain BEGIN/COMMIT statements on the
// held connection, so cached statements stay valid across transactions.
// Used by one goroutine at a time (the object's worker).
//
// SQLite runs it with synchronous=NORMAL whatever the runtime's durability:
// consistent after a crash, and its commits cost no fsync inside SQLite.
// Full durability is syncWAL after COMMIT, before any result is released:
// the same fsync SQLite's FULL would do, done outside SQLite's locks (whose
// global page-cache mutex otherwise convoys commits of unrelated objects),
// with fdatasync rather than fsync, and skipped for relaxed batches without
// switching pragmas back and forth.
type instanceDB struct {
	rel    string // path relative to the runtime's Dir
	path   string // absolute path of the database file
	db     *sql.DB
	conn   *sql.Conn
	stmts  map[string]*sql.Stmt
	wal    *os.File // the -wal file, opened at the first syncWAL
	walDev uint64   // the filesystem it is on
	syncer *syncer
	// walFrames counts the pages written to the WAL since the last
	// checkpoint (SQLite's own checkpointing is off: see checkpointDue).
	walFrames int
	// checkpointAt is the walFrames that makes a checkpoint due, drawn
	// anew after each checkpoint (see checkpointThreshold); 0 = not drawn.
	checkpointAt int
	// checkpointMean is the mean of the draws: the class's
	// CheckpointFrames, or checkpointFrames.
	checkpointMean int
}

// dbFile says what openInstanceDB expects of the database file.
type dbFile int

const (
	// fileExisting: an object the index knows; its file must be there. A
	// missing one is an error, not an empty object made in its place.
	fileExisting dbFile = iota
	// fileSpare: a spare the index knows; made if missing (the index
	// hears of a spare before its file is made).
	fileSpare
	// fileNew: a path the index has just chosen for a new database.
	// Anything at it is a leftover no record points to (a deleted
	// object's files that a power loss brought back, a creation a crash
	// interrupted) and is removed first: a new object never adopts old
	// data.
	fileNew
)

// openInstanceDB opens or creates an object database, as want says, and
// migrates it to the namespace's schema. It counts the database as open.
func (rt *Runtime) openInstanceDB(ctx context.Context, ns *Namespace, rel string, want dbFile) (*instanceDB, error) {
	path := filepath.Join(rt.Dir, rel)
	cache, frames := rt.CacheKiB, checkpointFrames
	if ns.class.CacheKiB > 0 {
		cache = ns.class.CacheKiB
	}
	if ns.class.CheckpointFrames > 0 {
		frames = ns.class.CheckpointFrames
	}
	if err := rt.prepareDBFile(rel, want); err != nil {
		return nil, err
	}
	db, err := openDB(ctx, path, dbOptions{synchronous: "NORMAL", exclusive: true, manualCheckpoint: true,
		cacheKiB: cache, mustExist: want == fileExisting})
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, db, ns.class.Migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate %s: %w", rel, err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("connect %s: %w", rel, err)
	}
	rt.open.Add(1)
	return &instanceDB{rel: rel, path: path, db: db, conn: conn, stmts: make(map[string]*sql.Stmt), syncer: rt.syncer, checkpointMean: frames}, nil
}

// prepareDBFile readies the database file rel for openInstanceDB, as want
// says: it checks that an existing object's file is there, or makes a new
// one private (createDBFile) in a folder whose entry is on the disk.
func (rt *Runtime) prepareDBFile(rel string, want dbFile) error {
	path := filepath.Join(rt.Dir, rel)
	if want == fileExisting {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s: %w", ErrMissingFile, rel, err)
		} else if err != nil {
			return fmt.Errorf("database file %s of an existing object: %w", rel, err)
		}
		return nil
	}
	if err := rt.ensureDir(filepath.Dir(rel)); err != nil {
		return err
	}
	if want == fileNew {
		if err := removeDBFiles(path); err != nil {
			return fmt.Errorf("remove leftover files at %s: %w", rel, err)
		}
	}
	return createDBFile(path)
}

func (d *instanceDB) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if s, ok := d.stmts[q]; ok {
		return s, nil
	}
	if len(d.stmts) >= maxCachedStmts {
		for k, s := range d.stmts {
			s.Close()
			delete(d.stmts, k)
		}
	}
	s, err := d.conn.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	d.stmts[q] = s
	return s, nil
}

func (d *instanceDB) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	s, err := d.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return s.ExecContext(ctx, args...)
}

// execAll runs the statements in order with the same arguments, stopping
// at the first error.
func (d *instanceDB) execAll(ctx context.Context, qs []string, args ...any) error {
	for _, q := range qs {
		if _, err := d.exec(ctx, q, args...); err != nil {
			return err
		}
	}
	return nil
}

func (d *instanceDB) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	s, err := d.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return s.QueryContext(ctx, args...)
}

// checkpointFrames is how many WAL frames an object database collects, on
// average, before the runtime checkpoints it, unless its class says
// otherwise (Class.CheckpointFrames): SQLite's own default threshold.
const checkpointFrames = 1000

// checkpointThreshold draws an object database's next checkpoint
// threshold, from half to one and a half mean (checkpointFrames unless
// the class sets its own). A fixed
// threshold lines the checkpoints of objects that are loaded alike up: a
// thousand sessions posted to at the same rate all reached 1,000 frames
// within seconds, and their checkpoints (each syncing its database) stalled
// calls for up to 1.1–2.0 s; drawn, the slowest call of the same 90 s load
// took 243–285 ms, at the same calls per second.
func checkpointThreshold(mean int) int {
	return mean/2 + rand.IntN(mean)
}

// checkpointDue counts the pages the commits since its last call wrote to
// the WAL and reports whether a checkpoint is due.
//
// SQLite's automatic checkpoint is off for object databases because it
// runs inside the commit that crosses the threshold: the callers of that
// batch waited for it (a 32 MiB turn waited 60 ms for its checkpoint and
// fsync). The runtime checkpoints after the batch's callers have their answers
// (entry.runBatch), between two batches, and at close (SQLite's).
func (d *instanceDB) checkpointDue() bool {
	err := d.conn.Raw(func(dc any) error {
		st, ok := dc.(sqlite.DBStatus)
		if !ok {
			return fmt.Errorf("driver connection %T has no DBStatus", dc)
		}
		n, _, err := st.Status(sqlite.DBStatusCacheWrite, true)
		d.walFrames += n
		return err
	})
	if err != nil {
		return true // cannot count: checkpoint rather than let the WAL grow
	}
	if d.checkpointAt == 0 {
		d.checkpointAt = checkpointThreshold(d.checkpointMean)
	}
	return d.walFrames >= d.checkpointAt
}

// checkpoint copies the WAL into the database file; SQLite starts the WAL
// over at the next write. No reader can hold it back: the connection is
// the database's only one.
func (d *instanceDB) checkpoint(ctx context.Context) error {
	if _, err := d.conn.ExecContext(ctx, "PRAGMA main.wal_checkpoint(PASSIVE)"); err != nil {
		return fmt.Errorf("checkpoint %s: %w", d.rel, err)
	}
	d.walFrames = 0
	d.checkpointAt = 0
	return nil
}

// syncWAL makes every commit so far durable: it flushes the WAL file's data
// to the disk. The first time for this connection it also syncs the folder,
// since SQLite creates the WAL at the first write after an open (and removes
// it at close): a WAL whose directory entry is lost is lost whole. SQLite's
// own FULL mode does the same folder sync for a new WAL.
func (d *instanceDB) syncWAL() error {
	newWAL := d.wal == nil
	if newWAL {
		f, err := openToSync(d.path + "-wal")
		if errors.Is(err, fs.ErrNotExist) {
			return nil // nothing written yet
		}
		if err != nil {
			return &notFlushedError{fmt.Errorf("open WAL to sync: %w", err)}
		}
		d.wal, d.walDev = f, fileDev(f) // closed with the database
	}
	if err := d.syncer.sync(d.wal, d.walDev); err != nil {
		return fmt.Errorf("sync WAL: %w", err)
	}
	if newWAL {
		return syncDir(filepath.Dir(d.path))
	}
	return nil
}

// notFlushedError is a flush that could not begin: opening the file or
// folder to flush failed (out of file descriptors, say). No fsync failed,
// so the kernel still holds what was written, and a later flush of the
// file covers it: unlike a failed fsync, it is no reason to fence.
type notFlushedError struct{ err error }

func (e *notFlushedError) Error() string { return e.err.Error() }
func (e *notFlushedError) Unwrap() error { return e.err }

// openToSync opens a file or folder to flush it.
func openToSync(name string) (*os.File, error) {
	syncOpener.Lock()
	open := syncOpener.open
	syncOpener.Unlock()
	if open != nil {
		return open(name)
	}
	return os.Open(name)
}

// syncOpener, when open is set (by tests), opens for openToSync: as a
// process out of file descriptors would, say. Guarded: the spare maker
// flushes folders while a test swaps it.
var syncOpener struct {
	sync.Mutex
	open func(string) (*os.File, error)
}

// syncDir fsyncs a folder, making the entries created or removed in it
// durable. A variable so that tests can see which folders are synced.
var syncDir = fsyncDir

func fsyncDir(dir string) error {
	f, err := openToSync(dir)
	if err != nil {
		return &notFlushedError{fmt.Errorf("open folder to sync: %w", err)}
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

func (d *instanceDB) close() error {
	if d.wal != nil {
		d.wal.Close()
		d.wal = nil
	}
	for _, s := range d.stmts {
		s.Close()
	}
	d.stmts = nil
	d.conn.Close()
	return d.db.Close()
}

// takeSpare returns a ready database for a new object, or nil.
func (ns *Namespace) takeSpare() *instanceDB {
	ns.spareMu.Lock()
	defer ns.spareMu.Unlock()
	// Wake the maker even when there is none to take: it may have stopped
	// at MaxOpen, and only a creation tells it to look again.
	select {
	case ns.refill <- struct{}{}:
	default:
	}
	n := len(ns.spares)
	if n == 0 {
		return nil
	}
	d := ns.spares[n-1]
	ns.spares = ns.spares[:n-1]
	return d
}

func (ns *Namespace) closeSpares() {
	ns.spareMu.Lock()
	defer ns.spareMu.Unlock()
	for _, d := range ns.spares {
		d.close()
		ns.rt.open.Add(-1)
	}
	ns.spares = nil
}

// makeSpares keeps Spares ready-made databases for the namespace, off the
// request path: creating a database and its schema costs a few
// milliseconds, claiming a spare costs an index insert.
func (ns *Namespace) makeSpares() {
	rt := ns.rt
	defer rt.wg.Done()
	ctx := rt.ctx
	version := len(ns.class.Migrations)
	known, err := rt.index.spares(ctx, ns.name, version)
	if err != nil && ctx.Err() == nil {
		rt.logger().Warn("objects: list spares", "namespace", ns.name, "err", err)
	}
	for {
		ns.spareMu.Lock()
		have := len(ns.spares)
		ns.spareMu.Unlock()
		if have >= rt.Spares || rt.open.Load() >= int64(rt.MaxOpen) {
			select {
			case <-ctx.Done():
				return
			case <-ns.refill:
				continue
			}
		}
		var rel string
		var err error
		want := fileSpare
		if len(known) > 0 {
			rel, known = known[0], known[1:]
		} else {
			want = fileNew
			// The index hears of a spare before its file exists: a file it
			// does not know of would never be used or removed (Close or a
			// crash between the two used to leave one behind for good).
			rel = spareFile(randomID())
			rt.creates.Add(1)
			err = rt.index.addSpare(ctx, rel, ns.name, version)
		}
		var d *instanceDB
		if err == nil {
			d, err = rt.openInstanceDB(ctx, ns, rel, want)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			rt.logger().Warn("objects: make spare database", "namespace", ns.name, "err", err)
			select { // back off; try again when asked or later
			case <-ctx.Done():
				return
			case <-ns.refill:
			}
			continue
		}
		ns.spareMu.Lock()
		if ctx.Err() != nil {
			ns.spareMu.Unlock()
			d.close()
			rt.open.Add(-1)
			return
		}
		ns.spares = append(ns.spares, d)
		ns.spareMu.Unlock()
	}
}

// dropStaleSpares removes spare files made for a schema version or a
// namespace this build no longer has.
func (rt *Runtime) dropStaleSpares() {
	defer rt.wg.Done()
	all, err := rt.index.allSpares(rt.ctx)
	if err != nil {
		return
	}
	for _, r := range all {
		ns, ok := rt.classes[r.namespace]
		if ok && len(ns.class.Migrations) == r.version && rt.Spares > 0 {
			continue
		}
		if err := removeDBFiles(filepath.Join(rt.Dir, r.path)); err == nil {
			rt.index.dropSpare(rt.ctx, r.path)
		}
	}
}

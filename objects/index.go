package objects

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"
)

const indexSchema = `
CREATE TABLE IF NOT EXISTS objects (
	namespace    TEXT NOT NULL,
	name         TEXT NOT NULL,
	path         TEXT NOT NULL,
	created_at   INTEGER NOT NULL,
	last_active  INTEGER NOT NULL,
	size         INTEGER NOT NULL DEFAULT 0,
	alarm_at     INTEGER, -- next try
	alarm_retry  INTEGER NOT NULL DEFAULT 0,
	alarm_set_for INTEGER, -- the time the object set (alarm_at moves on retries)
	calls        INTEGER NOT NULL DEFAULT 0,
	rows_read    INTEGER NOT NULL DEFAULT 0,
	rows_written INTEGER NOT NULL DEFAULT 0,
	active_ns    INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (namespace, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_alarm ON objects(alarm_at) WHERE alarm_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS spares (
	path      TEXT PRIMARY KEY,
	namespace TEXT NOT NULL,
	version   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trash (path TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox_pending (
	namespace TEXT NOT NULL,
	name      TEXT NOT NULL,
	PRIMARY KEY (namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions (
	namespace TEXT NOT NULL,
	name      TEXT NOT NULL,
	pattern   TEXT NOT NULL,
	PRIMARY KEY (namespace, name, pattern)
) WITHOUT ROWID;
`

// nodeIndex is the per-node SQLite index of every object: where its file is,
// when it was created and last active, its size, usage, and its next alarm.
// It lets start-up, alarms and listings work without opening any object
// database. Safe for concurrent use: one connection serialises access.
type nodeIndex struct {
	db *sql.DB

	mu    sync.Mutex // guards stmts
	stmts map[string]*sql.Stmt
}

// indexBusyTimeout is how long a statement on the node index waits for a
// lock held by another connection: an outside reader or writer (sqlite3 on
// index.db, a backup script), since objects.lock keeps other runtimes out.
// Without it such a connection makes index writes fail at once with
// SQLITE_BUSY, and with them calls (beforeCommit) or the alarm and
// subscription changes after a commit. Waiting, not exclusive locking as
// the object databases use: exclusive would lock every outside reader out
// of index.db for as long as the runtime runs, and the index is off the
// hot path but for the few writes around a commit that changes an alarm,
// an outbox mark or a subscription. A var for tests.
var indexBusyTimeout = 5 * time.Second

// openIndex opens the node index in folder dir, which must exist, creating
// it (private, createDBFile) if missing.
func openIndex(ctx context.Context, dir string, d Durability) (*nodeIndex, error) {
	path := filepath.Join(dir, "index.db")
	if err := createDBFile(path); err != nil {
		return nil, fmt.Errorf("open node index: %w", err)
	}
	db, err := openDB(ctx, path, dbOptions{synchronous: d.pragma(), cacheKiB: 2048, busyTimeout: indexBusyTimeout})
	if err != nil {
		return nil, fmt.Errorf("open node index: %w", err)
	}
	if _, err := db.ExecContext(ctx, indexSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("create node index schema: %w", err)
	}
	// An index made before alarm_set_for existed gains it (NULL: the retry
	// in progress, if any, reports its own time as before).
	var has int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('objects') WHERE name = 'alarm_set_for'`).Scan(&has); err != nil {
		db.Close()
		return nil, fmt.Errorf("read node index schema: %w", err)
	}
	if has == 0 {
		if _, err := db.ExecContext(ctx, `ALTER TABLE objects ADD COLUMN alarm_set_for INTEGER`); err != nil {
			db.Close()
			return nil, fmt.Errorf("upgrade node index schema: %w", err)
		}
	}
	return &nodeIndex{db: db, stmts: make(map[string]*sql.Stmt)}, nil
}

// close folds the WAL into index.db and closes it, leaving no -wal or -shm
// file behind unless an outside connection still reads it.
//
// The connection's close folds the WAL by itself, but SQLite skips that
// (and keeps the WAL) when an interrupt is pending on the connection: one
// that reached a statement as it ended stays pending until the next
// statement starts. Close cancels the runtime's context while the alarm
// loop or a drain may be in an index statement with it, so that happens.
// The checkpoint here is that next statement, on a context nobody cancels.
func (x *nodeIndex) close() error {
	_, cerr := x.db.ExecContext(context.Background(), `PRAGMA main.wal_checkpoint(PASSIVE)`)
	if err := x.db.Close(); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("checkpoint node index: %w", cerr)
	}
	return nil
}

func (x *nodeIndex) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if s, ok := x.stmts[q]; ok {
		return s, nil
	}
	s, err := x.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	x.stmts[q] = s
	return s, nil
}

func (x *nodeIndex) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	s, err := x.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return s.ExecContext(ctx, args...)
}

// lookup returns the relative path of an object's database.
func (x *nodeIndex) lookup(ctx context.Context, ns, name string) (path string, ok bool, err error) {
	s, err := x.stmt(ctx, `SELECT path FROM objects WHERE namespace = ? AND name = ?`)
	if err != nil {
		return "", false, err
	}
	err = s.QueryRowContext(ctx, ns, name).Scan(&path)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("look up %s/%q: %w", ns, name, err)
	}
	return path, true, nil
}

// create records a new object. When spare is true, path was a spare file and
// its spare record goes in the same transaction.
func (x *nodeIndex) create(ctx context.Context, ns, name, path string, spare bool, now time.Time) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("record %s/%q: %w", ns, name, err)
	}
	defer tx.Rollback()
	ms := now.UnixMilli()
	if _, err := tx.ExecContext(ctx, `INSERT INTO objects (namespace, name, path, created_at, last_active) VALUES (?, ?, ?, ?, ?)`,
		ns, name, path, ms, ms); err != nil {
		return fmt.Errorf("record %s/%q: %w", ns, name, err)
	}
	if spare {
		if _, err := tx.ExecContext(ctx, `DELETE FROM spares WHERE path = ?`, path); err != nil {
			return fmt.Errorf("claim spare %s: %w", path, err)
		}
	}
	return tx.Commit()
}

// remove deletes an object's record and its alarm, and records its path in
// the trash so that a crash before the files are gone is finished at start-up.
func (x *nodeIndex) remove(ctx context.Context, ns, name, path string) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("remove %s/%q: %w", ns, name, err)
	}
	defer tx.Rollback()
	for _, q := range []string{
		`DELETE FROM objects WHERE namespace = ? AND name = ?`,
		`DELETE FROM subscriptions WHERE namespace = ? AND name = ?`,
		`DELETE FROM outbox_pending WHERE namespace = ? AND name = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, ns, name); err != nil {
			return fmt.Errorf("remove %s/%q: %w", ns, name, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO trash (path) VALUES (?)`, path); err != nil {
		return fmt.Errorf("remove %s/%q: %w", ns, name, err)
	}
	return tx.Commit()
}

func (x *nodeIndex) trashDone(ctx context.Context, path string) error {
	_, err := x.exec(ctx, `DELETE FROM trash WHERE path = ?`, path)
	return err
}

func (x *nodeIndex) trash(ctx context.Context) ([]string, error) {
	return x.strings(ctx, `SELECT path FROM trash`)
}

func (x *nodeIndex) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := x.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func (x *nodeIndex) addSpare(ctx context.Context, path, ns string, version int) error {
	_, err := x.exec(ctx, `INSERT OR REPLACE INTO spares (path, namespace, version) VALUES (?, ?, ?)`, path, ns, version)
	return err
}

func (x *nodeIndex) dropSpare(ctx context.Context, path string) error {
	_, err := x.exec(ctx, `DELETE FROM spares WHERE path = ?`, path)
	return err
}

// spares lists the spare files of a namespace at a schema version.
func (x *nodeIndex) spares(ctx context.Context, ns string, version int) ([]string, error) {
	return x.strings(ctx, `SELECT path FROM spares WHERE namespace = ? AND version = ?`, ns, version)
}

// spareRecord is one spare file in the index.
type spareRecord struct {
	path, namespace string
	version         int
}

// allSpares lists every spare file, of any namespace and version.
func (x *nodeIndex) allSpares(ctx context.Context) ([]spareRecord, error) {
	rows, err := x.db.QueryContext(ctx, `SELECT path, namespace, version FROM spares`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []spareRecord
	for rows.Next() {
		var r spareRecord
		if err := rows.Scan(&r.path, &r.namespace, &r.version); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// usageDelta is what an instance adds to its object's counters.
type usageDelta struct {
	calls, rowsRead, rowsWritten int64
	active                       time.Duration
}

// touch records an instance going to sleep: last active, size and usage.
func (x *nodeIndex) touch(ctx context.Context, ns, name string, at time.Time, size int64, u usageDelta) error {
	_, err := x.exec(ctx, `UPDATE objects SET last_active = ?, size = ?, calls = calls + ?,
		rows_read = rows_read + ?, rows_written = rows_written + ?, active_ns = active_ns + ?
		WHERE namespace = ? AND name = ?`,
		at.UnixMilli(), size, u.calls, u.rowsRead, u.rowsWritten, int64(u.active), ns, name)
	if err != nil {
		return fmt.Errorf("touch %s/%q: %w", ns, name, err)
	}
	return nil
}

// ObjectInfo is what the node index knows of one object.
type ObjectInfo struct {
	Namespace, Name string
	Path            string // the database file, relative to Runtime.Dir
	CreatedAt       time.Time
	LastActive      time.Time
	SizeBytes       int64     // database and WAL, as of the last hibernation
	Alarm           time.Time // zero if none
	Usage           Usage
}

// Usage counts what an object consumed: the dimensions hosted durable
// objects bill on.
type Usage struct {
	Calls       int64         // calls run (including alarms and socket messages)
	RowsRead    int64         // rows returned by queries
	RowsWritten int64         // rows changed by statements
	Active      time.Duration // time spent awake (database open)
	SizeBytes   int64         // bytes on disk
}

func (x *nodeIndex) info(ctx context.Context, ns, name string) (ObjectInfo, error) {
	s, err := x.stmt(ctx, `SELECT path, created_at, last_active, size, alarm_at, calls, rows_read, rows_written, active_ns
		FROM objects WHERE namespace = ? AND name = ?`)
	if err != nil {
		return ObjectInfo{}, err
	}
	oi := ObjectInfo{Namespace: ns, Name: name}
	var created, last int64
	var alarm sql.NullInt64
	var active int64
	err = s.QueryRowContext(ctx, ns, name).Scan(&oi.Path, &created, &last, &oi.SizeBytes, &alarm,
		&oi.Usage.Calls, &oi.Usage.RowsRead, &oi.Usage.RowsWritten, &active)
	if errors.Is(err, sql.ErrNoRows) {
		return ObjectInfo{}, fmt.Errorf("%s/%q: %w", ns, name, ErrNotFound)
	}
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("read %s/%q: %w", ns, name, err)
	}
	oi.CreatedAt = time.UnixMilli(created).UTC()
	oi.LastActive = time.UnixMilli(last).UTC()
	if alarm.Valid {
		oi.Alarm = time.UnixMilli(alarm.Int64).UTC()
	}
	oi.Usage.Active = time.Duration(active)
	oi.Usage.SizeBytes = oi.SizeBytes
	return oi, nil
}

// list returns up to limit names of a namespace after the given one, in
// byte order.
func (x *nodeIndex) list(ctx context.Context, ns, after string, limit int) ([]string, error) {
	return x.strings(ctx, `SELECT name FROM objects WHERE namespace = ? AND name > ? ORDER BY name LIMIT ?`, ns, after, limit)
}

// setAlarm sets (at non-zero) or clears an object's alarm and its retry count.
func (x *nodeIndex) setAlarm(ctx context.Context, ns, name string, at time.Time, retry int) error {
	var v any
	if !at.IsZero() {
		v = at.UnixMilli()
	}
	_, err := x.exec(ctx, `UPDATE objects SET alarm_at = ?, alarm_set_for = ?, alarm_retry = ? WHERE namespace = ? AND name = ?`, v, v, retry, ns, name)
	if err != nil {
		return fmt.Errorf("set alarm %s/%q: %w", ns, name, err)
	}
	return nil
}

// alarmRow is an object's alarm as the index holds it, for restoreAlarm.
type alarmRow struct {
	at, setFor sql.NullInt64
	retry      int
}

// alarmRow reads an object's alarm columns.
func (x *nodeIndex) alarmRow(ctx context.Context, ns, name string) (alarmRow, error) {
	s, err := x.stmt(ctx, `SELECT alarm_at, alarm_set_for, alarm_retry FROM objects WHERE namespace = ? AND name = ?`)
	if err != nil {
		return alarmRow{}, err
	}
	var r alarmRow
	err = s.QueryRowContext(ctx, ns, name).Scan(&r.at, &r.setFor, &r.retry)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return alarmRow{}, fmt.Errorf("read alarm %s/%q: %w", ns, name, err)
	}
	return r, nil
}

// restoreAlarm puts back alarm columns read by alarmRow, unless the alarm
// changed since it was set to set (an alarm retry scheduled meanwhile).
func (x *nodeIndex) restoreAlarm(ctx context.Context, ns, name string, set time.Time, r alarmRow) error {
	_, err := x.exec(ctx, `UPDATE objects SET alarm_at = ?, alarm_set_for = ?, alarm_retry = ? WHERE namespace = ? AND name = ? AND alarm_at = ?`,
		r.at, r.setFor, r.retry, ns, name, set.UnixMilli())
	if err != nil {
		return fmt.Errorf("restore alarm %s/%q: %w", ns, name, err)
	}
	return nil
}

func (x *nodeIndex) alarm(ctx context.Context, ns, name string) (at time.Time, retry int, err error) {
	s, err := x.stmt(ctx, `SELECT alarm_at, alarm_retry FROM objects WHERE namespace = ? AND name = ?`)
	if err != nil {
		return time.Time{}, 0, err
	}
	var v sql.NullInt64
	err = s.QueryRowContext(ctx, ns, name).Scan(&v, &retry)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, 0, nil
	}
	if err != nil || !v.Valid {
		return time.Time{}, 0, err
	}
	return time.UnixMilli(v.Int64), retry, nil
}

type dueAlarm struct {
	ns, name string
	at       time.Time // this try's time
	setFor   time.Time // the time the object set
	retry    int
}

// alarmsBefore returns up to limit alarms due at or before t, earliest first.
func (x *nodeIndex) alarmsBefore(ctx context.Context, t time.Time, limit int) ([]dueAlarm, error) {
	rows, err := x.db.QueryContext(ctx, `SELECT namespace, name, alarm_at, coalesce(alarm_set_for, alarm_at), alarm_retry FROM objects
		WHERE alarm_at IS NOT NULL AND alarm_at <= ? ORDER BY alarm_at LIMIT ?`, t.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("read due alarms: %w", err)
	}
	defer rows.Close()
	var out []dueAlarm
	for rows.Next() {
		var a dueAlarm
		var ms, setFor int64
		if err := rows.Scan(&a.ns, &a.name, &ms, &setFor, &a.retry); err != nil {
			return nil, err
		}
		a.at, a.setFor = time.UnixMilli(ms), time.UnixMilli(setFor)
		out = append(out, a)
	}
	return out, rows.Err()
}

// nextAlarm returns the earliest alarm after t (exclusive), or zero.
func (x *nodeIndex) nextAlarmAfter(ctx context.Context, t time.Time) (time.Time, error) {
	var v sql.NullInt64
	err := x.db.QueryRowContext(ctx, `SELECT MIN(alarm_at) FROM objects WHERE alarm_at IS NOT NULL AND alarm_at > ?`, t.UnixMilli()).Scan(&v)
	if err != nil || !v.Valid {
		return time.Time{}, err
	}
	return time.UnixMilli(v.Int64), nil
}

// setAlarmIf changes an alarm only if it is still set to old, so that a retry
// never overwrites an alarm the object set meanwhile.
func (x *nodeIndex) setAlarmIf(ctx context.Context, ns, name string, old, at time.Time, retry int) error {
	var v any
	if !at.IsZero() {
		v = at.UnixMilli()
	}
	// A retry keeps the time the object set; clearing drops it.
	_, err := x.exec(ctx, `UPDATE objects SET alarm_at = ?, alarm_retry = ?, alarm_set_for = CASE WHEN ? IS NULL THEN NULL ELSE alarm_set_for END
		WHERE namespace = ? AND name = ? AND alarm_at = ?`,
		v, retry, v, ns, name, old.UnixMilli())
	if err != nil {
		return fmt.Errorf("set alarm %s/%q: %w", ns, name, err)
	}
	return nil
}

// moveAlarmIf moves an alarm to at, a time the object set (retries start
// over), only if it is still set to old.
func (x *nodeIndex) moveAlarmIf(ctx context.Context, ns, name string, old, at time.Time) error {
	ms := at.UnixMilli()
	_, err := x.exec(ctx, `UPDATE objects SET alarm_at = ?, alarm_set_for = ?, alarm_retry = 0
		WHERE namespace = ? AND name = ? AND alarm_at = ?`, ms, ms, ns, name, old.UnixMilli())
	if err != nil {
		return fmt.Errorf("move alarm %s/%q: %w", ns, name, err)
	}
	return nil
}

// inTrash reports whether path waits in the trash for its files to go.
func (x *nodeIndex) inTrash(ctx context.Context, path string) bool {
	var n int
	err := x.db.QueryRowContext(ctx, `SELECT count(*) FROM trash WHERE path = ?`, path).Scan(&n)
	return err != nil || n > 0
}

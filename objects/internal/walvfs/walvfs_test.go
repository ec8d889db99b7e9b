package walvfs_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"sessiond/objects/internal/walvfs"
)

const childEnv = "WALVFS_CHILD" // a database path: run as the SIGKILL test's child

func TestMain(m *testing.M) {
	if err := walvfs.Register(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if path := os.Getenv(childEnv); path != "" {
		child(path) // never returns: the parent kills it
	}
	os.Exit(m.Run())
}

// openDB opens path as sessiond opens object databases: WAL, exclusive
// locking, synchronous NORMAL, one connection; through the VFS if ours.
func openDB(t testing.TB, path string, ours bool, cacheKiB int, autoCheckpoint bool) *sql.DB {
	q := url.Values{}
	q.Add("_pragma", "locking_mode(EXCLUSIVE)")
	q.Add("_pragma", "main.synchronous(NORMAL)")
	q.Add("_pragma", fmt.Sprintf("main.cache_size(-%d)", cacheKiB))
	if !autoCheckpoint {
		q.Add("_pragma", "main.wal_autocheckpoint(0)")
	}
	q.Add("_journal_mode", "WAL")
	if ours {
		q.Add("vfs", walvfs.Name)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
	return db
}

func mustExec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// digest is the table's content: ids and a hash of every value.
func digest(t testing.TB, db *sql.DB) string {
	t.Helper()
	rows, err := db.Query(`SELECT id, v FROM t ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	h := sha256.New()
	n := 0
	for rows.Next() {
		var id int64
		var v []byte
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%d:%d:", id, len(v))
		h.Write(v)
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d rows %x", n, h.Sum(nil))
}

func integrity(t testing.TB, db *sql.DB) {
	t.Helper()
	var res string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&res); err != nil || res != "ok" {
		t.Fatalf("integrity_check: %q, %v", res, err)
	}
}

// A commit of two pages (a row and its index entry) reaches the disk in
// one write instead of four; a 32 MiB row in a few hundred instead of
// sixteen thousand; and what was written reads back through SQLite's own
// VFS after a reopen (which recovers the WAL from the file).
func TestCommitFramesInOneWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	db := openDB(t, path, true, 2000, false)
	mustExec(t, db, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)`)
	mustExec(t, db, `CREATE INDEX t_v ON t (v)`)
	mustExec(t, db, `INSERT INTO t (v) VALUES ('first')`)
	for i := range 5 {
		before := walvfs.Writes()
		mustExec(t, db, `INSERT INTO t (v) VALUES (?)`, fmt.Sprint("row ", i))
		if n := walvfs.Writes() - before; n != 1 {
			t.Errorf("commit %d of a row and its index entry: %d writes, want 1", i, n)
		}
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB
	before := walvfs.Writes()
	mustExec(t, db, `INSERT INTO t (id, v) VALUES (1000, ?)`, big)
	// The row and its index entry: 16,400 frames of 4,120 bytes (32,800
	// writes one by one), written 1 MiB at a time as the page cache
	// spills, in writes of up to 128 KiB: ~580.
	if n := walvfs.Writes() - before; n > 700 {
		t.Errorf("commit of a 32 MiB row and its index entry: %d writes, want at most 700", n)
	}
	want := digest(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, path, false, 2000, false)
	defer db.Close()
	integrity(t, db)
	if got := digest(t, db); got != want {
		t.Fatalf("read back through the default VFS: %s, want %s", got, want)
	}
}

// The same random transactions (small and multi-MiB rows, updates,
// deletes, savepoints rolled back, whole transactions rolled back, a page
// cache small enough to spill frames before the commit, checkpoints of
// every kind restarting the WAL) leave the same content through this VFS
// as through SQLite's, read live and after reopening both with SQLite's.
func TestSameContentAsDefaultVFS(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			paths := []string{filepath.Join(dir, "ours.db"), filepath.Join(dir, "theirs.db")}
			auto := seed%2 == 0
			dbs := []*sql.DB{openDB(t, paths[0], true, 256, auto), openDB(t, paths[1], false, 256, auto)}
			each := func(q string, args ...any) {
				for _, db := range dbs {
					mustExec(t, db, q, args...)
				}
			}
			each(`CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)`)
			r := rand.New(rand.NewPCG(seed, 99))
			fill := rand.NewChaCha8([32]byte{byte(seed)})
			payload := func() []byte {
				n := 10 + r.IntN(400)
				switch r.IntN(25) {
				case 0:
					n = 1<<20 + r.IntN(2<<20) // spills the 256 KiB cache, crosses the 1 MiB hold
				case 1, 2:
					n = 5000 + r.IntN(60000) // overflow pages
				}
				b := make([]byte, n)
				fill.Read(b)
				return b
			}
			nextID := int64(1)
			for txn := range 80 {
				each(`BEGIN`)
				sp := r.IntN(4) == 0
				for op := range 1 + r.IntN(12) {
					if sp && op == 2 {
						each(`SAVEPOINT s`)
					}
					switch k := r.IntN(10); {
					case k < 6:
						each(`INSERT INTO t (id, v) VALUES (?, ?)`, nextID, payload())
						nextID++
					case k < 8:
						each(`UPDATE t SET v = ? WHERE id = ?`, payload(), 1+r.Int64N(nextID))
					case k == 8 && nextID > 8:
						// Rows deleted keep the table (and its bytes to hash) small.
						each(`DELETE FROM t WHERE id < ?`, r.Int64N(nextID))
					default:
						each(`DELETE FROM t WHERE id = ?`, 1+r.Int64N(nextID))
					}
				}
				if sp && r.IntN(2) == 0 {
					each(`SAVEPOINT s`) // harmless if one was opened above: the newer is rolled back
					each(`INSERT INTO t (id, v) VALUES (?, ?)`, nextID, payload())
					each(`ROLLBACK TO s`)
				}
				if r.IntN(5) == 0 {
					each(`ROLLBACK`)
				} else {
					each(`COMMIT`)
				}
				if txn%17 == 16 {
					mode := []string{"PASSIVE", "FULL", "RESTART", "TRUNCATE"}[r.IntN(4)]
					each(`PRAGMA wal_checkpoint(` + mode + `)`)
				}
				if txn%20 == 19 {
					if a, b := digest(t, dbs[0]), digest(t, dbs[1]); a != b {
						t.Fatalf("after transaction %d: this VFS has %s, SQLite's %s", txn, a, b)
					}
				}
			}
			want := digest(t, dbs[1])
			for i, db := range dbs {
				integrity(t, db)
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
				db = openDB(t, paths[i], false, 2000, false)
				integrity(t, db)
				if got := digest(t, db); got != want {
					t.Errorf("%s reopened: %s, want %s", filepath.Base(paths[i]), got, want)
				}
				db.Close()
			}
		})
	}
}

// child commits rows through the VFS until it is killed, printing "ack N"
// once the COMMIT of row N has returned.
func child(path string) {
	db := openDB(&fatalTB{}, path, true, 256, false)
	mustExec(&fatalTB{}, db, `CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)`)
	var id int64
	if err := db.QueryRow(`SELECT coalesce(max(id), 0) FROM t`).Scan(&id); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	r := rand.New(rand.NewPCG(uint64(os.Getpid()), 7))
	for {
		id++
		n := 100 + r.IntN(3000)
		if r.IntN(20) == 0 {
			n = 1<<20 + r.IntN(1<<20)
		}
		v := bytes.Repeat([]byte{byte(id)}, n)
		if _, err := db.Exec(`INSERT INTO t (id, v) VALUES (?, ?)`, id, v); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Fprintf(out, "ack %d %d\n", id, n)
		out.Flush()
		// Most kills land here, between two transactions: a commit still
		// held in memory would be lost.
		time.Sleep(time.Millisecond)
		if id%50 == 0 {
			db.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
		}
	}
}

// fatalTB lets the child use the helpers: any failure exits it.
type fatalTB struct{ testing.TB }

func (fatalTB) Helper() {}
func (fatalTB) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, args...)
	os.Exit(2)
}
func (fatalTB) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

// A process killed with SIGKILL at random moments loses no row whose
// COMMIT had returned, and leaves a database SQLite's own VFS opens whole.
func TestSIGKILLKeepsCommits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	acked := map[int64]int{}
	r := rand.New(rand.NewPCG(5, 5))
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+path)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// The kill comes at a random moment after the child's first
		// commit, not after its start: a child slow to start (a loaded
		// machine, a large WAL left by the last kill to recover) was
		// killed before it committed anything (2 of 60 runs under load).
		killAfter := time.Duration(r.IntN(350)) * time.Millisecond
		var deadline <-chan time.Time
		stuck := time.After(60 * time.Second)
		newAcks := 0
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				f := strings.Fields(l)
				id, _ := strconv.ParseInt(f[1], 10, 64)
				n, _ := strconv.Atoi(f[2])
				acked[id] = n
				if newAcks++; newAcks == 1 {
					deadline = time.After(killAfter)
				}
			case <-deadline:
				cmd.Process.Signal(syscall.SIGKILL)
				deadline = nil
			case <-stuck:
				cmd.Process.Signal(syscall.SIGKILL)
				t.Fatalf("round %d: the child committed nothing in 60 s", round)
			}
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, not by SIGKILL", round, err)
		}
		if newAcks == 0 {
			t.Fatalf("round %d: the child committed nothing before it was killed", round)
		}
		db := openDB(t, path, false, 2000, false)
		integrity(t, db)
		for id, n := range acked {
			var got int
			if err := db.QueryRow(`SELECT length(v) FROM t WHERE id = ? AND v = ?`, id, bytes.Repeat([]byte{byte(id)}, n)).Scan(&got); err != nil {
				t.Fatalf("round %d: committed row %d (%d bytes) is missing or wrong after SIGKILL: %v", round, id, n, err)
			}
		}
		db.Close()
		t.Logf("round %d: %d rows committed before the kill, all %d present", round, newAcks, len(acked))
	}
}

package objects_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sessiond/objects"
)

// Environment of the SIGKILL test's child process.
const (
	crashChildEnv      = "OBJECTS_CRASH_CHILD"      // data folder; set: run as the child
	crashDurabilityEnv = "OBJECTS_CRASH_DURABILITY" // normal or full
	crashRoundEnv      = "OBJECTS_CRASH_ROUND"      // makes ids and one object name unique per round
	crashIdleEnv       = "OBJECTS_CRASH_IDLE"       // Runtime.IdleTimeout
)

const crashWorkers = 6

func crashNames(round int) []string {
	return []string{"o0", "o1", "o2", "o3", fmt.Sprint("new", round)}
}

// crashChild opens a runtime on dir and makes calls from several goroutines
// until it is killed. Each call inserts one row with a unique id and bumps
// the counter in the same transaction; "ack <object> <id>" is printed only
// after the call returned nil.
func crashChild(dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	round, err := strconv.Atoi(os.Getenv(crashRoundEnv))
	if err != nil {
		fail(err)
	}
	d, err := objects.ParseDurability(os.Getenv(crashDurabilityEnv))
	if err != nil {
		fail(err)
	}
	idle, err := time.ParseDuration(os.Getenv(crashIdleEnv))
	if err != nil {
		fail(err)
	}
	rt := objects.NewRuntime(dir)
	rt.Durability = d
	rt.IdleTimeout = idle
	rt.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	ns, err := rt.Register("counter", counterClass)
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	if err := rt.Open(ctx); err != nil {
		fail(err)
	}
	names := crashNames(round)
	body := strings.Repeat("d", 200)
	var out sync.Mutex
	for g := range crashWorkers {
		go func() {
			for i := 0; ; i++ {
				name := names[(g+i)%len(names)]
				id := round*10_000_000 + g*1_000_000 + i
				s, _ := ns.Get(name)
				_, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
					if _, err := tx.Exec(ctx, `INSERT INTO log (seq, body) VALUES (?, ?)`, id, body); err != nil {
						return nil, err
					}
					_, err := tx.Exec(ctx, `UPDATE counter SET n = n + 1 WHERE id = 1`)
					return nil, err
				})
				if err != nil {
					fail(err)
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "ack %s %d\n", name, id) // one write(2): no torn line
				out.Unlock()
			}
		}()
	}
	select {}
}

// TestSIGKILLLosesNothingAcknowledged runs a child process that makes
// acknowledged writes, kills it with SIGKILL at a random moment, and checks
// in this process that every acknowledged row is there, every database
// passes PRAGMA integrity_check, and each object's counter equals its row
// count (its two writes were atomic). The same folder goes through every
// round, so recovery is also tested on top of earlier recoveries; some
// rounds hibernate objects constantly, some use DurabilityFull.
func TestSIGKILLLosesNothingAcknowledged(t *testing.T) {
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	dir := t.TempDir()
	acked := map[string]map[int]bool{}
	var total int
	for round := range rounds {
		durability, idle := "normal", "10s"
		switch {
		case round%5 == 4:
			durability = "full"
		case round%3 == 1:
			idle = "1ms" // hibernate and wake all the time
		}
		n := crashRound(t, dir, round, durability, idle, acked)
		total += n
		t.Logf("round %d (%s, idle %s): %d acknowledged calls", round, durability, idle, n)
		verifyCrashDir(t, dir, acked)
	}
	t.Logf("%d acknowledged calls over %d kills, all present", total, rounds)
}

// crashRound runs one child, kills it a random 5-150 ms after its first
// acknowledgement and records its acknowledgements in acked.
func crashRound(t *testing.T, dir string, round int, durability, idle string, acked map[string]map[int]bool) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		crashChildEnv+"="+dir,
		crashDurabilityEnv+"="+durability,
		crashRoundEnv+"="+strconv.Itoa(round),
		crashIdleEnv+"="+idle,
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	lines := make(chan []string, 1)
	go func() {
		var got []string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if len(got) == 0 {
				close(first)
			}
			got = append(got, sc.Text())
		}
		lines <- got
	}()
	select {
	case <-first:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("round %d: no acknowledgement from the child; stderr:\n%s", round, stderr.String())
	}
	// Not waiting for a state: the kill lands at a random point of the work.
	time.Sleep(time.Duration(5+rand.IntN(146)) * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	got := <-lines
	if stderr.Len() > 0 {
		t.Fatalf("round %d: child wrote to stderr:\n%s", round, stderr.String())
	}
	for _, l := range got {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "ack" {
			continue // not ours (the test framework's output)
		}
		id, err := strconv.Atoi(f[2])
		if err != nil {
			t.Fatalf("round %d: bad line %q", round, l)
		}
		if acked[f[1]] == nil {
			acked[f[1]] = map[int]bool{}
		}
		acked[f[1]][id] = true
	}
	return len(got)
}

// verifyCrashDir checks the folder a killed child left behind.
func verifyCrashDir(t *testing.T, dir string, acked map[string]map[int]bool) {
	t.Helper()
	ctx := context.Background()
	// Every database on disk (objects, spares, the index) is intact, as
	// SQLite finds it after a crash, before the runtime touches it.
	checked := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".db") {
			return err
		}
		integrityCheck(t, p)
		checked[p] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !checked[filepath.Join(dir, "index.db")] {
		t.Fatal("no index.db")
	}

	rt, ns := newRuntime(t, dir, nil)
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	for name, ids := range acked {
		oi, err := ns.Info(ctx, name)
		if err != nil {
			t.Fatalf("object %s with %d acknowledged calls: %v", name, len(ids), err)
		}
		if !checked[filepath.Join(rt.Dir, oi.Path)] {
			t.Fatalf("object %s: database %s was not among the files checked", name, oi.Path)
		}
		type state struct {
			n    int
			seqs map[int]bool
		}
		st, err := objects.Do(ctx, stub(t, ns, name), func(ctx context.Context, c *counter, tx *objects.Tx) (state, error) {
			st := state{n: int(c.n), seqs: map[int]bool{}}
			rows, err := tx.Query(ctx, `SELECT seq FROM log`)
			if err != nil {
				return st, err
			}
			defer rows.Close()
			for rows.Next() {
				var seq int
				if err := rows.Scan(&seq); err != nil {
					return st, err
				}
				st.seqs[seq] = true
			}
			return st, rows.Err()
		})
		if err != nil {
			t.Fatalf("object %s: %v", name, err)
		}
		for id := range ids {
			if !st.seqs[id] {
				t.Fatalf("object %s: acknowledged row %d lost", name, id)
			}
		}
		if st.n != len(st.seqs) {
			t.Fatalf("object %s: counter %d but %d rows: a call's two writes were split", name, st.n, len(st.seqs))
		}
	}
}

func integrityCheck(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&res); err != nil {
		t.Fatalf("%s: integrity_check: %v", path, err)
	}
	if res != "ok" {
		t.Fatalf("%s: integrity_check: %s", path, res)
	}
}

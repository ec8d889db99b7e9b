package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite"
)

// The raw post server is the floor that post-turns -raw measures sessiond
// against: the least a server built on the same parts can do for the same
// calls, in a process of its own (this binary, re-run with the hidden
// subcommand rawPostServerCommand). It speaks just enough of sessiond's API
// for post-turns: POST /v1/sessions creates a session; POST
// /v1/sessions/{id}/turns decodes the turns and answers 201 with their
// sequence numbers. With -store sqlite every session has its own SQLite
// database (the same driver, WAL in exclusive locking mode,
// synchronous=NORMAL, or FULL for -durability full) and a post is one
// transaction inserting one row per turn; with -store none nothing is kept
// (the floor of net/http and JSON alone). No authentication, idempotency, events, directory, viewers or
// per-session queue: everything sessiond adds is left out on purpose.
const rawPostServerCommand = "raw-post-server"

// rawPostStores are the -store values of the raw post server, in the order
// post-turns -raw runs them.
var rawPostStores = []string{"none", "sqlite"}

// rawSyncModes maps -durability to the floor's SQLite synchronous setting.
var rawSyncModes = map[string]string{"normal": "NORMAL", "full": "FULL"}

// rawTurn is a posted turn as the raw post server reads it.
type rawTurn struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type rawPostSession struct {
	db     *sql.DB   // nil with -store none
	insert *sql.Stmt // INSERT of one turn
	seq    atomic.Int64
}

// rawPostServer runs the raw post server until ctx ends. It prints its
// address on stdout.
func rawPostServer(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(rawPostServerCommand, flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	dir := fs.String("data", "", "folder of the session databases (-store sqlite)")
	store := fs.String("store", "sqlite", "none or sqlite")
	durability := fs.String("durability", "normal", "normal (synchronous=NORMAL) or full (synchronous=FULL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	syncMode := rawSyncModes[*durability]
	switch {
	case *store != "none" && *store != "sqlite":
		return fmt.Errorf("-store %q: want none or sqlite", *store)
	case syncMode == "":
		return fmt.Errorf("-durability %q: want normal or full", *durability)
	case *store == "sqlite" && *dir == "":
		return errors.New("-store sqlite needs -data")
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	var (
		mu       sync.RWMutex
		sessions = make(map[string]*rawPostSession)
		next     atomic.Int64
	)
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range sessions {
			if s.db != nil {
				s.db.Close()
			}
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("POST /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		id := fmt.Sprintf("raw%07d", next.Add(1))
		s := &rawPostSession{}
		if *store == "sqlite" {
			var err error
			if s.db, s.insert, err = openRawPostDB(r.Context(), filepath.Join(*dir, id+".db"), syncMode); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		mu.Lock()
		sessions[id] = s
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]string{"id": id})
	})
	mux.HandleFunc("POST /v1/sessions/{id}/turns", func(w http.ResponseWriter, r *http.Request) {
		mu.RLock()
		s := sessions[r.PathValue("id")]
		mu.RUnlock()
		if s == nil {
			http.Error(w, "no such session", http.StatusNotFound)
			return
		}
		var req struct {
			Turns []rawTurn `json:"turns"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil || len(req.Turns) == 0 {
			http.Error(w, "want {\"turns\":[...]}", http.StatusBadRequest)
			return
		}
		type turn struct {
			Seq  int64  `json:"seq"`
			Role string `json:"role"`
		}
		seqs, err := s.post(r.Context(), req.Turns)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out := make([]turn, len(req.Turns))
		for i, t := range req.Turns {
			out[i] = turn{seqs[i], t.Role}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"turns": out})
	})
	return serveFloor(ctx, ln, mux, stdout)
}

// openRawPostDB opens a session's database of the raw post server: one
// connection (the session's writes one at a time), WAL in exclusive locking
// mode (no shared-memory index, no file lock per transaction), as sessiond
// opens an object's database.
func openRawPostDB(ctx context.Context, path, syncMode string) (*sql.DB, *sql.Stmt, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=locking_mode(EXCLUSIVE)&_pragma=journal_mode(WAL)&_pragma=synchronous("+syncMode+")")
	if err != nil {
		return nil, nil, err
	}
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `CREATE TABLE turns (seq INTEGER PRIMARY KEY, role TEXT NOT NULL, content TEXT NOT NULL, created_at INTEGER NOT NULL)`); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("create %s: %w", path, err)
	}
	ins, err := db.PrepareContext(ctx, `INSERT INTO turns (role, content, created_at) VALUES (?, ?, ?)`)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, ins, nil
}

// post numbers turns in order and returns their sequence numbers; with a
// database it inserts them in one transaction.
func (s *rawPostSession) post(ctx context.Context, turns []rawTurn) ([]int64, error) {
	seqs := make([]int64, len(turns))
	if s.db == nil {
		for i := range turns {
			seqs[i] = s.seq.Add(1)
		}
		return seqs, nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	ins := tx.StmtContext(ctx, s.insert)
	now := time.Now().UnixMilli()
	for i, t := range turns {
		res, err := ins.ExecContext(ctx, t.Role, t.Content, now)
		if err != nil {
			return nil, err
		}
		if seqs[i], err = res.LastInsertId(); err != nil {
			return nil, err
		}
	}
	return seqs, tx.Commit()
}

// rawPostCase runs one post-turns case against a fresh raw post server of
// the given store, on the server's CPUs.
func rawPostCase(ctx context.Context, e *env, pc postCase, kind, store string, body []byte, warmup time.Duration) (row, error) {
	dir, err := os.MkdirTemp("", "loadgen-rawposts-")
	if err != nil {
		return row{}, err
	}
	defer os.RemoveAll(dir)
	d := e.durability
	if d == "" {
		d = "normal"
	}
	rp, err := startRawProc(ctx, e.serverCPUs(), rawPostServerCommand, "-store", store, "-data", dir, "-durability", d)
	if err != nil {
		return row{}, err
	}
	defer rp.close()
	t := &target{base: "http://" + rp.addr, pid: rp.cmd.Process.Pid, http: newHTTPClient(pc.conns)}
	defer t.http.CloseIdleConnections()
	r, err := postTurnsCase(ctx, e, t, pc, kind, body, warmup)
	name := "raw net/http (nothing stored)"
	if store == "sqlite" {
		name = "raw net/http + SQLite synchronous=" + rawSyncModes[d]
	}
	r.Case = name + " " + r.Case
	return r, err
}

// rawPostsLabel is the -raw flag's help.
const rawPostsLabel = "before each case, run it against two floors in their own process (on the server's CPU with -pin): " +
	"net/http and JSON storing nothing, then net/http with one SQLite database per session (one transaction per post, synchronous " +
	"NORMAL or FULL as -durability). Side-by-side rows of what the same parts cost without sessiond"

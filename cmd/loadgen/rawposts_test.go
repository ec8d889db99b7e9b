package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// startRawPostServer runs the raw post server in-process until the test
// ends and returns its base URL and a function that stops it and waits.
func startRawPostServer(t *testing.T, args ...string) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := rawPostServer(ctx, args, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("raw post server: %v", err)
	}
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("raw post server: %v", err)
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			stop()
		}
	})
	return "http://" + strings.TrimSpace(line), stop
}

func rawCall(t *testing.T, url, body string, want int, out any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %d %s, want %d", url, resp.StatusCode, raw, want)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("POST %s: %v in %s", url, err, raw)
		}
	}
}

// The SQLite floor stores every posted turn, in order, in the session's own
// database, and answers as post-turns expects.
func TestRawPostServerStoresTurns(t *testing.T) {
	dir := t.TempDir()
	base, stop := startRawPostServer(t, "-store", "sqlite", "-data", dir, "-durability", "full")
	var a, b struct{ ID string }
	rawCall(t, base+"/v1/sessions", `{}`, http.StatusCreated, &a)
	rawCall(t, base+"/v1/sessions", `{}`, http.StatusCreated, &b)
	if a.ID == "" || a.ID == b.ID {
		t.Fatalf("session ids %q and %q", a.ID, b.ID)
	}
	var got struct {
		Turns []struct {
			Seq  int64
			Role string
		}
	}
	rawCall(t, base+"/v1/sessions/"+a.ID+"/turns", string(turnsBody(2, "one", false)), http.StatusCreated, &got)
	if len(got.Turns) != 2 || got.Turns[0].Seq != 1 || got.Turns[1].Seq != 2 || got.Turns[0].Role != "user" {
		t.Fatalf("answer %+v, want seqs 1 and 2 of role user", got)
	}
	rawCall(t, base+"/v1/sessions/"+a.ID+"/turns", `{"turns":[{"role":"tool","content":"two"}]}`, http.StatusCreated, &got)
	if len(got.Turns) != 1 || got.Turns[0].Seq != 3 {
		t.Fatalf("answer %+v, want seq 3", got)
	}
	rawCall(t, base+"/v1/sessions/"+a.ID+"/turns", `{"turns":[]}`, http.StatusBadRequest, nil)
	rawCall(t, base+"/v1/sessions/"+a.ID+"/turns", `{"turns":`, http.StatusBadRequest, nil)
	rawCall(t, base+"/v1/sessions/nope/turns", string(turnsBody(1, "x", false)), http.StatusNotFound, nil)
	stop()

	db, err := sql.Open("sqlite", filepath.Join(dir, a.ID+".db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT seq, role, content FROM turns ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var stored []string
	for rows.Next() {
		var seq int64
		var role, content string
		if err := rows.Scan(&seq, &role, &content); err != nil {
			t.Fatal(err)
		}
		stored = append(stored, strings.Join([]string{role, content}, ":"))
	}
	if want := "user:one user:one tool:two"; strings.Join(stored, " ") != want {
		t.Fatalf("stored %q, want %q", stored, want)
	}
}

// The floor without a store still numbers turns per session.
func TestRawPostServerNoStore(t *testing.T) {
	base, _ := startRawPostServer(t, "-store", "none")
	var s struct{ ID string }
	rawCall(t, base+"/v1/sessions", `{}`, http.StatusCreated, &s)
	var got struct{ Turns []struct{ Seq int64 } }
	for want := int64(1); want <= 3; want++ {
		rawCall(t, base+"/v1/sessions/"+s.ID+"/turns", string(turnsBody(1, "x", false)), http.StatusCreated, &got)
		if len(got.Turns) != 1 || got.Turns[0].Seq != want {
			t.Fatalf("answer %+v, want seq %d", got, want)
		}
	}
}

func TestRawPostServerFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-store", "memory"},
		{"-store", "sqlite"},
		{"-store", "none", "-durability", "off"},
	} {
		if err := rawPostServer(context.Background(), args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

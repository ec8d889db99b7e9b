package session_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sessiond/session"
)

// A session whose database file was removed by hand (an operator's
// mistake) answers a clear error, data_lost, rather than an internal one,
// and can be deleted: by its owner (from the node index and the owner's
// list) and by an admin (from the node index; the owner's list entry then
// goes with the owner's delete, or list, as after a crash mid-deletion).
func TestDeleteSessionWhoseDatabaseIsGone(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 0, nil)
	var ids []string
	for range 2 {
		s, err := e.svc.Create(ctx, "alice", session.CreateRequest{Title: "lost"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	ns, err := e.rt.Namespace(session.NamespaceSessions)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, id := range ids {
		oi, err := ns.Info(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.Join(dir, oi.Path))
	}
	e.close()
	for _, f := range files {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Remove(f + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
		}
	}

	e = newEnv(t, dir, 0, nil)
	ns, err = e.rt.Namespace(session.NamespaceSessions)
	if err != nil {
		t.Fatal(err)
	}
	listed := func(id string) bool {
		t.Helper()
		entries, _, err := e.svc.List(ctx, "alice", "", 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range entries {
			if l.ID == id {
				return true
			}
		}
		return false
	}
	stored := func(id string) bool {
		t.Helper()
		ok, err := ns.Exists(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	own, other := ids[0], ids[1]

	_, err = e.svc.Get(ctx, "alice", own)
	if code, msg := session.ErrorCode(err); code != "data_lost" || !strings.Contains(msg, "delete") {
		t.Fatalf("get of a session without its database: %q %q (%v), want data_lost saying to delete it", code, msg, err)
	}
	// Another owner learns nothing of it: not found, as for any session
	// not theirs.
	if _, err := e.svc.Get(ctx, "bob", own); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("another owner's get: %v, want not found", err)
	}
	if _, _, err := e.svc.Turns(ctx, "bob", own, session.TurnQuery{Limit: 10}); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("another owner's turns: %v, want not found", err)
	}
	if err := e.svc.Delete(ctx, "bob", own); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("another owner's delete: %v, want not found", err)
	}
	// A create of its id says the id is taken, as for any session.
	if _, err := e.svc.Create(ctx, "bob", session.CreateRequest{ID: own}); !errors.Is(err, session.ErrConflict) {
		t.Fatalf("another owner's create of its id: %v, want conflict", err)
	}
	if !listed(own) || !stored(own) {
		t.Fatal("another owner's delete removed the session")
	}
	if err := e.svc.Delete(ctx, "alice", own); err != nil {
		t.Fatalf("the owner's delete: %v", err)
	}
	if listed(own) || stored(own) {
		t.Fatalf("after the owner's delete: listed %v, stored %v", listed(own), stored(own))
	}
	if _, err := e.svc.Get(ctx, "alice", own); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("get after the delete: %v, want not found", err)
	}

	if err := e.svc.Delete(ctx, "", other); err != nil { // an admin's
		t.Fatalf("an admin's delete: %v", err)
	}
	if stored(other) {
		t.Fatal("an admin's delete left the session stored")
	}
	if _, err := e.svc.Get(ctx, "alice", other); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("get after an admin's delete: %v, want not found", err)
	}
	if err := e.svc.Delete(ctx, "alice", other); err != nil {
		t.Fatalf("the owner's delete after an admin's: %v", err)
	}
	if listed(other) {
		t.Fatal("listed after the owner's delete")
	}
}

// An owner's list whose database file is gone (removed by hand) is made
// again, empty: the owner can list, create and delete again, and each
// session comes back into the list with its next change. Before, every
// list, create and delete of that owner failed with data_lost, for good.
func TestOwnerListWhoseFileIsGone(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 0, nil)
	var ids []string
	for range 2 {
		s, err := e.svc.Create(ctx, "alice", session.CreateRequest{Title: "kept"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	dirs, err := e.rt.Namespace(session.NamespaceDirectories)
	if err != nil {
		t.Fatal(err)
	}
	oi, err := dirs.Info(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	e.close()
	path := filepath.Join(dir, oi.Path)
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(path + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}

	e = newEnv(t, dir, 0, nil)
	listedIDs := func() []string {
		t.Helper()
		entries, _, err := e.svc.List(ctx, "alice", "", 100)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		var got []string
		for _, l := range entries {
			got = append(got, l.ID)
		}
		slices.Sort(got)
		return got
	}
	if got := listedIDs(); len(got) != 0 {
		t.Fatalf("listed %v from a list made again, want none yet", got)
	}
	if _, err := e.svc.Post(ctx, "alice", ids[0], session.PostRequest{Turns: []session.NewTurn{{Role: "user", Content: json.RawMessage(`"back"`)}}}); err != nil {
		t.Fatalf("post: %v", err)
	}
	s, err := e.svc.Create(ctx, "alice", session.CreateRequest{Title: "new"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	want := []string{ids[0], s.ID}
	slices.Sort(want)
	if got := listedIDs(); !slices.Equal(got, want) {
		t.Fatalf("listed %v, want the session changed since and the new one %v", got, want)
	}
	if err := e.svc.Delete(ctx, "alice", ids[1]); err != nil {
		t.Fatalf("delete of a session the list lost: %v", err)
	}
	if _, err := e.svc.Get(ctx, "alice", ids[1]); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("get after the delete: %v, want not found", err)
	}
}

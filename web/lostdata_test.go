package web_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sessiond/objects"
	"sessiond/session"
	"sessiond/web"
)

// A session whose database file was removed by hand answers 500
// data_lost, saying what to do, and DELETE removes it (204), from the
// list too; it did fail for ever.
func TestSessionWhoseDatabaseIsGone(t *testing.T) {
	s := newServer(t, 0, web.Config{}, func(rt *objects.Runtime) { rt.IdleTimeout = 20 * time.Millisecond })
	sess := s.createSession(t, map[string]any{"title": "lost"})
	ns, err := s.rt.Namespace(session.NamespaceSessions)
	if err != nil {
		t.Fatal(err)
	}
	oi, err := ns.Info(context.Background(), sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.rt.Dir, oi.Path)
	// Once it hibernates (its file closed), its file goes.
	checkFor(t, "the session to hibernate", func() bool { return s.rt.Stats().Active == 0 })
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	s.expectError(t, "GET", "/v1/sessions/"+sess.ID, nil, 500, "data_lost")
	if st, raw := s.do(t, "DELETE", "/v1/sessions/"+sess.ID, nil, nil); st != 204 {
		t.Fatalf("DELETE: %d %s, want 204", st, raw)
	}
	s.expectError(t, "GET", "/v1/sessions/"+sess.ID, nil, 404, "not_found")
	var list struct{ Sessions []struct{ ID string } }
	s.do(t, "GET", "/v1/sessions", nil, &list)
	if len(list.Sessions) != 0 {
		t.Fatalf("listed after the DELETE: %+v", list.Sessions)
	}
}

package session

import (
	"context"
	"testing"
)

// A directory update that fails is kept and applied by a later try, not
// dropped: otherwise the list would show the session as it was (or, for a
// new one, not at all) until it changed again.
func TestFailedDirectoryUpdateIsRetried(t *testing.T) {
	ctx := context.Background()
	svc := startService(t, offlineRegistry(t, 0, ModelInfo{}))
	s, err := svc.Create(ctx, "local", CreateRequest{Title: "before"})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := svc.dirs.Get("local")
	if err != nil {
		t.Fatal(err)
	}
	// A real failure of the directory's commit: its table is gone.
	if _, err := dir.Exec(ctx, nil, `ALTER TABLE sessions RENAME TO sessions_away`); err != nil {
		t.Fatal(err)
	}
	title := "after"
	if _, err := svc.Update(ctx, "local", s.ID, UpdateRequest{Title: &title}); err != nil {
		t.Fatal(err)
	}
	if svc.flushDirectoryOf("local") {
		t.Fatal("an update of a directory without its table was applied")
	}
	if _, err := dir.Exec(ctx, nil, `ALTER TABLE sessions_away RENAME TO sessions`); err != nil {
		t.Fatal(err)
	}
	list, _, err := svc.List(ctx, "local", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Title != "after" {
		t.Fatalf("listed %+v, want the session titled %q (the failed update kept and applied)", list, title)
	}
}

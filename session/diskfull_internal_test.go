package session

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"sessiond/objects"
)

// A write refused because the disk is full (SQLite's SQLITE_FULL, made
// here by capping the session database's pages) is "unavailable", saying
// so, not an internal error; nothing of it is stored, and the session
// takes writes again once there is room.
func TestDiskFullIsUnavailable(t *testing.T) {
	ctx := context.Background()
	svc, s, stub := startSession(t)
	capPages := func(extra int) {
		t.Helper()
		if _, err := objects.Do(ctx, stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (struct{}, error) {
			var n int
			if err := tx.QueryRow(ctx, `PRAGMA page_count`).Scan(&n); err != nil {
				return struct{}{}, err
			}
			var max int
			return struct{}{}, tx.QueryRow(ctx, fmt.Sprintf(`PRAGMA max_page_count = %d`, n+extra)).Scan(&max)
		}); err != nil {
			t.Fatal(err)
		}
	}
	big, _ := json.Marshal(strings.Repeat("full ", 50_000))
	capPages(0)
	_, err := svc.Post(ctx, "local", s.ID, PostRequest{Turns: []NewTurn{{Role: RoleUser, Content: big}}})
	if !objects.IsDiskFull(err) {
		t.Fatalf("a post past the database's room: %v, want SQLITE_FULL", err)
	}
	if code, msg := ErrorCode(err); code != "unavailable" || !strings.Contains(msg, "disk is full") {
		t.Fatalf("its error: %s %q, want unavailable, the disk full", code, msg)
	}
	capPages(1 << 20)
	if _, err := svc.Post(ctx, "local", s.ID, PostRequest{Turns: []NewTurn{{Role: RoleUser, Content: big}}}); err != nil {
		t.Fatalf("a post with room again: %v", err)
	}
	turns, _, err := svc.Turns(ctx, "local", s.ID, TurnQuery{Limit: 10})
	if err != nil || len(turns) != 1 {
		t.Fatalf("turns: %d %v, want the one post that had room", len(turns), err)
	}
}

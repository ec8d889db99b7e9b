package session

import (
	"context"
	"encoding/json"
	"testing"
)

// A session whose oldest turn links to a parent it lacks (imported before
// imports were checked) forks as far as its turns go.
func TestForkStopsAtMissingParent(t *testing.T) {
	ctx := context.Background()
	svc := startService(t, offlineRegistry(t, 0, ModelInfo{}))
	s, err := svc.Create(ctx, "local", CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"one", "two"} {
		c, _ := json.Marshal(text)
		if _, err := svc.Post(ctx, "local", s.ID, PostRequest{Turns: []NewTurn{{Role: RoleUser, Content: c}}}); err != nil {
			t.Fatal(err)
		}
	}
	stub, err := svc.sessions.Get(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stub.Exec(ctx, nil, `UPDATE turns SET parent_id = 99 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	f, err := svc.Fork(ctx, "local", s.ID, 2, "")
	if err != nil {
		t.Fatalf("fork: %v", err)
	}
	zero := int64(0)
	turns, _, err := svc.Turns(ctx, "local", f.ID, TurnQuery{After: &zero, Limit: 10})
	if err != nil || len(turns) != 2 || turns[1].ID != 2 {
		t.Fatalf("the fork's turns: %+v %v", turns, err)
	}
}

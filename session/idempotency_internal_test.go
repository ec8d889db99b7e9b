package session

import (
	"context"
	"testing"
)

// A request that claimed its key and stopped before making its session
// (a crash between the two) is finished by its repeat, under the claimed
// id.
func TestCreateKeyClaimedButNotMade(t *testing.T) {
	ctx := context.Background()
	svc := startService(t, offlineRegistry(t, 0, ModelInfo{}))

	req := CreateRequest{Title: "t"}
	id := NewID()
	if got, err := svc.claimCreate(ctx, "local", "k", req.hash(), id); err != nil || got != id {
		t.Fatalf("claim: %q %v", got, err)
	}
	req.IdempotencyKey = "k"
	s, err := svc.Create(ctx, "local", req)
	if err != nil || s.ID != id {
		t.Fatalf("repeat after a claim alone: %+v %v, want id %s", s, err, id)
	}
	if again, err := svc.Create(ctx, "local", req); err != nil || again.ID != id {
		t.Fatalf("another repeat: %+v %v", again, err)
	}
}

package session

import (
	"context"
	"testing"

	"sessiond/objects"
)

// A request that claimed its key and stopped before making its session
// (a crash between the two) is finished by its repeat, under the claimed
// id.
func TestCreateKeyClaimedButNotMade(t *testing.T) {
	ctx := context.Background()
	rt := objects.NewRuntime(t.TempDir())
	rt.Durability = objects.DurabilityNormal
	reg := NewRegistry()
	if err := reg.Register("offline", NewOfflineModel(0), ModelInfo{}); err != nil {
		t.Fatal(err)
	}
	svc, err := NewService(rt, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	svc.Start()
	t.Cleanup(func() { svc.Close(); rt.Close() })

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

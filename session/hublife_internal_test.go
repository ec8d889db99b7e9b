package session

import (
	"context"
	"testing"
	"time"

	"sessiond/objects"
)

// waitFinished polls the generation until it has ended.
func waitFinished(t *testing.T, svc *Service, id, gid string) *Generation {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		g, err := svc.Generation(context.Background(), "local", id, gid)
		if err != nil {
			t.Fatal(err)
		}
		if g.Finished() {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("generation %s did not finish: %+v", gid, g)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A janitor sweep between the call that starts a generation (its log is in
// the session's hub) and that call's commit leaves the hub and the log
// alone: the generation streams and completes, rather than failing with
// "generation log released" on its first delta.
func TestJanitorSparesStartingGeneration(t *testing.T) {
	ctx := context.Background()
	svc, s, stub := startSession(t)
	turns, err := DecodeNewTurns([]byte(`[{"role":"user","content":"/say hello there"}]`))
	if err != nil {
		t.Fatal(err)
	}
	var gid string
	if _, err := objects.Do(ctx, stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (struct{}, error) {
		res, err := o.post(ctx, tx, &PostRequest{Turns: turns, Generate: true, IdempotencyKey: "k1"})
		if err != nil {
			return struct{}{}, err
		}
		gid = res.Generation.ID
		svc.sweepHubs() // a janitor tick, landing before this call commits
		return struct{}{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	g := waitFinished(t, svc, s.ID, gid)
	if g.Status != GenDone {
		t.Fatalf("generation %s: status %s, error %+v; want done", gid, g.Status, g.Error)
	}
	// Retained after its end, the log still keeps the hub.
	svc.sweepHubs()
	if svc.existingHub(s.ID) == nil {
		t.Fatal("the janitor dropped the hub of a generation whose log is retained")
	}
}

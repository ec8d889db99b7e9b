package session

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"sessiond/objects"
)

// A queued generation that cannot start when its turn comes (here: its
// model is gone) ends failed; the generation before it still ends done
// with its output, and the one queued after it runs.
func TestQueuedGenerationThatCannotStart(t *testing.T) {
	ctx := context.Background()
	reg := offlineRegistry(t, 200, ModelInfo{})
	if err := reg.Register("gone", NewOfflineModel(0), ModelInfo{}); err != nil {
		t.Fatal(err)
	}
	svc := startService(t, reg)

	s, err := svc.Create(ctx, "local", CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	post := func(text, model string, parent int64) *Generation {
		t.Helper()
		c, _ := json.Marshal(text)
		r, err := svc.Post(ctx, "local", s.ID, PostRequest{Turns: []NewTurn{{Role: RoleUser, Content: c}}, Generate: true, Model: model, Parent: parent})
		if err != nil || r.Generation == nil {
			t.Fatalf("post %q: %+v %v", text, r, err)
		}
		return r.Generation
	}
	a := post("/words 40", "offline", 0)
	b := post("/words 3", "gone", 0)
	// On another branch (an edit of b's turn), so that b answers its own
	// turn, not both with c's model (see nextQueued).
	c := post("/words 3", "offline", 2)
	if b.Status != GenQueued || c.Status != GenQueued {
		t.Fatalf("b %s, c %s: want both queued", b.Status, c.Status)
	}
	reg.mu.Lock()
	delete(reg.models, "gone")
	reg.mu.Unlock()

	wait := func(gid string) *Generation {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			g, err := svc.Generation(ctx, "local", s.ID, gid)
			if err != nil {
				t.Fatal(err)
			}
			if g.Finished() {
				return g
			}
			if time.Now().After(deadline) {
				t.Fatalf("generation %s still %s", gid, g.Status)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if g := wait(a.ID); g.Status != GenDone {
		t.Fatalf("the generation before: %s %+v, want done", g.Status, g.Error)
	}
	if g := wait(b.ID); g.Status != GenFailed || g.Error == nil || g.Error.Code != CodeInvalidRequest {
		t.Fatalf("the generation that cannot start: %s %+v, want failed with %s", g.Status, g.Error, CodeInvalidRequest)
	}
	if g := wait(c.ID); g.Status != GenDone {
		t.Fatalf("the generation after: %s %+v, want done", g.Status, g.Error)
	}
	turns, _, err := svc.Turns(ctx, "local", s.ID, TurnQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, tr := range turns {
		var x string
		json.Unmarshal(tr.Content, &x)
		texts = append(texts, tr.Role+":"+x)
	}
	// The head's branch: a's turns, then c's (b's turn is on the other).
	if len(turns) != 4 || turns[1].Status != TurnComplete || turns[3].Status != TurnComplete || turns[3].Role != RoleAssistant {
		t.Fatalf("turns %q", texts)
	}
}

// A generation whose session instance was rebuilt while it ran (after a
// panicking call) was marked interrupted by the new instance: its old run,
// ending later, does not overwrite that as done.
func TestRebuiltSessionKeepsItsInterruptedGeneration(t *testing.T) {
	ctx := context.Background()
	svc := startService(t, offlineRegistry(t, 200, ModelInfo{}))
	s, err := svc.Create(ctx, "local", CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := svc.Post(ctx, "local", s.ID, PostRequest{Turns: []NewTurn{{Role: RoleUser, Content: []byte(`"/words 60"`)}}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	stub, err := svc.sessions.Get(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	run, err := objects.Do(ctx, stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (*genRun, error) { return o.run, nil })
	if err != nil || run == nil {
		t.Fatalf("the running generation: %v %v", run, err)
	}
	var pe *objects.PanicError
	if _, err := objects.Do(ctx, stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (struct{}, error) { panic("boom") }); !errors.As(err, &pe) {
		t.Fatalf("a panicking call: %v", err)
	}
	g, err := svc.Generation(ctx, "local", s.ID, r.Generation.ID)
	if err != nil || g.Status != GenInterrupted {
		t.Fatalf("after the rebuild: %+v %v, want interrupted", g, err)
	}
	<-run.done // the old run has ended
	if g, err = svc.Generation(ctx, "local", s.ID, r.Generation.ID); err != nil || g.Status != GenInterrupted {
		t.Fatalf("after the old run ended: %+v %v, want interrupted still", g, err)
	}
	// The server did not stop, and the turn and the generation do not say
	// it did: they say the session was reopened.
	turns, _, err := svc.Turns(ctx, "local", s.ID, TurnQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	last := turns[len(turns)-1]
	if last.Status != TurnInterrupted || last.Error == nil || !strings.Contains(last.Error.Message, "reopened") {
		t.Errorf("the turn: %s %+v, want interrupted, its session reopened", last.Status, last.Error)
	}
	if g.Error == nil || !strings.Contains(g.Error.Message, "reopened") {
		t.Errorf("the generation's error: %+v, want its session reopened", g.Error)
	}
}

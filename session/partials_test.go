package session

import (
	"context"
	"testing"

	"sessiond/objects"
)

// A round that fails keeps its pieces: they go back in front of what
// the generation added since, so the next round writes the text in order;
// the deletion of an ended turn's rows waits for the next round too.
func TestJournalFailedRoundIsRetriedInOrder(t *testing.T) {
	ctx := context.Background()
	rt := objects.NewRuntime(t.TempDir())
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
	j := svc.journal
	a, ended := j.begin("s1", 2), j.begin("s2", 5)
	a.add(Delta{Text: "one "}, 1)
	j.flush()
	if p, err := j.read(ctx, "s1", 2); err != nil || p.text != "one " || p.upto != 1 {
		t.Fatalf("after the first round: %+v %v", p, err)
	}

	a.add(Delta{Text: "two "}, 2)
	a.add(Delta{ToolCall: &ToolCallDelta{Index: 0, ID: "c1", Name: "f", Arguments: `{"x":`}}, 3)
	ended.add(Delta{Text: "gone"}, 1)
	// Fail the round: the journal's database goes away under it.
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	j.end("s2", 5)
	j.flush() // fails
	a.add(Delta{Text: "three"}, 4)
	a.mu.Lock()
	text, changed, calls := string(a.text), a.changed, a.callsChanged
	a.mu.Unlock()
	if text != "two three" || !changed || !calls {
		t.Fatalf("after a failed round the entry holds %q (changed %v, calls %v), want \"two three\" with its tool call", text, changed, calls)
	}
	j.mu.Lock()
	_, pending := j.gone[turnKey{"s2", 5}]
	j.mu.Unlock()
	if !pending {
		t.Fatal("the failed round forgot a deletion")
	}

}

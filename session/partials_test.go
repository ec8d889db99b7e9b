package session

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"sessiond/objects"
)

// openJournal opens a runtime with a session service in a temp dir and
// returns them with the service's journal; the runtime closes when tb ends.
func openJournal(tb testing.TB) (*objects.Runtime, *journal) {
	tb.Helper()
	rt := objects.NewRuntime(tb.TempDir())
	svc, err := NewService(rt, NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	if err := rt.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rt.Close() })
	return rt, svc.journal
}

// A round that fails keeps its pieces: they go back in front of what
// the generation added since, so the next round writes the text in order;
// the deletion of an ended turn's rows waits for the next round too.
func TestJournalFailedRoundIsRetriedInOrder(t *testing.T) {
	ctx := context.Background()
	rt, j := openJournal(t)
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
	text, changed, calls := string(a.text), a.changed, len(a.calls) == 1 && string(a.calls[0].args) == `{"x":`
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

// A tool call streamed over many rounds is saved as its parts, like the
// text: what the journal stores grows with the call, not with the call
// times the rounds (a 2 MiB call over a minute stored ~250 MB when every
// round saved it whole). The call is read back whole after a crash.
func TestJournalSavesToolCallsIncrementally(t *testing.T) {
	ctx := context.Background()
	_, j := openJournal(t)
	e := j.begin("s1", 2)
	var want ResultBuilder
	add := func(d Delta, off int64) {
		if err := want.Add(d); err != nil {
			t.Fatal(err)
		}
		e.add(d, off)
	}
	const rounds, piece = 200, 1 << 10
	off := int64(0)
	add(Delta{Text: "writing the file: "}, off)
	add(Delta{ToolCall: &ToolCallDelta{Index: 0, ID: "call_1", Name: "write_file", Arguments: `{"text":"`}}, off)
	for r := range rounds {
		for q := range 4 { // parts split as a provider streams them
			off++
			add(Delta{ToolCall: &ToolCallDelta{Index: 0, Arguments: strings.Repeat(string(rune('a'+(r+q)%26)), piece/4)}}, off)
		}
		j.flush()
	}
	add(Delta{ToolCall: &ToolCallDelta{Index: 0, Arguments: `"}`}}, off+1)
	add(Delta{ToolCall: &ToolCallDelta{Index: 1, ID: "call_2", Name: "run"}}, off+2)
	add(Delta{ToolCall: &ToolCallDelta{Index: 1, Arguments: `{}`}}, off+3)
	j.flush()

	p, err := j.read(ctx, "s1", 2)
	if err != nil {
		t.Fatal(err)
	}
	wantCalls, _ := json.Marshal(want.Result().ToolCalls)
	if p.text != "writing the file: " || p.toolCalls != string(wantCalls) || p.upto != off+3 {
		t.Fatalf("read back: text %q, upto %d, tool calls of %d bytes equal: %v; want the whole output", p.text, p.upto, len(p.toolCalls), p.toolCalls == string(wantCalls))
	}
	stub, err := j.stub()
	if err != nil {
		t.Fatal(err)
	}
	var stored int
	if _, err := stub.Call(ctx, func(ctx context.Context, _ any, tx *objects.Tx) (any, error) {
		return nil, tx.QueryRow(ctx, `SELECT sum(length(coalesce(tool_calls, '')) + length(coalesce(tool_deltas, ''))) FROM partial`).Scan(&stored)
	}); err != nil {
		t.Fatal(err)
	}
	if limit := 2*rounds*piece + rounds*100; stored > limit {
		t.Fatalf("the journal stores %d bytes of tool calls for a %d-byte call, want at most %d", stored, len(wantCalls), limit)
	}
}

// BenchmarkJournalRound is one round of the journal in the steady state of
// 1,000 streams of 20 s each (80 rounds at PersistInterval): a piece of
// every running generation written, the rows of the 12 or 13 that ended
// deleted, in one commit. The table holds ~80,000 rows.
func BenchmarkJournalRound(b *testing.B) {
	const streams, rounds = 1000, 80
	_, j := openJournal(b)
	entries := make([]*journalEntry, streams)
	turns := make([]int64, streams)
	for i := range entries {
		turns[i] = 2
		entries[i] = j.begin(fmt.Sprintf("01JSESSION%06d", i), turns[i])
	}
	round := 0
	step := func() {
		round++
		for i, e := range entries {
			e.add(Delta{Text: "twelve words of a reply, about what one round adds "}, int64(round))
			if (round+i)%rounds == 0 { // this stream's generation ends; its session starts another
				id := fmt.Sprintf("01JSESSION%06d", i)
				j.end(id, turns[i])
				turns[i] += 2
				entries[i] = j.begin(id, turns[i])
			}
		}
		j.flush()
	}
	for range rounds {
		step()
	}
	for b.Loop() {
		step()
	}
}

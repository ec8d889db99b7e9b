package session

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
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

func TestCutText(t *testing.T) {
	for _, c := range []struct {
		s     string
		limit int
		want  string
	}{
		{"abc", 3, "abc"},
		{"abcdef", 5, "ab…"},
		{"aééé", 5, "a…"},                    // é is 2 bytes: not cut inside it
		{"ae\u0301e\u0301x", 7, "ae\u0301…"}, // combining acute stays with its e
		{"ae\u0301e\u0301", 5, "a…"},         // or goes with it
		{"x👍🏽y", 9, "x…"},                    // skin tone stays with its emoji
		{"x👨\u200d👩y", 12, "x…"},             // nor is a joined emoji split
		{"x👨\u200d👩yzwv", 15, "x👨\u200d👩…"},  // a whole one stays
	} {
		got := cutText(c.s, c.limit)
		if got != c.want || len(got) > c.limit || !utf8.ValidString(got) {
			t.Errorf("cutText(%q, %d) = %q, want %q", c.s, c.limit, got, c.want)
		}
	}
}

// A fork's title stays within MaxTitleBytes, so that its export imports.
func TestForkTitleWithinLimit(t *testing.T) {
	ctx := context.Background()
	svc := startService(t, offlineRegistry(t, 0, ModelInfo{}))
	for _, title := range []string{strings.Repeat("a", MaxTitleBytes), strings.Repeat("é", MaxTitleBytes/2)} {
		s, err := svc.Create(ctx, "local", CreateRequest{Title: title})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Post(ctx, "local", s.ID, PostRequest{Turns: []NewTurn{{Role: RoleUser, Content: json.RawMessage(`"hi"`)}}}); err != nil {
			t.Fatal(err)
		}
		f, err := svc.Fork(ctx, "local", s.ID, 1, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Title) > MaxTitleBytes || !utf8.ValidString(f.Title) || !strings.HasPrefix(f.Title, "Fork of "+title[:100]) {
			t.Fatalf("fork title %d bytes %q…", len(f.Title), f.Title[:20])
		}
		var buf bytes.Buffer
		if err := svc.Export(ctx, "local", f.ID, &buf); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Import(ctx, "local", &buf, ""); err != nil {
			t.Fatalf("import the fork's export: %v", err)
		}
		if _, err := svc.Update(ctx, "local", f.ID, UpdateRequest{Title: &f.Title}); err != nil {
			t.Fatalf("patch the fork's own title: %v", err)
		}
	}
}

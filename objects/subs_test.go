package objects

import (
	"slices"
	"testing"
)

func TestPatternMatches(t *testing.T) {
	for _, c := range []struct {
		pattern, subject string
		want             bool
	}{
		{"a.b.c", "a.b.c", true},
		{"a.b.c", "a.b", false},
		{"a.b", "a.b.c", false},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
		{"a.*", "a.b.c", false},
		{"*", "a", true},
		{"*", "a.b", false},
		{">", "a", true},
		{">", "a.b.c", true},
		{"a.>", "a", false},
		{"a.>", "a.b", true},
		{"a.>", "a.b.c.d", true},
		{"a.*.>", "a.b", false},
		{"a.*.>", "a.b.c", true},
		{"sessiond.session.*.turn", "sessiond.session.01ABC.turn", true},
		{"sessiond.session.*.generation.>", "sessiond.session.01ABC.generation.done", true},
		{"sessiond.session.*.generation.>", "sessiond.session.01ABC.turn", false},
		{"a.b.c.d.e.f.g.h.i.j.k.*", "a.b.c.d.e.f.g.h.i.j.k.l", true},
	} {
		if got := patternMatches(c.pattern, c.subject); got != c.want {
			t.Errorf("patternMatches(%q, %q) = %v, want %v", c.pattern, c.subject, got, c.want)
		}
	}
}

func TestSubscriptionsMatch(t *testing.T) {
	var s subscriptions
	a, b, c := entryKey{"ns", "a"}, entryKey{"ns", "b"}, entryKey{"other", "c"}
	s.add(a, "ev.task.1")
	s.add(a, "ev.task.*") // both match: a comes once
	s.add(b, "ev.>")
	s.add(c, "ev.task.2")
	keys := func(subject string) []string {
		var out []string
		for _, k := range s.match(subject) {
			out = append(out, k.ns+"/"+k.name)
		}
		slices.Sort(out)
		return out
	}
	if got := keys("ev.task.1"); !slices.Equal(got, []string{"ns/a", "ns/b"}) {
		t.Fatalf("ev.task.1 → %v", got)
	}
	if got := keys("ev.task.2"); !slices.Equal(got, []string{"ns/a", "ns/b", "other/c"}) {
		t.Fatalf("ev.task.2 → %v", got)
	}
	if got := keys("other.subject"); got != nil {
		t.Fatalf("other.subject → %v", got)
	}
	s.remove(a, "ev.task.*")
	if got := keys("ev.task.2"); !slices.Equal(got, []string{"ns/b", "other/c"}) {
		t.Fatalf("after unsubscribe, ev.task.2 → %v", got)
	}
	s.removeAll(a)
	s.removeAll(b)
	if got := keys("ev.task.1"); got != nil {
		t.Fatalf("after removeAll, ev.task.1 → %v", got)
	}
	if len(s.wild) != 0 || len(s.literal) != 1 {
		t.Fatalf("tables not emptied: literal %v wild %v", s.literal, s.wild)
	}
}

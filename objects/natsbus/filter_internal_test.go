package natsbus

import (
	"slices"
	"testing"
)

func TestSubjectRelations(t *testing.T) {
	for _, c := range []struct {
		a, b               string
		subsumes, overlaps bool
	}{
		{"a.b", "a.b", true, true},
		{"a.*", "a.b", true, true},
		{"a.b", "a.*", false, true},
		{"a.>", "a.b.c", true, true},
		{"a.>", "a", false, false},
		{"a.>", "a.*", true, true},
		{"a.*", "a.>", false, true},
		{"a.*.c", "a.b.*", false, true},
		{"a.*", "a.b.c", false, false},
		{"a.b", "a.c", false, false},
		{">", "x.y", true, true},
		{"*.b", "a.*", false, true},
	} {
		if got := subsumes(c.a, c.b); got != c.subsumes {
			t.Errorf("subsumes(%q, %q) = %v", c.a, c.b, got)
		}
		if got := overlaps(c.a, c.b); got != c.overlaps {
			t.Errorf("overlaps(%q, %q) = %v", c.a, c.b, got)
		}
		if overlaps(c.a, c.b) != overlaps(c.b, c.a) {
			t.Errorf("overlaps(%q, %q) is not symmetric", c.a, c.b)
		}
	}
}

func TestFilters(t *testing.T) {
	stream := []string{"ev.>"}
	for _, c := range []struct {
		patterns []string
		want     []string // nil: everything
	}{
		{nil, []string{"ev." + noneToken}},
		{[]string{"other.x"}, []string{"ev." + noneToken}}, // outside the stream: matches nothing stored
		{[]string{"ev.a", "ev.a"}, []string{"ev.a"}},
		{[]string{"ev.a.*", "ev.a.b", "ev.c"}, []string{"ev.a.*", "ev.c"}},
		{[]string{"ev.>", "ev.a"}, []string{"ev.>"}},
		{[]string{"ev.*.c", "ev.b.*"}, nil}, // overlap neither covers
		{[]string{">"}, nil},
	} {
		got := filters(c.patterns, stream)
		if !slices.Equal(got, c.want) || (got == nil) != (c.want == nil) {
			t.Errorf("filters(%q) = %q, want %q", c.patterns, got, c.want)
		}
	}
	if got := filters(nil, []string{"ev.a", "ev.b"}); got != nil {
		t.Errorf("no wildcard stream subject to hide an empty filter in: got %q, want everything", got)
	}
}

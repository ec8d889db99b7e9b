package session

import (
	"regexp"
	"strings"
	"testing"
)

// idSpec is the rule ValidateID documents, as a regular expression: the
// hand-written check must agree with it on every input.
var idSpec = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"01JD2X-abc_Z9", true},
		{strings.Repeat("x", 128), true},
		{"", false},
		{strings.Repeat("x", 129), false},
		{"a b", false},
		{"a/b", false},
		{"a.b", false},
		{"ab\n", false},
		{"é", false},
		{"a\x00", false},
		{NewID(), true},
	} {
		if got := validID(tc.id); got != tc.want {
			t.Errorf("validID(%q) = %v, want %v", tc.id, got, tc.want)
		}
		if err := ValidateID(tc.id); (err == nil) != tc.want {
			t.Errorf("ValidateID(%q) = %v, want valid %v", tc.id, err, tc.want)
		}
	}
}

func FuzzValidID(f *testing.F) {
	for _, s := range []string{"a", "", "a-b_c", "a b", "ab\n", strings.Repeat("z", 129), "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := validID(id), idSpec.MatchString(id); got != want {
			t.Fatalf("validID(%q) = %v, the rule says %v", id, got, want)
		}
	})
}

package session

import "testing"

func TestJSONDepth(t *testing.T) {
	for _, c := range []struct {
		json string
		want int
	}{
		{`"x"`, 0},
		{`{}`, 1},
		{`[[],[[]]]`, 3},
		{`{"a":[1,{"b":2}]}`, 3},
		{`{"a":"{[{[\"]}"}`, 1},            // brackets and an escaped quote inside a string
		{`{"a\\":{"b":"\\"}, "c": []}`, 2}, // an escaped backslash ends before the quote
	} {
		if got := jsonDepth([]byte(c.json)); got != c.want {
			t.Errorf("jsonDepth(%s) = %d, want %d", c.json, got, c.want)
		}
	}
}

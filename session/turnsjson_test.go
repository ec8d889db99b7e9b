package session

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzDecodeNewTurns holds DecodeNewTurns to json.Unmarshal into
// []NewTurn: the same turns, or an error for the same inputs.
func FuzzDecodeNewTurns(f *testing.F) {
	for _, s := range []string{
		`[{"role":"user","content":"hi"}]`, `[]`, `null`, `[null]`, `[1]`, `{}`,
		`[{"Role":"tool","CONTENT":[{"type":"text","text":"x"}],"tool_call_id":"c1","extra":{"a":[1]}}]`,
		`[{"role":null,"content":null}]`, `[{"role":5}]`, `[{"role":"a","role":"b"}]`,
		`[{"role":"us\u0065r","content":"a\"b"}, {"role":"user","content":"c"}]`,
		`[{"content":"x"},]`, `[{"content":"x"}`, ` [ { "role" : "user" , "content" : "y" } ] `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want []NewTurn
		werr := json.Unmarshal(data, &want)
		got, err := DecodeNewTurns(data, false)
		if (werr == nil) != (err == nil) {
			t.Fatalf("json.Unmarshal: %v; DecodeNewTurns: %v", werr, err)
		}
		if err != nil {
			return
		}
		if (want == nil) != (got == nil) || len(want) != len(got) {
			t.Fatalf("json.Unmarshal: %#v; DecodeNewTurns: %#v", want, got)
		}
		for i := range want {
			w, g := want[i], got[i]
			if w.Role != g.Role || w.ToolCallID != g.ToolCallID || !bytes.Equal(w.Content, g.Content) {
				t.Fatalf("turn %d: json.Unmarshal %#v; DecodeNewTurns %#v", i, w, g)
			}
		}
	})
}

package session

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeNewTurns holds DecodeNewTurns to encoding/json decoding into
// []NewTurn with unknown fields refused: the same turns, or an error for
// the same inputs.
func FuzzDecodeNewTurns(f *testing.F) {
	for _, s := range []string{
		`[{"role":"user","content":"hi"}]`, `[]`, `null`, `[null]`, `[1]`, `{}`,
		`[{"Role":"tool","CONTENT":[{"type":"text","text":"x"}],"tool_call_id":"c1","extra":{"a":[1]}}]`, `[{"role":"user","content":"x","parent_id":1}]`,
		`[{"role":null,"content":null}]`, `[{"role":5}]`, `[{"role":"a","role":"b"}]`,
		`[{"role":"us\u0065r","content":"a\"b"}, {"role":"user","content":"c"}]`,
		`[{"content":"x"},]`, `[{"content":"x"}`, ` [ { "role" : "user" , "content" : "y" } ] `,
		"[{\"role\":\"user\",\"content\":\"raw \xff\xfe\"}]", "[{\"role\":\"us\xe6\x97\",\"content\":\"日本\"}]",
		"[{\"content\":[{\"type\":\"text\",\"text\":\"\xc0\xaf\"}]}]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want []NewTurn
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		werr := dec.Decode(&want)
		if werr == nil {
			if _, terr := dec.Token(); terr != io.EOF {
				werr = fmt.Errorf("data after the value: %v", terr)
			}
		}
		got, err := DecodeNewTurns(data)
		if werr == nil && !utf8.Valid(data) {
			// encoding/json takes raw bytes such as 0xff; JSON (RFC 8259)
			// is UTF-8, and DecodeNewTurns holds to it.
			if err == nil {
				t.Fatalf("%q is not UTF-8, and DecodeNewTurns took it", data)
			}
			return
		}
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

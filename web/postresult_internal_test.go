package web

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"sessiond/session"
)

// appendPostResult splices contents instead of re-encoding them; for
// stored (compact) contents its answer must be byte for byte what
// writeJSON's encoder writes.
func TestAppendPostResultMatchesEncodingJSON(t *testing.T) {
	parent, call, gid := int64(3), "call_1", "g_1"
	at := time.UnixMilli(1700000000123).UTC()
	for _, res := range []*session.PostResult{
		{Turns: []session.Turn{{ID: 4, ParentID: &parent, Role: "user",
			Content: json.RawMessage(`"hi <b> & \"x\" \u00e9 é\n"`), Status: "complete", CreatedAt: at}}},
		{Turns: []session.Turn{
			{ID: 5, Role: "tool", ToolCallID: &call, Content: json.RawMessage(`[{"type":"text","text":"x"}]`), Status: "complete", CreatedAt: at},
			{ID: 6, ParentID: &parent, Role: "user", Content: json.RawMessage(`""`), Status: "complete", GenerationID: &gid, CreatedAt: at},
		}, Generation: &session.Generation{ID: gid, Status: "running", TurnID: 7}},
		{Turns: []session.Turn{{ID: 8, Role: "user", Status: "complete", CreatedAt: at}}},
		{Turns: []session.Turn{}},
		{},
	} {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(res); err != nil {
			t.Fatal(err)
		}
		got, err := appendPostResult(nil, res)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("appendPostResult:\n%s\nencoding/json:\n%s", got, want.Bytes())
		}
	}
}

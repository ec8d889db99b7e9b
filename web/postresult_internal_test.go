package web

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
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
			Content: json.RawMessage(`"hi <b> & \"x\" \u00e9 é\n"`), Status: "complete", CreatedAt: session.Timestamp{Time: at}}}},
		{Turns: []session.Turn{
			{ID: 5, Role: "tool", ToolCallID: &call, Content: json.RawMessage(`[{"type":"text","text":"x"}]`), Status: "complete", CreatedAt: session.Timestamp{Time: at}},
			{ID: 6, ParentID: &parent, Role: "user", Content: json.RawMessage(`""`), Status: "complete", GenerationID: &gid, CreatedAt: session.Timestamp{Time: at}},
		}, Generation: &session.Generation{ID: gid, Status: "running", TurnID: 7}},
		{Turns: []session.Turn{{ID: 8, Role: "user", Status: "complete", CreatedAt: session.Timestamp{Time: at}}}},
		{Turns: []session.Turn{{ID: 9, Role: "assistant", Content: json.RawMessage(`"<x> & y"`), Status: "failed",
			ToolCalls: []session.ToolCall{{ID: "c<1>", Type: "function", Function: session.FunctionCall{Name: "a&b", Arguments: `{"q":"<&>"}`}}},
			Error:     &session.ErrorInfo{Code: "upstream_error", Message: "a <b> & c"}, CreatedAt: session.Timestamp{Time: at}}}},
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

// writeTurnsPage writes what writeJSON wrote for a page of turns.
func TestWriteTurnsPageMatchesEncodingJSON(t *testing.T) {
	at := time.UnixMilli(1700000000123).UTC()
	for _, c := range []struct {
		turns []session.Turn
		more  bool
	}{
		{[]session.Turn{{ID: 1, Role: "user", Content: json.RawMessage(`"a <b> & é"`), Status: "complete", CreatedAt: session.Timestamp{Time: at}},
			{ID: 2, Role: "assistant", Content: json.RawMessage(`"b"`), Status: "complete", CreatedAt: session.Timestamp{Time: at}}}, true},
		{[]session.Turn{}, false},
		{nil, false},
	} {
		want := httptest.NewRecorder()
		writeJSON(want, http.StatusOK, map[string]any{"turns": c.turns, "has_more": c.more})
		got := httptest.NewRecorder()
		writeTurnsPage(got, c.turns, c.more)
		if got.Body.String() != want.Body.String() || got.Code != want.Code || got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
			t.Errorf("writeTurnsPage:\n%d %s\nwriteJSON:\n%d %s", got.Code, got.Body, want.Code, want.Body)
		}
	}
}

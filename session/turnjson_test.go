package session

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// encodeJSON is encoding/json's encoding of v as the API and record write
// it (an Encoder with SetEscapeHTML(false), without its newline): what
// the hand-built encodings must write.
func encodeJSON(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// turnRef is Turn without its MarshalJSON: encoding/json's own encoding of
// it, the reference AppendTurnJSON must match.
type turnRef Turn

// reference is encoding/json's encoding of t with tool_calls [] when none.
func reference(t *testing.T, tr Turn) []byte {
	t.Helper()
	if tr.ToolCalls == nil {
		tr.ToolCalls = []ToolCall{}
	}
	return encodeJSON(t, turnRef(tr))
}

func sampleTurns() []Turn {
	at := time.UnixMilli(1700000000123).UTC()
	p := int64(1)
	s := func(v string) *string { return &v }
	return []Turn{
		{ID: 2, ParentID: &p, Role: "user", Content: json.RawMessage(`"hello \"there\" é \u00e9 <b>"`), Status: "complete", CreatedAt: Timestamp{at}},
		{ID: 3, Role: "user", Content: json.RawMessage(`[{"type":"text","text":"x"}]`), Status: "complete", CreatedAt: Timestamp{at}},
		{ID: 4, Role: "user", Status: "complete", CreatedAt: Timestamp{time.UnixMilli(5).UTC()}},
		{ID: 5, ParentID: &p, Role: "assistant", Content: json.RawMessage(`"partial"`), Status: "failed",
			ToolCalls: []ToolCall{{ID: "c<1>", Type: "function", Function: FunctionCall{Name: "a&b", Arguments: `{"q":"<&>\n"}`}},
				{ID: "c2", Type: "function", Function: FunctionCall{Name: "n", Arguments: "bad \xff utf8 \u2028"}}},
			Model: s("offline"), Usage: &Usage{PromptTokens: 10, CompletionTokens: 3, TotalTokens: 13}, FinishReason: s("tool_calls"),
			Error: &ErrorInfo{Code: "upstream_error", Message: "a <b> & \"c\""}, GenerationID: s("g_1"), CreatedAt: Timestamp{at}},
		{ID: 6, Role: "tool", Content: json.RawMessage(`""`), ToolCallID: s("c2"), ToolCalls: []ToolCall{}, Status: "cancelled", CreatedAt: Timestamp{at}},
		{},
	}
}

// AppendTurnJSON writes, byte for byte, what encoding/json writes.
func TestAppendTurnJSONMatchesEncodingJSON(t *testing.T) {
	for _, tr := range sampleTurns() {
		got := AppendTurnJSON([]byte("x"), tr)
		if want := append([]byte("x"), reference(t, tr)...); !bytes.Equal(got, want) {
			t.Errorf("AppendTurnJSON:\n got %s\nwant %s", got, want)
		}
		if m := encodeJSON(t, tr); !bytes.Equal(m, got[1:]) { // through Turn.MarshalJSON
			t.Errorf("encoding/json of a Turn:\n got %s\nwant %s", m, got[1:])
		}
		msg := TurnMessageJSON(tr)
		if want := `{"type":"turn","turn":` + string(reference(t, tr)) + `}`; string(msg) != want {
			t.Errorf("TurnMessageJSON:\n got %s\nwant %s", msg, want)
		}
	}
}

func FuzzAppendTurnJSON(f *testing.F) {
	f.Add(int64(1), "user", `"hi"`, "c1", "f", `{"a":1}`, "m", 3, "x", "complete", int64(1700000000123))
	f.Fuzz(func(t *testing.T, id int64, role, content, callID, fn, args, model string, tokens int, code, status string, ms int64) {
		if !json.Valid([]byte(content)) || !bytes.Equal(compact(t, content), []byte(content)) {
			t.Skip() // stored content is valid JSON; encoding/json would compact it
		}
		tr := Turn{ID: id, ParentID: &id, Role: role, Content: json.RawMessage(content),
			ToolCalls:  []ToolCall{{ID: callID, Type: "function", Function: FunctionCall{Name: fn, Arguments: args}}},
			ToolCallID: &callID, Model: &model, Usage: &Usage{tokens, -tokens, 2 * tokens}, FinishReason: &code,
			Status: status, Error: &ErrorInfo{Code: code, Message: args}, GenerationID: &fn,
			CreatedAt: Timestamp{time.UnixMilli(max(ms, -ms, 0) % 253402300799999).UTC()}}
		if got, want := AppendTurnJSON(nil, tr), reference(t, tr); !bytes.Equal(got, want) {
			t.Fatalf("AppendTurnJSON:\n got %s\nwant %s", got, want)
		}
	})
}

func compact(t *testing.T, s string) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(s)); err != nil {
		t.Skip()
	}
	return buf.Bytes()
}

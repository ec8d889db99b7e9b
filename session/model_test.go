package session_test

import (
	"encoding/json"
	"strings"
	"testing"

	"sessiond/session"
)

func TestEstimateTokens(t *testing.T) {
	tests := []struct {
		s    string
		want int
	}{
		{"", 0},
		{"a", 1},
		{"abcd", 1},
		{"abcde", 2},
		{strings.Repeat("x", 400), 100},
		{"é", 1}, // bytes, not runes
	}
	for _, tt := range tests {
		if got := session.EstimateTokens(tt.s); got != tt.want {
			t.Errorf("EstimateTokens(%q) = %d, want %d", tt.s, got, tt.want)
		}
	}
}

func TestMessageText(t *testing.T) {
	tests := []struct {
		name string
		msg  session.Message
		want string
	}{
		{"content", session.Message{Content: "hi"}, "hi"},
		{"parts win", session.Message{Content: "no", Parts: json.RawMessage(`[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]`)}, "a\nb"},
		{"empty parts", session.Message{Content: "c", Parts: json.RawMessage(`[]`)}, "c"},
		{"null parts", session.Message{Content: "c", Parts: json.RawMessage(`null`)}, "c"},
		{"malformed parts", session.Message{Content: "c", Parts: json.RawMessage(`{"type":"text"}`)}, "c"},
		{"only an image", session.Message{Content: "c", Parts: json.RawMessage(`[{"type":"image_url","image_url":{"url":"x"}}]`)}, ""},
	}
	for _, tt := range tests {
		if got := tt.msg.Text(); got != tt.want {
			t.Errorf("%s: Text() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestModelErrorMessage(t *testing.T) {
	tests := []struct {
		err  *session.ModelError
		want string
	}{
		{&session.ModelError{Code: "upstream_rate_limited", Message: "slow down", Status: 429}, "session: model error upstream_rate_limited (status 429): slow down"},
		{&session.ModelError{Code: "x"}, "session: model error x"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestResultBuilder(t *testing.T) {
	var b session.ResultBuilder
	for _, d := range []session.Delta{
		{Text: "Let me look. "},
		{ToolCall: &session.ToolCallDelta{Index: 0, ID: "call_a", Name: "read"}},
		{ToolCall: &session.ToolCallDelta{Index: 1, ID: "call_b", Name: "list", Arguments: "{}"}},
		{ToolCall: &session.ToolCallDelta{Index: 0, Arguments: `{"p":`}},
		{ToolCall: &session.ToolCallDelta{Index: 0, ID: "ignored", Arguments: `1}`}},
	} {
		if err := b.Add(d); err != nil {
			t.Fatalf("Add(%+v): %v", d, err)
		}
	}
	if err := b.Add(session.Delta{Text: "lost", ToolCall: &session.ToolCallDelta{Index: 3}}); err == nil {
		t.Fatal("Add with a skipped index: nil error, want one")
	}
	r := b.Result()
	if r.Text != "Let me look. " {
		t.Fatalf("Text = %q", r.Text)
	}
	want := []session.ToolCall{
		{ID: "call_a", Type: "function", Function: session.FunctionCall{Name: "read", Arguments: `{"p":1}`}},
		{ID: "call_b", Type: "function", Function: session.FunctionCall{Name: "list", Arguments: "{}"}},
	}
	if len(r.ToolCalls) != len(want) || r.ToolCalls[0] != want[0] || r.ToolCalls[1] != want[1] {
		t.Fatalf("ToolCalls = %+v, want %+v", r.ToolCalls, want)
	}
	// A name in parts is joined; one repeated, or sent growing, is kept once.
	for _, parts := range [][]string{{"read_", "file"}, {"read_file", "read_file"}, {"read_", "read_file"}, {"read_file", ""}} {
		var nb session.ResultBuilder
		for _, p := range parts {
			nb.Add(session.Delta{ToolCall: &session.ToolCallDelta{Index: 0, Name: p}})
		}
		if got := nb.Result().ToolCalls[0].Function.Name; got != "read_file" {
			t.Errorf("name parts %q make %q, want read_file", parts, got)
		}
	}
	// An id an earlier call has already is not taken (a tool result could
	// not tell the two apart): the call is left without one, whether the
	// id comes with its first part or later.
	var dup session.ResultBuilder
	for _, tc := range []session.ToolCallDelta{
		{Index: 0, ID: "call_a", Name: "f"},
		{Index: 1, ID: "call_a", Name: "g"},
		{Index: 2, Name: "h"},
		{Index: 2, ID: "call_a"},
		{Index: 1, ID: "call_a", Arguments: "{}"},
	} {
		if err := dup.Add(session.Delta{ToolCall: &tc}); err != nil {
			t.Fatalf("Add(%+v): %v", tc, err)
		}
	}
	if calls := dup.Result().ToolCalls; len(calls) != 3 || calls[0].ID != "call_a" || calls[1].ID != "" || calls[2].ID != "" {
		t.Fatalf("ToolCalls = %+v, want the ids call_a, none, none", calls)
	}
	var empty session.ResultBuilder
	if r := empty.Result(); r.Text != "" || r.ToolCalls != nil {
		t.Fatalf("empty builder gives %+v", r)
	}
}

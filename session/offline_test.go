package session_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"sessiond/session"
)

// streamAll runs m on req and returns the result, the error and the deltas.
func streamAll(t testing.TB, ctx context.Context, m session.Model, req *session.ModelRequest) (*session.ModelResult, []session.Delta, error) {
	t.Helper()
	var deltas []session.Delta
	res, err := m.Stream(ctx, req, func(d session.Delta) error {
		if d.ToolCall != nil {
			c := *d.ToolCall
			d.ToolCall = &c
		}
		deltas = append(deltas, d)
		return nil
	})
	if res == nil {
		t.Fatalf("Stream returned a nil result (err %v)", err)
	}
	return res, deltas, err
}

func say(s string) *session.ModelRequest {
	return &session.ModelRequest{Messages: []session.Message{
		{Role: "system", Content: "You are a test."},
		{Role: "user", Content: s},
	}}
}

// checkDeltasMatch fails unless the deltas rebuild the result exactly.
func checkDeltasMatch(t testing.TB, deltas []session.Delta, res *session.ModelResult) {
	t.Helper()
	var b session.ResultBuilder
	for _, d := range deltas {
		if err := b.Add(d); err != nil {
			t.Fatalf("ResultBuilder.Add(%+v): %v", d, err)
		}
	}
	got := b.Result()
	if got.Text != res.Text {
		t.Fatalf("deltas concatenate to %q, result Text is %q", got.Text, res.Text)
	}
	if !slices.Equal(got.ToolCalls, res.ToolCalls) {
		t.Fatalf("deltas give tool calls %+v, result has %+v", got.ToolCalls, res.ToolCalls)
	}
}

func TestOfflineCommands(t *testing.T) {
	long := strings.Repeat("ab ", 300)
	tests := []struct {
		name    string
		req     *session.ModelRequest
		text    string // wanted Text, when no prefix/contains check is given
		has     []string
		finish  string
		call    *session.FunctionCall
		errCode string
	}{
		{name: "say", req: say("/say Hello, world!"), text: "Hello, world!", finish: "stop"},
		{name: "say newline separator", req: say("/say\nline one\nline two"), text: "line one\nline two", finish: "stop"},
		{name: "say keeps extra spaces", req: say("/say   three leading"), text: "  three leading", finish: "stop"},
		{name: "say nothing", req: say("/say"), text: "", finish: "stop"},
		{name: "leading whitespace before command", req: say("  \n/say hi"), text: "hi", finish: "stop"},
		{name: "words", req: say("/words 5"), text: "1 2 3 4 5", finish: "stop"},
		{name: "words one", req: say("/words 1"), text: "1", finish: "stop"},
		{name: "words padded", req: say("/words  3 \n"), text: "1 2 3", finish: "stop"},
		{name: "words zero", req: say("/words 0"), errCode: "invalid_request"},
		{name: "words too many", req: say("/words 1000001"), errCode: "invalid_request"},
		{name: "words not a number", req: say("/words five"), errCode: "invalid_request"},
		{name: "words missing", req: say("/words"), errCode: "invalid_request"},
		{name: "tool", req: say(`/tool read_file {"path": "a.go"}`), finish: "tool_calls",
			call: &session.FunctionCall{Name: "read_file", Arguments: `{"path": "a.go"}`}},
		{name: "tool newline separated", req: say("/tool\nread_file\n{\"path\":\"ü.go\"}\n"), finish: "tool_calls",
			call: &session.FunctionCall{Name: "read_file", Arguments: `{"path":"ü.go"}`}},
		{name: "tool without arguments", req: say("/tool now"), finish: "tool_calls",
			call: &session.FunctionCall{Name: "now", Arguments: `{}`}},
		{name: "tool bad json", req: say(`/tool f {"a":`), errCode: "invalid_request"},
		{name: "tool no name", req: say("/tool"), errCode: "invalid_request"},
		{name: "fail", req: say("/fail x"), errCode: "x"},
		{name: "fail upstream code", req: say("/fail upstream_rate_limited"), errCode: "upstream_rate_limited"},
		{name: "fail no code", req: say("/fail"), errCode: "invalid_request"},
		{name: "fail bad code", req: say("/fail not a code"), errCode: "invalid_request"},
		{name: "plain message", req: say("hello there"), finish: "stop",
			has: []string{"offline model", `You said: "hello there"`}},
		{name: "unknown command", req: say("/help"), finish: "stop", has: []string{"offline model", `"/help"`}},
		{name: "uppercase is not a command", req: say("/SAY hi"), finish: "stop", has: []string{`"/SAY hi"`}},
		{name: "long message is cut", req: say(long), finish: "stop", has: []string{`"` + long[:200] + `…"`}},
		{name: "no messages", req: &session.ModelRequest{}, finish: "stop", has: []string{`You said: ""`}},
		{name: "user parts", req: &session.ModelRequest{Messages: []session.Message{
			{Role: "user", Content: "ignored", Parts: json.RawMessage(`[{"type":"text","text":"/say from parts"}]`)},
		}}, text: "from parts", finish: "stop"},
		{name: "tool result", req: &session.ModelRequest{Messages: []session.Message{
			{Role: "user", Content: "/tool read_file {}"},
			{Role: "assistant", ToolCalls: []session.ToolCall{{ID: "call_1", Type: "function", Function: session.FunctionCall{Name: "read_file", Arguments: "{}"}}}},
			{Role: "tool", ToolCallID: "call_1", Content: "package main\n\nfunc main() {}"},
		}}, text: "Tool result received: package main\n\nfunc main() {}", finish: "stop"},
		{name: "long tool result is cut", req: &session.ModelRequest{Messages: []session.Message{
			{Role: "user", Content: "/tool f"},
			{Role: "tool", ToolCallID: "call_1", Content: strings.Repeat("é", 300)},
		}}, text: "Tool result received: " + strings.Repeat("é", 200) + "…", finish: "stop"},
	}
	m := session.NewOfflineModel(0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, deltas, err := streamAll(t, t.Context(), m, tt.req)
			if tt.errCode != "" {
				var me *session.ModelError
				if !errors.As(err, &me) || me.Code != tt.errCode {
					t.Fatalf("err = %v, want *ModelError with Code %q", err, tt.errCode)
				}
				if me.Message == "" {
					t.Fatal("ModelError without a message")
				}
				if len(deltas) != 0 || res.FinishReason != "error" {
					t.Fatalf("%d deltas, FinishReason %q; want none and error", len(deltas), res.FinishReason)
				}
				return
			}
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			checkDeltasMatch(t, deltas, res)
			if res.FinishReason != tt.finish {
				t.Fatalf("FinishReason = %q, want %q", res.FinishReason, tt.finish)
			}
			switch {
			case tt.call != nil:
				if len(res.ToolCalls) != 1 || res.ToolCalls[0].Function != *tt.call || res.Text != "" {
					t.Fatalf("ToolCalls = %+v, Text = %q; want one call %+v", res.ToolCalls, res.Text, *tt.call)
				}
				tc := res.ToolCalls[0]
				if !strings.HasPrefix(tc.ID, "call_") || tc.Type != "function" {
					t.Fatalf("call ID %q type %q, want call_… and function", tc.ID, tc.Type)
				}
				if first := deltas[0].ToolCall; first == nil || first.ID != tc.ID || first.Name != tc.Function.Name {
					t.Fatalf("first delta %+v, want the ID and name", deltas[0])
				}
				if len(deltas) < 2 {
					t.Fatalf("%d deltas, want the arguments after the ID and name", len(deltas))
				}
			case tt.has != nil:
				for _, s := range tt.has {
					if !strings.Contains(res.Text, s) {
						t.Fatalf("Text = %q, want it to contain %q", res.Text, s)
					}
				}
			default:
				if res.Text != tt.text {
					t.Fatalf("Text = %q, want %q", res.Text, tt.text)
				}
			}
		})
	}
}

func TestOfflineOneWordPerDelta(t *testing.T) {
	const text = "  Hello,\tworld!\n\n  two  spaces\r\nand a tail   "
	res, deltas, err := streamAll(t, t.Context(), session.NewOfflineModel(0), say("/say "+text))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if res.Text != text {
		t.Fatalf("Text = %q, want %q", res.Text, text)
	}
	checkDeltasMatch(t, deltas, res)
	want := []string{"  Hello,\t", "world!\n\n  ", "two  ", "spaces\r\n", "and ", "a ", "tail   "}
	var got []string
	for _, d := range deltas {
		got = append(got, d.Text)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("deltas = %q, want %q", got, want)
	}
	if res.Usage.CompletionTokens != len(want) {
		t.Fatalf("CompletionTokens = %d, want %d (one per word)", res.Usage.CompletionTokens, len(want))
	}
}

func TestOfflineDeterministic(t *testing.T) {
	m := session.NewOfflineModel(0)
	for _, msg := range []string{"/say a b  c", "/words 20", `/tool f {"x":[1,2,3]}`, "anything"} {
		r1, d1, err1 := streamAll(t, t.Context(), m, say(msg))
		r2, d2, err2 := streamAll(t, t.Context(), m, say(msg))
		if err1 != nil || err2 != nil {
			t.Fatalf("%q: Stream: %v, %v", msg, err1, err2)
		}
		if r1.Text != r2.Text || r1.FinishReason != r2.FinishReason || *r1.Usage != *r2.Usage || !slices.Equal(r1.ToolCalls, r2.ToolCalls) {
			t.Fatalf("%q: results differ: %+v and %+v", msg, r1, r2)
		}
		if !slices.EqualFunc(d1, d2, func(a, b session.Delta) bool {
			return a.Text == b.Text && (a.ToolCall == nil) == (b.ToolCall == nil) && (a.ToolCall == nil || *a.ToolCall == *b.ToolCall)
		}) {
			t.Fatalf("%q: deltas differ", msg)
		}
	}
}

func TestOfflineToolCallIDsDifferByPosition(t *testing.T) {
	m := session.NewOfflineModel(0)
	first, _, err := streamAll(t, t.Context(), m, say("/tool f {}"))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	req := say("/tool f {}")
	req.Messages = append(req.Messages,
		session.Message{Role: "assistant", ToolCalls: first.ToolCalls},
		session.Message{Role: "tool", ToolCallID: first.ToolCalls[0].ID, Content: "ok"},
		session.Message{Role: "assistant", Content: "Tool result received: ok"},
		session.Message{Role: "user", Content: "/tool f {}"},
	)
	second, _, err := streamAll(t, t.Context(), m, req)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if first.ToolCalls[0].ID == second.ToolCalls[0].ID {
		t.Fatalf("two calls of one session share ID %q", first.ToolCalls[0].ID)
	}
}

func TestOfflineUsage(t *testing.T) {
	req := &session.ModelRequest{Messages: []session.Message{
		{Role: "system", Content: "be brief"},
		{Role: "user", Content: "/words 7"},
	}}
	res, _, err := streamAll(t, t.Context(), session.NewOfflineModel(0), req)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	prompt := session.EstimateTokens("be brief") + session.EstimateTokens("/words 7")
	want := session.Usage{PromptTokens: prompt, CompletionTokens: 7, TotalTokens: prompt + 7}
	if res.Usage == nil || *res.Usage != want {
		t.Fatalf("Usage = %+v, want %+v", res.Usage, want)
	}
}

func TestOfflineMaxTokens(t *testing.T) {
	req := say("/words 10")
	req.MaxTokens = 4
	res, deltas, err := streamAll(t, t.Context(), session.NewOfflineModel(0), req)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if res.Text != "1 2 3 4 " || len(deltas) != 4 || res.FinishReason != "length" {
		t.Fatalf("Text = %q from %d deltas, FinishReason %q; want 4 words and length", res.Text, len(deltas), res.FinishReason)
	}
}

func TestOfflineCancelMidStream(t *testing.T) {
	for _, tps := range []float64{0, 1000} {
		ctx, cancel := context.WithCancel(t.Context())
		n := 0
		res, err := session.NewOfflineModel(tps).Stream(ctx, say("/words 50"), func(session.Delta) error {
			n++
			if n == 3 {
				cancel()
			}
			return nil
		})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("TPS %v: err = %v, want context.Canceled", tps, err)
		}
		if res.Text != "1 2 3 " || res.FinishReason != "cancelled" || res.Usage.CompletionTokens != 3 {
			t.Fatalf("TPS %v: Text = %q, FinishReason = %q, Usage = %+v; want 3 words, cancelled",
				tps, res.Text, res.FinishReason, res.Usage)
		}
	}
}

func TestOfflineAlreadyCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	res, deltas, err := streamAll(t, ctx, session.NewOfflineModel(session.DefaultOfflineTPS), say("/words 3"))
	if !errors.Is(err, context.Canceled) || len(deltas) != 0 || res.FinishReason != "cancelled" {
		t.Fatalf("err %v, %d deltas, FinishReason %q; want context.Canceled, none, cancelled", err, len(deltas), res.FinishReason)
	}
}

func TestOfflineEmitError(t *testing.T) {
	errGone := errors.New("viewer gone")
	n := 0
	res, err := session.NewOfflineModel(0).Stream(t.Context(), say("/words 10"), func(session.Delta) error {
		n++
		if n == 2 {
			return errGone
		}
		return nil
	})
	if !errors.Is(err, errGone) {
		t.Fatalf("err = %v, want the error of emit", err)
	}
	if n != 2 || res.Text != "1 2 " || res.FinishReason != "error" {
		t.Fatalf("emit called %d times, Text %q, FinishReason %q; want 2, \"1 2 \", error", n, res.Text, res.FinishReason)
	}
}

func TestOfflinePaced(t *testing.T) {
	res, deltas, err := streamAll(t, t.Context(), session.NewOfflineModel(2000), say("/words 5"))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if res.Text != "1 2 3 4 5" || len(deltas) != 5 {
		t.Fatalf("Text = %q from %d deltas", res.Text, len(deltas))
	}
}

func TestOfflineUnpacedLargeOutput(t *testing.T) {
	n := 0
	res, err := session.NewOfflineModel(0).Stream(t.Context(), say("/words 200000"), func(session.Delta) error {
		n++
		return nil
	})
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if n != 200000 || !strings.HasSuffix(res.Text, " 199999 200000") {
		t.Fatalf("%d deltas, text ends %q", n, res.Text[max(0, len(res.Text)-20):])
	}
}

func FuzzOfflineModel(f *testing.F) {
	for _, s := range []string{
		"/say hello  world\n", "/say", "/say \t\n", "/words 3", "/words -1", "/words 99999999999999999999",
		`/tool f {"a":1}`, "/tool f", "/tool\tf\t[1,\"é\"]", "/tool f {", "/fail x", "/fail", "/fail é",
		"hello", "", "  /say  x", "/say é\u00a0ü", "/say \xff\xfe",
	} {
		f.Add(s)
	}
	m := session.NewOfflineModel(0)
	f.Fuzz(func(t *testing.T, msg string) {
		req := say(msg)
		req.MaxTokens = 1000 // keep /words N small
		res, deltas, err := streamAll(t, t.Context(), m, req)
		if err != nil {
			var me *session.ModelError
			if !errors.As(err, &me) || me.Code == "" {
				t.Fatalf("err = %v, want a *ModelError with a code", err)
			}
			return
		}
		checkDeltasMatch(t, deltas, res)
		for _, tc := range res.ToolCalls {
			if !json.Valid([]byte(tc.Function.Arguments)) {
				t.Fatalf("tool call arguments %q are not JSON", tc.Function.Arguments)
			}
		}
		trimmed := strings.TrimLeft(msg, " \t\r\n\v\f")
		if arg, ok := strings.CutPrefix(trimmed, "/say"); ok && len(deltas) < 1000 {
			if arg != "" && strings.IndexByte(" \t\r\n\v\f", arg[0]) >= 0 {
				arg = arg[1:]
			} else if arg != "" {
				return // "/sayX" is not the command
			}
			if res.Text != arg {
				t.Fatalf("/say gave %q, want %q", res.Text, arg)
			}
		}
	})
}

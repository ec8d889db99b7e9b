package session_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"sessiond/session"
	"sessiond/session/openai"
)

// TestGenerationThroughOpenAIAdapter runs a session's generation through the
// real go-openai client against a fake upstream speaking the streaming wire
// format: text, a tool call split across chunks, usage. The committed turn
// holds the assembled result, and the request carried the conversation.
func TestGenerationThroughOpenAIAdapter(t *testing.T) {
	var lastBody string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		lastBody = string(b)
		w.Header().Set("Content-Type", "text/event-stream")
		chunk := func(s string) { fmt.Fprintf(w, "data: %s\n\n", s); w.(http.Flusher).Flush() }
		chunk(`{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Let me "}}]}`)
		chunk(`{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"look."}}]}`)
		chunk(`{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"read_file","arguments":"{\"pa"}}]}}]}`)
		chunk(`{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"th\":\"a.go\"}"}}]}}]}`)
		chunk(`{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`)
		chunk(`{"id":"c","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}`)
		chunk(`[DONE]`)
	}))
	defer upstream.Close()
	m, err := openai.New(openai.Config{BaseURL: upstream.URL + "/v1", APIKey: "k", Model: "upstream-model"})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, "", 0, func(svc *session.Service, reg *session.Registry) {
		if err := reg.Register("remote", m, session.ModelInfo{ContextTokens: 4096}); err != nil {
			t.Fatal(err)
		}
	})
	ctx := context.Background()
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{Model: "remote", System: "be terse"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("open a.go")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	if g := waitGen(t, e, "local", s.ID, res.Generation.ID); g.Status != session.GenDone {
		t.Fatalf("generation %+v", g)
	}
	a := lastTurns(t, e, "local", s.ID, 1)[0]
	if text(t, a) != "Let me look." || len(a.ToolCalls) != 1 || a.ToolCalls[0].Function.Arguments != `{"path":"a.go"}` ||
		a.ToolCalls[0].ID != "call_9" || *a.FinishReason != "tool_calls" || a.Usage.TotalTokens != 18 {
		b, _ := json.Marshal(a)
		t.Fatalf("turn %s", b)
	}
	for _, want := range []string{`"model":"upstream-model"`, `"content":"be terse"`, `"content":"open a.go"`, `"include_usage":true`} {
		if !strings.Contains(lastBody, want) {
			t.Fatalf("request body lacks %s: %s", want, lastBody)
		}
	}
	// The tool result goes back; the next request carries the call and its result.
	res2, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{{Role: "tool", ToolCallID: "call_9", Content: json.RawMessage(`"package a"`)}}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	waitGen(t, e, "local", s.ID, res2.Generation.ID)
	for _, want := range []string{`"tool_call_id":"call_9"`, `"name":"read_file"`, `"content":"package a"`} {
		if !strings.Contains(lastBody, want) {
			t.Fatalf("second request lacks %s: %s", want, lastBody)
		}
	}
}

// Usage an upstream sent is stored as it came, zeros included; a stream
// without any leaves the turn without usage (null), not with zeros.
func TestGenerationUsageThroughOpenAIAdapter(t *testing.T) {
	for _, tt := range []struct {
		name, usage string // usage: the chunk's usage field, "" for no usage chunk
		want        *session.Usage
	}{
		{"none", "", nil},
		{"zeros", `{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}`, &session.Usage{}},
		{"counts", `{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}`, &session.Usage{PromptTokens: 4, CompletionTokens: 2, TotalTokens: 6}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprintf(w, "data: %s\n\n", `{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}`)
				if tt.usage != "" {
					fmt.Fprintf(w, "data: %s\n\n", `{"id":"c","object":"chat.completion.chunk","model":"m","choices":[],"usage":`+tt.usage+`}`)
				}
				fmt.Fprint(w, "data: [DONE]\n\n")
			}))
			defer upstream.Close()
			m, err := openai.New(openai.Config{BaseURL: upstream.URL + "/v1", Model: "upstream-model"})
			if err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, "", 0, func(svc *session.Service, reg *session.Registry) {
				if err := reg.Register("remote", m, session.ModelInfo{}); err != nil {
					t.Fatal(err)
				}
			})
			ctx := context.Background()
			s, err := e.svc.Create(ctx, "local", session.CreateRequest{Model: "remote"})
			if err != nil {
				t.Fatal(err)
			}
			res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("hello")}, Generate: true})
			if err != nil {
				t.Fatal(err)
			}
			if g := waitGen(t, e, "local", s.ID, res.Generation.ID); g.Status != session.GenDone {
				t.Fatalf("generation %+v", g)
			}
			a := lastTurns(t, e, "local", s.ID, 1)[0]
			if (a.Usage == nil) != (tt.want == nil) || a.Usage != nil && *a.Usage != *tt.want {
				got, _ := json.Marshal(a.Usage)
				t.Fatalf("turn usage %s, want %+v", got, tt.want)
			}
		})
	}
}

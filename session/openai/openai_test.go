package openai_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"sessiond/session"
	"sessiond/session/openai"
)

// reply is what the fake endpoint answers to one request.
type reply struct {
	status int               // default 200
	header map[string]string // extra response headers
	body   string            // body of an error answer
	events []string          // data payloads of a 200 answer, each flushed as "data: X\n\n"
	raw    []string          // after the events, each written and flushed as it is
	hang   bool              // after the events, block until the client goes away
	drop   bool              // close the connection without answering
	reset  bool              // after the events, reset the connection (no end of the chunked body)
}

// ok is a complete streamed answer: events, then [DONE].
func ok(events ...string) reply {
	return reply{events: append(events, "[DONE]")}
}

func status(code int, body string) reply {
	return reply{status: code, body: body}
}

func apiError(msg, typ, code string) string {
	return mustJSON(map[string]any{"error": map[string]any{"message": msg, "type": typ, "code": code}})
}

type recorded struct {
	header http.Header
	body   []byte
}

// fake is an OpenAI-compatible endpoint speaking the real streaming wire
// format. Request i gets replies[i]; later requests get the last reply.
type fake struct {
	srv     *httptest.Server
	replies []reply
	release chan struct{} // closed at cleanup to end hanging handlers

	mu   sync.Mutex
	reqs []recorded
}

func newFake(t *testing.T, replies ...reply) *fake {
	t.Helper()
	f := &fake{replies: replies, release: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	t.Cleanup(func() { close(f.release) }) // runs first: unblock handlers, then close
	return f
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	n := len(f.reqs)
	f.reqs = append(f.reqs, recorded{header: r.Header.Clone(), body: body})
	f.mu.Unlock()
	if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
		http.Error(w, "wrong endpoint "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		return
	}
	rp := f.replies[min(n, len(f.replies)-1)]
	if rp.drop {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	for k, v := range rp.header {
		w.Header().Set(k, v)
	}
	if rp.status != 0 && rp.status != http.StatusOK {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rp.status)
		io.WriteString(w, rp.body)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	fl.Flush()
	for _, e := range rp.events {
		fmt.Fprintf(w, "data: %s\n\n", e)
		fl.Flush()
	}
	for _, s := range rp.raw {
		io.WriteString(w, s)
		fl.Flush()
	}
	if rp.reset {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0) // a reset, not a clean close
			}
			conn.Close()
		}
		return
	}
	if rp.hang {
		select {
		case <-r.Context().Done():
		case <-f.release:
		}
	}
}

func (f *fake) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// Chunk builders, in the shape OpenAI sends.

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func chunk(delta map[string]any, finish string) string {
	choice := map[string]any{"index": 0, "delta": delta, "finish_reason": nil}
	if finish != "" {
		choice["finish_reason"] = finish
	}
	return mustJSON(map[string]any{
		"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
		"model": "test-model", "choices": []any{choice}, "usage": nil,
	})
}

func role() string         { return chunk(map[string]any{"role": "assistant", "content": ""}, "") }
func text(s string) string { return chunk(map[string]any{"content": s}, "") }
func finish(r string) string {
	return chunk(map[string]any{}, r)
}

func tools(parts ...map[string]any) string { return chunk(map[string]any{"tool_calls": parts}, "") }

func toolPart(index int, id, name, args string) map[string]any {
	fn := map[string]any{"arguments": args}
	p := map[string]any{"index": index, "function": fn}
	if id != "" {
		p["id"], p["type"] = id, "function"
	}
	if name != "" {
		fn["name"] = name
	}
	return p
}

func usage(prompt, completion int) string {
	return mustJSON(map[string]any{
		"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "test-model",
		"choices": []any{},
		"usage":   map[string]any{"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
	})
}

// newModel returns a Model talking to f with test-sized timings; edit
// changes the config first.
func newModel(t *testing.T, f *fake, edit func(*openai.Config)) *openai.Model {
	t.Helper()
	cfg := openai.Config{
		BaseURL:      f.srv.URL + "/v1",
		APIKey:       "sk-test",
		Model:        "test-model",
		HTTPClient:   f.srv.Client(),
		RetryBackoff: time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	if edit != nil {
		edit(&cfg)
	}
	m, err := openai.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func userRequest(s string) *session.ModelRequest {
	return &session.ModelRequest{Messages: []session.Message{{Role: "user", Content: s}}}
}

// collect streams req and returns the result, the error and every delta.
func collect(t *testing.T, ctx context.Context, m session.Model, req *session.ModelRequest) (*session.ModelResult, []session.Delta, error) {
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

func modelError(t *testing.T, err error, code string) *session.ModelError {
	t.Helper()
	var me *session.ModelError
	if !errors.As(err, &me) {
		t.Fatalf("err = %v (%T), want *session.ModelError %s", err, err, code)
	}
	if me.Code != code {
		t.Fatalf("Code = %q, want %q (err %v)", me.Code, code, err)
	}
	return me
}

func TestStreamText(t *testing.T) {
	f := newFake(t, ok(role(), text("Hel"), text("lo, "), text("wörld"), finish("stop"), usage(12, 3)))
	m := newModel(t, f, nil)

	res, deltas, err := collect(t, t.Context(), m, userRequest("hi"))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	var got []string
	var cat strings.Builder
	for _, d := range deltas {
		if d.ToolCall != nil {
			t.Fatalf("unexpected tool call delta %+v", d.ToolCall)
		}
		got = append(got, d.Text)
		cat.WriteString(d.Text)
	}
	if want := []string{"Hel", "lo, ", "wörld"}; !slices.Equal(got, want) {
		t.Fatalf("deltas = %q, want %q", got, want)
	}
	if res.Text != "Hello, wörld" || cat.String() != res.Text {
		t.Fatalf("Text = %q, deltas give %q, want %q", res.Text, cat.String(), "Hello, wörld")
	}
	if res.FinishReason != session.FinishStop {
		t.Fatalf("FinishReason = %q, want stop", res.FinishReason)
	}
	if want := (session.Usage{PromptTokens: 12, CompletionTokens: 3, TotalTokens: 15}); res.Usage == nil || *res.Usage != want {
		t.Fatalf("Usage = %+v, want %+v", res.Usage, want)
	}
	if got, want := len(f.requests()), 1; got != want {
		t.Fatalf("requests = %d, want %d", got, want)
	}
}

// Usage the upstream did not send is absent (null), not zeros that look
// like a count; zeros it sent are kept.
func TestStreamUsageAbsentIsNull(t *testing.T) {
	for _, tt := range []struct {
		name   string
		events []string
		want   string
	}{
		{"none", []string{text("hi"), finish("stop")}, `null`},
		{"zeros", []string{text("hi"), finish("stop"), usage(0, 0)}, `{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}`},
		{"counts", []string{text("hi"), finish("stop"), usage(5, 1)}, `{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, _, err := collect(t, t.Context(), newModel(t, newFake(t, ok(tt.events...)), nil), userRequest("hi"))
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			if got := mustJSON(res.Usage); got != tt.want {
				t.Fatalf("Usage = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestStreamToolCalls(t *testing.T) {
	f := newFake(t, ok(
		role(),
		tools(toolPart(0, "call_a", "read_file", "")),
		tools(toolPart(0, "", "", `{"pa`)),
		tools(toolPart(1, "call_b", "list_dir", ""), toolPart(0, "", "", `th":"a`)),
		tools(toolPart(0, "", "", `.go"}`), toolPart(1, "", "", `{}`)),
		finish("tool_calls"),
		usage(20, 10),
	))
	m := newModel(t, f, nil)

	res, deltas, err := collect(t, t.Context(), m, userRequest("read a.go"))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	want := []session.ToolCall{
		{ID: "call_a", Type: "function", Function: session.FunctionCall{Name: "read_file", Arguments: `{"path":"a.go"}`}},
		{ID: "call_b", Type: "function", Function: session.FunctionCall{Name: "list_dir", Arguments: `{}`}},
	}
	if !slices.Equal(res.ToolCalls, want) {
		t.Fatalf("ToolCalls = %+v, want %+v", res.ToolCalls, want)
	}
	if res.FinishReason != session.FinishToolCalls || res.Text != "" {
		t.Fatalf("FinishReason = %q, Text = %q; want tool_calls and no text", res.FinishReason, res.Text)
	}
	wantDeltas := []session.ToolCallDelta{
		{Index: 0, ID: "call_a", Name: "read_file"},
		{Index: 0, Arguments: `{"pa`},
		{Index: 1, ID: "call_b", Name: "list_dir"},
		{Index: 0, Arguments: `th":"a`},
		{Index: 0, Arguments: `.go"}`},
		{Index: 1, Arguments: `{}`},
	}
	var got []session.ToolCallDelta
	var rebuilt session.ResultBuilder
	for _, d := range deltas {
		if d.ToolCall == nil {
			t.Fatalf("unexpected text delta %q", d.Text)
		}
		got = append(got, *d.ToolCall)
		if err := rebuilt.Add(d); err != nil {
			t.Fatalf("ResultBuilder.Add: %v", err)
		}
	}
	if !slices.Equal(got, wantDeltas) {
		t.Fatalf("tool call deltas = %+v, want %+v", got, wantDeltas)
	}
	if !slices.Equal(rebuilt.Result().ToolCalls, want) {
		t.Fatalf("deltas rebuild %+v, want %+v", rebuilt.Result().ToolCalls, want)
	}
}

func TestStreamUpstreamIndexesAreRenumbered(t *testing.T) {
	// A server may number calls from anywhere; ours count from 0.
	f := newFake(t, ok(
		tools(toolPart(7, "call_x", "f", `{"a":`)),
		tools(toolPart(7, "", "", `1}`)),
		finish("stop"), // some servers say stop after tool calls
	))
	m := newModel(t, f, nil)
	res, deltas, err := collect(t, t.Context(), m, userRequest("x"))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	for _, d := range deltas {
		if d.ToolCall.Index != 0 {
			t.Fatalf("delta index = %d, want 0", d.ToolCall.Index)
		}
	}
	if len(res.ToolCalls) != 1 || res.ToolCalls[0].Function.Arguments != `{"a":1}` {
		t.Fatalf("ToolCalls = %+v, want one call with {\"a\":1}", res.ToolCalls)
	}
	if res.FinishReason != session.FinishToolCalls {
		t.Fatalf("FinishReason = %q, want tool_calls", res.FinishReason)
	}
}

// An id that comes after a call's first part (a server that sends the
// name first) belongs to that call: it is not a second call.
func TestStreamLateIDJoinsItsCall(t *testing.T) {
	f := newFake(t, ok(
		tools(toolPart(0, "", "f", "")),
		tools(toolPart(0, "late1", "", `{"a":1}`)),
		finish("tool_calls"),
	))
	m := newModel(t, f, nil)
	res, _, err := collect(t, t.Context(), m, userRequest("x"))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	want := []session.ToolCall{{ID: "late1", Type: "function", Function: session.FunctionCall{Name: "f", Arguments: `{"a":1}`}}}
	if !slices.Equal(res.ToolCalls, want) {
		t.Fatalf("ToolCalls = %+v, want %+v", res.ToolCalls, want)
	}
}

// Some servers (Ollama's OpenAI API) send every call at index 0, each
// with its own id: a new id at a known index is a new call.
func TestStreamRepeatedIndexWithNewIDIsANewCall(t *testing.T) {
	f := newFake(t, ok(
		tools(toolPart(0, "call_a", "write", `{"p":"a"}`)),
		tools(toolPart(0, "call_b", "write", `{"p":"b"}`)),
		finish("tool_calls"),
	))
	m := newModel(t, f, nil)
	res, deltas, err := collect(t, t.Context(), m, userRequest("x"))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if len(res.ToolCalls) != 2 || res.ToolCalls[0].ID != "call_a" || res.ToolCalls[0].Function.Arguments != `{"p":"a"}` ||
		res.ToolCalls[1].ID != "call_b" || res.ToolCalls[1].Function.Arguments != `{"p":"b"}` {
		t.Fatalf("ToolCalls = %+v, want call_a and call_b apart", res.ToolCalls)
	}
	if len(deltas) != 2 || deltas[0].ToolCall.Index != 0 || deltas[1].ToolCall.Index != 1 {
		t.Fatalf("deltas = %+v, want indexes 0 and 1", deltas)
	}
}

// Two calls of one response with the same id are two calls: the later
// one is left without an id, as a call streamed without one, for the
// session to name (a tool result must tell them apart). Its deltas and the
// result agree, as ResultBuilder reads them.
func TestStreamToolCallsWithOneID(t *testing.T) {
	f := newFake(t, ok(
		tools(toolPart(0, "call_a", "write", `{"p":"a"}`)),
		tools(toolPart(1, "call_a", "write", `{"p":"b"}`)),
		tools(toolPart(1, "call_a", "", "")),
		finish("tool_calls"),
	))
	res, deltas, err := collect(t, t.Context(), newModel(t, f, nil), userRequest("x"))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	want := []session.ToolCall{
		{ID: "call_a", Type: "function", Function: session.FunctionCall{Name: "write", Arguments: `{"p":"a"}`}},
		{ID: "", Type: "function", Function: session.FunctionCall{Name: "write", Arguments: `{"p":"b"}`}},
	}
	if !slices.Equal(res.ToolCalls, want) {
		t.Fatalf("ToolCalls = %+v, want %+v", res.ToolCalls, want)
	}
	var rebuilt session.ResultBuilder
	for _, d := range deltas {
		if err := rebuilt.Add(d); err != nil {
			t.Fatalf("ResultBuilder.Add: %v", err)
		}
	}
	if got := rebuilt.Result().ToolCalls; !slices.Equal(got, want) {
		t.Fatalf("deltas rebuild %+v, want %+v", got, want)
	}
}

// A stream that ends before the model finished (no [DONE] and no finish
// reason: a proxy closed it) is a failed turn, not a complete one; before
// any output it is retried.
func TestStreamCutOffIsAnError(t *testing.T) {
	f := newFake(t, reply{events: []string{text("Hello, I will now wr")}})
	m := newModel(t, f, nil)
	res, _, err := collect(t, t.Context(), m, userRequest("x"))
	me := modelError(t, err, session.CodeUpstreamError)
	if !strings.Contains(me.Message, "ended") || res.Text != "Hello, I will now wr" || res.FinishReason != session.FinishError {
		t.Fatalf("err %v, Text %q, FinishReason %q", me, res.Text, res.FinishReason)
	}
	if got := len(f.requests()); got != 1 {
		t.Fatalf("requests = %d, want 1: no retry after output", got)
	}
	// A finish reason without [DONE] is complete enough; so is [DONE]
	// without a finish reason; so is a finish reason after which the
	// connection is reset, or stalls, before [DONE] (the usage chunk
	// missing): the model had finished.
	for _, rp := range []reply{
		{events: []string{text("a"), finish("stop")}},
		ok(text("b")),
		{events: []string{text("c"), finish("stop")}, reset: true},
		{events: []string{text("d"), finish("stop")}, hang: true},
	} {
		f := newFake(t, rp)
		m := newModel(t, f, func(c *openai.Config) { c.IdleTimeout = 100 * time.Millisecond })
		res, _, err := collect(t, t.Context(), m, userRequest("x"))
		if err != nil || res.FinishReason != session.FinishStop {
			t.Fatalf("%+v (reset %v, hang %v): %v, finish reason %q", rp.events, rp.reset, rp.hang, err, res.FinishReason)
		}
	}
	// Without a finish reason, a reset is a failure.
	f = newFake(t, reply{events: []string{text("e")}, reset: true})
	if _, _, err := collect(t, t.Context(), newModel(t, f, func(c *openai.Config) { c.MaxRetries = -1 }), userRequest("x")); err == nil {
		t.Fatal("a stream reset before its finish reason: no error")
	}
}

func TestStreamErrorEventMidStream(t *testing.T) {
	f := newFake(t, ok(
		text("partial "),
		`{"error":{"message":"boom","type":"server_error"}}`,
	))
	m := newModel(t, f, nil)

	res, deltas, err := collect(t, t.Context(), m, userRequest("hi"))
	me := modelError(t, err, session.CodeUpstreamError)
	if !strings.Contains(me.Message, "boom") {
		t.Fatalf("Message = %q, want the upstream message boom", me.Message)
	}
	if got, want := len(f.requests()), 1; got != want {
		t.Fatalf("requests = %d, want %d: no retry after a delta", got, want)
	}
	if len(deltas) != 1 || res.Text != "partial " {
		t.Fatalf("deltas = %d, Text = %q; want the one delta before the error", len(deltas), res.Text)
	}
	if res.FinishReason != session.FinishError {
		t.Fatalf("FinishReason = %q, want error", res.FinishReason)
	}
}

func TestStreamStatusErrorsAndRetries(t *testing.T) {
	success := ok(text("fine"), finish("stop"))
	tests := []struct {
		name     string
		replies  []reply
		requests int    // requests the fake must see
		code     string // "" for success
		status   int
	}{
		{"429 then success", []reply{status(429, apiError("slow down", "requests", "rate_limit_exceeded")), success}, 2, "", 0},
		{"500 then success", []reply{status(500, apiError("oops", "server_error", "")), success}, 2, "", 0},
		{"dropped connection then success", []reply{{drop: true}, success}, 2, "", 0},
		{"empty stream then error", []reply{ok()}, 1, session.CodeUpstreamError, 0},
		{"429 forever", []reply{status(429, apiError("slow down", "requests", "rate_limit_exceeded"))}, 3, session.CodeUpstreamRateLimited, 429},
		{"429 quota exhausted", []reply{status(429, apiError("quota", "insufficient_quota", "insufficient_quota"))}, 1, session.CodeUpstreamRateLimited, 429},
		{"429 retry after an hour", []reply{{status: 429, header: map[string]string{"Retry-After": "3600"}, body: apiError("slow", "requests", "")}}, 1, session.CodeUpstreamRateLimited, 429},
		{"401", []reply{status(401, apiError("Incorrect API key provided", "invalid_request_error", "invalid_api_key"))}, 1, session.CodeUpstreamUnauthorized, 401},
		{"403", []reply{status(403, apiError("forbidden", "", ""))}, 1, session.CodeUpstreamUnauthorized, 403},
		{"400 context length by code", []reply{status(400, apiError("too long", "invalid_request_error", "context_length_exceeded"))}, 1, session.CodeContextLengthExceeded, 400},
		{"400 context length by message", []reply{status(400, apiError("This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.", "BadRequestError", ""))}, 1, session.CodeContextLengthExceeded, 400},
		{"400 other", []reply{status(400, apiError("bad temperature", "invalid_request_error", ""))}, 1, session.CodeUpstreamError, 400},
		{"404", []reply{status(404, apiError("model not found", "invalid_request_error", "model_not_found"))}, 1, session.CodeUpstreamError, 404},
		{"502 html forever", []reply{status(502, "<html>bad gateway</html>")}, 3, session.CodeUpstreamError, 502},
		{"503 retry after an hour", []reply{{status: 503, header: map[string]string{"Retry-After": "3600"}, body: apiError("overloaded", "server_error", "")}}, 1, session.CodeUpstreamError, 503},
		{"504 retry after an hour", []reply{{status: 504, header: map[string]string{"Retry-After": "3600"}}}, 1, session.CodeUpstreamTimeout, 504},
		{"504 forever", []reply{status(504, "")}, 3, session.CodeUpstreamTimeout, 504},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, tt.replies...)
			m := newModel(t, f, func(c *openai.Config) { c.MaxRetries = 2 })

			res, deltas, err := collect(t, t.Context(), m, userRequest("hi"))
			if got := len(f.requests()); got != tt.requests {
				t.Fatalf("requests = %d, want %d", got, tt.requests)
			}
			if tt.code == "" {
				if err != nil {
					t.Fatalf("Stream: %v", err)
				}
				if res.Text != "fine" || len(deltas) != 1 {
					t.Fatalf("Text = %q from %d deltas, want one result \"fine\"", res.Text, len(deltas))
				}
				return
			}
			me := modelError(t, err, tt.code)
			if me.Status != tt.status {
				t.Fatalf("Status = %d, want %d", me.Status, tt.status)
			}
			if me.Message == "" {
				t.Fatal("empty Message")
			}
			if strings.Contains(me.Error(), "sk-test") {
				t.Fatalf("error %q leaks the API key", me.Error())
			}
			if res.FinishReason != session.FinishError || len(deltas) != 0 {
				t.Fatalf("FinishReason = %q with %d deltas, want error and none", res.FinishReason, len(deltas))
			}
		})
	}
}

// An upstream's error answer is read only so far, and its message cut:
// a proxy's endless page or an 8 MiB message must not be stored in the
// turn, put in every viewer's stream and logged on each retry.
func TestStreamHugeErrorsAreBounded(t *testing.T) {
	huge := strings.Repeat("é", 4<<20) // 8 MiB, two bytes a rune
	for _, tt := range []struct {
		name  string
		reply reply
	}{
		{"json message", status(400, apiError(huge, "invalid_request_error", ""))},
		{"html page", status(400, "<html>"+huge+"</html>")},
		{"error event", ok(`{"error":{"message":"` + huge + `","type":"server_error"}}`)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(t, newFake(t, tt.reply), func(c *openai.Config) { c.MaxRetries = 0 })
			_, _, err := collect(t, t.Context(), m, userRequest("hi"))
			me := modelError(t, err, session.CodeUpstreamError)
			if len(me.Message) > 1<<10 || !utf8.ValidString(me.Message) || !strings.Contains(me.Message, "éé") {
				t.Fatalf("Message of %d bytes (valid UTF-8 %v), want a valid cut of at most 1 KiB", len(me.Message), utf8.ValidString(me.Message))
			}
		})
	}
}

// An upstream's keep-alive comments and event-stream fields are not data:
// a long stream of them neither fails the generation (go-openai allows 300
// lines without data between two chunks) nor stays in memory, and they do
// not spoil the JSON error a server sends after them.
func TestStreamSkipsCommentsAndFields(t *testing.T) {
	var raw []string
	for i := range 1000 {
		raw = append(raw, fmt.Sprintf(": keep-alive %d\n\n", i)) // each its own event
	}
	for i := range 1000 {
		raw = append(raw, fmt.Sprintf("x-unknown_field: %d\n\n", i)) // a field the format ignores
	}
	raw = append(raw, "event: completion\nid: 7\nretry: 1000\n", "data: "+text(" world")+"\n\n", "data:[DONE]\n\n")
	f := newFake(t, reply{events: []string{role(), text("hello")}, raw: raw, hang: true})
	res, _, err := collect(t, t.Context(), newModel(t, f, nil), userRequest("hi"))
	if err != nil || res.Text != "hello world" {
		t.Fatalf("Text %q, err %v; want \"hello world\" and no error", res.Text, err)
	}

	f = newFake(t, reply{events: []string{text("partial")}, raw: []string{": ping\n\n", `{"error":{"message":"boom","type":"server_error"}}` + "\n"}})
	_, _, err = collect(t, t.Context(), newModel(t, f, func(c *openai.Config) { c.MaxRetries = 0 }), userRequest("hi"))
	if me := modelError(t, err, session.CodeUpstreamError); !strings.Contains(me.Message, "boom") {
		t.Fatalf("Message = %q, want the upstream's error boom", me.Message)
	}

	// An error event followed by a keep-alive, then silence: the error
	// comes out at once (go-openai returns it at the next line), not as a
	// stall.
	f = newFake(t, reply{events: []string{text("partial")}, raw: []string{`data: {"error":{"message":"boom","type":"server_error"}}` + "\n: keep-alive\n"}, hang: true})
	_, _, err = collect(t, t.Context(), newModel(t, f, func(c *openai.Config) { c.MaxRetries = 0; c.IdleTimeout = time.Hour }), userRequest("hi"))
	if me := modelError(t, err, session.CodeUpstreamError); !strings.Contains(me.Message, "boom") {
		t.Fatalf("Message = %q, want the upstream's error boom", me.Message)
	}
}

// Lines that are neither data nor fields are bounded by their bytes (64
// KiB), not by go-openai's count of them (300 between two chunks).
func TestStreamOtherLinesUnderTheBoundPass(t *testing.T) {
	raw := []string{strings.Repeat("junk\n", 2000), "data: " + text(" world") + "\n\n", "data:[DONE]\n\n"}
	f := newFake(t, reply{events: []string{role(), text("hello")}, raw: raw, hang: true})
	res, _, err := collect(t, t.Context(), newModel(t, f, nil), userRequest("hi"))
	if err != nil || res.Text != "hello world" {
		t.Fatalf("Text %q, err %v; want \"hello world\" and no error", res.Text, err)
	}
}

// A stream's lines are bounded: one line (go-openai reads each whole) and,
// in all, the lines that are neither data nor fields.
func TestStreamLinesAreBounded(t *testing.T) {
	other := strings.Repeat("x", 40<<10) + "\n"
	for _, tt := range []struct {
		name, want string
		raw        []string
	}{
		{"a line over 32 MiB", "a line over 32 MiB", []string{"data: " + strings.Repeat("a", 33<<20)}},
		{"lines without data", "lines without data", []string{other, other, "data: " + text("more") + "\n\n"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, reply{events: []string{text("start")}, raw: tt.raw, hang: true})
			res, _, err := collect(t, t.Context(), newModel(t, f, func(c *openai.Config) { c.MaxRetries = 0 }), userRequest("hi"))
			me := modelError(t, err, session.CodeUpstreamError)
			if !strings.Contains(me.Message, tt.want) || me.Retryable {
				t.Fatalf("Message %q (retryable %v), want %q, not retryable", me.Message, me.Retryable, tt.want)
			}
			if res.Text != "start" || res.FinishReason != session.FinishError {
				t.Fatalf("Text %q, FinishReason %q; want the chunk before, error", res.Text, res.FinishReason)
			}
		})
	}
}

func TestStreamConnectionRefused(t *testing.T) {
	f := newFake(t, ok())
	m := newModel(t, f, func(c *openai.Config) { c.MaxRetries = -1 })
	f.srv.Close()

	_, _, err := collect(t, t.Context(), m, userRequest("hi"))
	me := modelError(t, err, session.CodeUpstreamError)
	if !me.Retryable {
		t.Fatalf("Retryable = false, want true for a refused connection")
	}
}

func TestStreamStallFailsWithoutRetry(t *testing.T) {
	f := newFake(t, reply{events: []string{text("one ")}, hang: true})
	m := newModel(t, f, func(c *openai.Config) { c.IdleTimeout = 50 * time.Millisecond })

	res, _, err := collect(t, t.Context(), m, userRequest("hi"))
	modelError(t, err, session.CodeUpstreamTimeout)
	if got, want := len(f.requests()), 1; got != want {
		t.Fatalf("requests = %d, want %d: no retry after a delta", got, want)
	}
	if res.Text != "one " || res.FinishReason != session.FinishError {
		t.Fatalf("Text = %q, FinishReason = %q; want the partial text and error", res.Text, res.FinishReason)
	}
}

func TestStreamFirstTokenTimeoutRetries(t *testing.T) {
	f := newFake(t, reply{hang: true})
	m := newModel(t, f, func(c *openai.Config) {
		c.FirstTokenTimeout = 20 * time.Millisecond
		c.MaxRetries = 1
	})

	_, _, err := collect(t, t.Context(), m, userRequest("hi"))
	modelError(t, err, session.CodeUpstreamTimeout)
	if got, want := len(f.requests()), 2; got != want {
		t.Fatalf("requests = %d, want %d", got, want)
	}
}

func TestStreamWholeRequestTimeout(t *testing.T) {
	f := newFake(t, reply{hang: true})
	m := newModel(t, f, func(c *openai.Config) {
		c.Timeout = 30 * time.Millisecond
		c.FirstTokenTimeout = -1
	})

	_, _, err := collect(t, t.Context(), m, userRequest("hi"))
	modelError(t, err, session.CodeUpstreamTimeout)
	if got, want := len(f.requests()), 1; got != want {
		t.Fatalf("requests = %d, want %d", got, want)
	}
}

func TestStreamCancel(t *testing.T) {
	f := newFake(t, reply{events: []string{text("one "), text("two ")}, hang: true})
	m := newModel(t, f, nil)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n := 0
	res, err := m.Stream(ctx, userRequest("hi"), func(d session.Delta) error {
		n++
		if n == 2 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if res.Text != "one two " || res.FinishReason != session.FinishCancelled {
		t.Fatalf("Text = %q, FinishReason = %q; want partial text and cancelled", res.Text, res.FinishReason)
	}
}

func TestStreamEmitError(t *testing.T) {
	f := newFake(t, ok(text("a"), text("b"), finish("stop")))
	m := newModel(t, f, nil)
	errStop := errors.New("viewer gone")

	res, err := m.Stream(t.Context(), userRequest("hi"), func(session.Delta) error { return errStop })
	if !errors.Is(err, errStop) {
		t.Fatalf("err = %v, want the error of emit", err)
	}
	if res.Text != "a" {
		t.Fatalf("Text = %q, want the delta handed to emit", res.Text)
	}
	if got, want := len(f.requests()), 1; got != want {
		t.Fatalf("requests = %d, want %d", got, want)
	}
}

func TestRequestHeaders(t *testing.T) {
	f := newFake(t, ok(text("x"), finish("stop")))
	m := newModel(t, f, func(c *openai.Config) {
		c.Headers = map[string]string{"X-Extra": "yes", "openai-organization": "org-1"}
	})
	if _, _, err := collect(t, t.Context(), m, userRequest("hi")); err != nil {
		t.Fatalf("Stream: %v", err)
	}
	h := f.requests()[0].header
	for k, want := range map[string]string{
		"Authorization":       "Bearer sk-test",
		"X-Extra":             "yes",
		"Openai-Organization": "org-1",
		"Accept":              "text/event-stream",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
}

func TestRequestBody(t *testing.T) {
	f := newFake(t, ok(text("x"), finish("stop")))
	m := newModel(t, f, func(c *openai.Config) { c.Model = "" })
	req := &session.ModelRequest{
		Model:     "served-model",
		MaxTokens: 100,
		Messages: []session.Message{
			{Role: "system", Content: "be brief"},
			{Role: "user", Parts: json.RawMessage(`[{"type":"text","text":"read"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]`)},
			{Role: "assistant", ToolCalls: []session.ToolCall{{ID: "call_1", Type: "function", Function: session.FunctionCall{Name: "read_file", Arguments: `{"path":"a.go"}`}}}},
			{Role: "tool", ToolCallID: "call_1", Content: "package a"},
		},
		Tools: []session.Tool{
			{Name: "read_file", Description: "Read a file", Parameters: json.RawMessage(`{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}`)},
			{Name: "now"},
		},
	}
	if _, _, err := collect(t, t.Context(), m, req); err != nil {
		t.Fatalf("Stream: %v", err)
	}

	var body struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		MaxTokens     int    `json:"max_tokens"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
		Messages []struct {
			Role       string          `json:"role"`
			Content    json.RawMessage `json:"content"`
			ToolCallID string          `json:"tool_call_id"`
			ToolCalls  []struct {
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"messages"`
		Tools []struct {
			Type     string `json:"type"`
			Function struct {
				Name        string          `json:"name"`
				Description string          `json:"description"`
				Parameters  json.RawMessage `json:"parameters"`
			} `json:"function"`
		} `json:"tools"`
	}
	raw := f.requests()[0].body
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("decode request body %s: %v", raw, err)
	}
	if body.Model != "served-model" || !body.Stream || !body.StreamOptions.IncludeUsage || body.MaxTokens != 100 {
		t.Fatalf("model %q stream %v include_usage %v max_tokens %d in %s",
			body.Model, body.Stream, body.StreamOptions.IncludeUsage, body.MaxTokens, raw)
	}
	if len(body.Messages) != 4 {
		t.Fatalf("messages = %d, want 4 in %s", len(body.Messages), raw)
	}
	if got, want := string(body.Messages[0].Content), `"be brief"`; got != want {
		t.Errorf("system content = %s, want %s", got, want)
	}
	var parts []map[string]any
	if err := json.Unmarshal(body.Messages[1].Content, &parts); err != nil || len(parts) != 2 || parts[0]["text"] != "read" || parts[1]["type"] != "image_url" {
		t.Errorf("user content = %s, want the two parts", body.Messages[1].Content)
	}
	a := body.Messages[2]
	if a.Role != "assistant" || len(a.ToolCalls) != 1 || a.ToolCalls[0].ID != "call_1" || a.ToolCalls[0].Type != "function" ||
		a.ToolCalls[0].Function.Name != "read_file" || a.ToolCalls[0].Function.Arguments != `{"path":"a.go"}` {
		t.Errorf("assistant message = %+v, want its tool call", a)
	}
	if tm := body.Messages[3]; tm.Role != "tool" || tm.ToolCallID != "call_1" || string(tm.Content) != `"package a"` {
		t.Errorf("tool message = %+v, want the result of call_1", tm)
	}
	if len(body.Tools) != 2 || body.Tools[0].Type != "function" || body.Tools[0].Function.Name != "read_file" ||
		body.Tools[0].Function.Description != "Read a file" || !strings.Contains(string(body.Tools[0].Function.Parameters), `"required":["path"]`) {
		t.Errorf("tools = %+v, want read_file with its schema", body.Tools)
	}
	if len(body.Tools) == 2 && !strings.Contains(string(body.Tools[1].Function.Parameters), `"type":"object"`) {
		t.Errorf("tool without parameters sent %s, want an empty object schema", body.Tools[1].Function.Parameters)
	}
}

func TestRequestInvalid(t *testing.T) {
	tests := []struct {
		name string
		edit func(*openai.Config)
		req  *session.ModelRequest
	}{
		{"no model name", func(c *openai.Config) { c.Model = "" }, userRequest("hi")},
		{"bad parts", nil, &session.ModelRequest{Messages: []session.Message{{Role: "user", Parts: json.RawMessage(`{"not":"an array"}`)}}}},
		{"bad tool schema", nil, &session.ModelRequest{Messages: []session.Message{{Role: "user", Content: "x"}}, Tools: []session.Tool{{Name: "f", Parameters: json.RawMessage(`{`)}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, ok())
			m := newModel(t, f, tt.edit)
			_, _, err := collect(t, t.Context(), m, tt.req)
			modelError(t, err, session.CodeInvalidRequest)
			if n := len(f.requests()); n != 0 {
				t.Fatalf("requests = %d, want none", n)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []openai.Config{
		{BaseURL: "localhost:8000/v1"},
		{BaseURL: "ftp://example.com/v1"},
		{BaseURL: "http://[::1"},
		{Headers: map[string]string{"Bad Name": "v"}},
		{Headers: map[string]string{"X-Ok": "line\r\nbreak"}},
	} {
		if _, err := openai.New(cfg); err == nil {
			t.Errorf("New(%+v) = nil error, want one", cfg)
		}
	}
	if _, err := openai.New(openai.Config{}); err != nil {
		t.Errorf("New(zero Config): %v, want the defaults", err)
	}
}

// A server that answers 200 with a JSON error object instead of a stream
// (a proxy, a misconfigured server) is understood whether or not its body
// ends with a newline: the last line of a body was lost when it had none,
// and the turn failed with "stream ended without any chunk" instead of the
// upstream's message. The same goes for a pretty-printed object, whose
// closing brace is its last line, and for an error event.
func TestStreamJSONErrorBodyWithoutNewline(t *testing.T) {
	body := apiError("The model `gpt-9` does not exist", "invalid_request_error", "model_not_found")
	pretty := "{\n  \"error\": {\n    \"message\": \"The model `gpt-9` does not exist\",\n    \"type\": \"invalid_request_error\"\n  }\n}"
	stream := func(t *testing.T, raw string) *session.ModelError {
		t.Helper()
		f := newFake(t, reply{raw: []string{raw}})
		_, _, err := collect(t, t.Context(), newModel(t, f, nil), userRequest("hi"))
		me := modelError(t, err, session.CodeUpstreamError)
		if got := len(f.requests()); got != 1 {
			t.Fatalf("requests = %d, want 1", got)
		}
		return me
	}
	want := stream(t, body+"\n")
	if !strings.Contains(want.Message, "does not exist") || want.Retryable {
		t.Fatalf("with a newline: Message %q (retryable %v), want the upstream's message, not retryable", want.Message, want.Retryable)
	}
	for _, tt := range []struct{ name, raw string }{
		{"no newline", body},
		{"pretty, no newline", pretty},
		{"error event, no newline", "data: " + body},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := stream(t, tt.raw); *got != *want {
				t.Fatalf("error %+v, want %+v as with a newline", got, want)
			}
		})
	}
}

// The event stream format ends a line with "\r\n", "\n" or a lone "\r":
// a stream with lone "\r" endings was read as one long line, and lost. A
// "\r\n" split across two writes is one line ending, not two.
func TestStreamLineEndings(t *testing.T) {
	for _, tt := range []struct {
		name string
		raw  []string
	}{
		{"cr", []string{"data: " + role() + "\r\rdata: " + text("Hello, ") + "\r\r: ping\r\r", "data: " + text("world") + "\r\rdata: " + finish("stop") + "\r\rdata: [DONE]\r\r"}},
		{"crlf split", []string{"data: " + role() + "\r", "\n\r", "\ndata: " + text("Hello, ") + "\r\n\r\n", "data: " + text("world") + "\r", "\n\r\ndata: [DONE]\r", "\n\r\n"}},
		{"mixed", []string{"data: " + role() + "\n\ndata: " + text("Hello, ") + "\r\n\r\ndata: " + text("world") + "\r\rdata: [DONE]\r\n\n"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, reply{raw: tt.raw})
			res, deltas, err := collect(t, t.Context(), newModel(t, f, func(c *openai.Config) { c.MaxRetries = -1 }), userRequest("hi"))
			if err != nil || res.Text != "Hello, world" || len(deltas) != 2 || res.FinishReason != session.FinishStop {
				t.Fatalf("Text %q from %d deltas, FinishReason %q, err %v; want \"Hello, world\" from 2, stop", res.Text, len(deltas), res.FinishReason, err)
			}
		})
	}
}

// A Retry-After is honoured on any answer that is retried, not only on a
// 429: a 503 (an overloaded or starting server) says when to come back
// too. The wait is the longer of it and the backoff.
func TestStreamRetryAfterOn503(t *testing.T) {
	f := newFake(t,
		reply{status: 503, header: map[string]string{"Retry-After": "1"}, body: apiError("loading model", "server_error", "")},
		ok(text("fine"), finish("stop")))
	var waits []string
	h := &recordHandler{Handler: slog.NewTextHandler(testWriter{t}, nil), record: func(r slog.Record) {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "backoff" {
				waits = append(waits, a.Value.String())
			}
			return true
		})
	}}
	m := newModel(t, f, func(c *openai.Config) { c.Logger = slog.New(h) })
	res, _, err := collect(t, t.Context(), m, userRequest("hi"))
	if err != nil || res.Text != "fine" {
		t.Fatalf("Text %q, err %v; want \"fine\" after one retry", res.Text, err)
	}
	if want := []string{"1s"}; !slices.Equal(waits, want) {
		t.Fatalf("waits before retries = %q, want %q (the Retry-After)", waits, want)
	}
}

// recordHandler passes every record to record, then to Handler.
type recordHandler struct {
	slog.Handler
	record func(slog.Record)
}

func (h *recordHandler) Handle(ctx context.Context, r slog.Record) error {
	h.record(r)
	return h.Handler.Handle(ctx, r)
}

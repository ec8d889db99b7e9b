package session

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Model streams one completion. Implementations are safe for concurrent use.
//
// The built-in implementation is [OfflineModel]; OpenAI-compatible endpoints
// are reached through the adapter in sessiond/session/openai.
type Model interface {
	// Stream runs one completion of req, calling emit for each delta in order as
	// it arrives (never concurrently). It returns the assembled result. If emit
	// returns an error, Stream stops and returns that error. When ctx is
	// cancelled it returns promptly with the partial result and ctx's error.
	//
	// The result is never nil, even with an error: it then holds what was
	// assembled from the deltas emitted so far, with FinishReason "cancelled"
	// (ctx was cancelled) or "error". A provider failure is a *ModelError.
	// Stream does not modify req and does not retain emit after it returns.
	Stream(ctx context.Context, req *ModelRequest, emit func(Delta) error) (*ModelResult, error)
}

// ModelRequest is the input of one completion. A Model only reads it.
type ModelRequest struct {
	Model     string // the upstream model name (adapters may ignore)
	Messages  []Message
	Tools     []Tool // optional function tools
	MaxTokens int    // 0 = provider default
}

// Message is one turn of the conversation as a model sees it.
type Message struct {
	Role    string // system | user | assistant | tool
	Content string // plain text
	// Parts is an optional content parts array as JSON
	// ([{"type":"text","text":"…"}]); when set it takes precedence over Content.
	Parts      json.RawMessage
	ToolCalls  []ToolCall // assistant only: the calls the model made
	ToolCallID string     // tool only: the call this message answers
}

// Text returns the message's plain text: the text parts of Parts joined with
// newlines when Parts holds a non-empty array, otherwise Content. Parts that
// are not text (images, …) are skipped; Parts that do not decode as a parts
// array are ignored and Content is returned.
func (m Message) Text() string {
	if len(m.Parts) == 0 {
		return m.Content
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Parts, &parts); err != nil || len(parts) == 0 {
		return m.Content
	}
	var b strings.Builder
	n := 0
	for _, p := range parts {
		if p.Type != "text" {
			continue
		}
		if n > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.Text)
		n++
	}
	return b.String()
}

// Tool describes a function the model may call.
type Tool struct {
	Name        string
	Description string
	Parameters  json.RawMessage // JSON Schema of the arguments object; empty = no parameters
}

// ToolCall is one complete call of a function tool made by the model.
type ToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"` // "function"
	Function FunctionCall `json:"function"`
}

// FunctionCall names the function of a ToolCall and carries its arguments.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"` // a JSON object, as text
}

// Delta is one piece of streamed output: text, or a part of a tool call.
// Exactly one of Text and ToolCall is set.
type Delta struct {
	Text     string
	ToolCall *ToolCallDelta
}

// ToolCallDelta is a part of a tool call. The first part of a call carries
// its ID and Name; every part carries a piece of the arguments to append.
// Index numbers the calls of one result 0, 1, 2, … in order of first
// appearance, so a new call always takes the next free index.
//
// A call's ID names it to the tool result that answers it, so the calls of
// one result need distinct IDs: a Model passes on those of its provider,
// and the session gives a call without one, or with the ID of an earlier
// call (see ResultBuilder), an ID of its own when the turn is committed.
type ToolCallDelta struct {
	Index     int    `json:"index"`
	ID        string `json:"id,omitempty"`
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// Usage counts the tokens of one completion.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Finish reasons of a ModelResult.
const (
	FinishStop          = "stop"
	FinishLength        = "length"
	FinishToolCalls     = "tool_calls"
	FinishContentFilter = "content_filter"
	FinishCancelled     = "cancelled"
	FinishError         = "error"
)

// ModelResult is the assembled output of one completion.
type ModelResult struct {
	Text      string
	ToolCalls []ToolCall // complete, assembled from deltas
	// Usage is what the provider reported; nil when it reported none
	// (the turn's usage is then null, not zeros that read as a count).
	Usage        *Usage
	FinishReason string // stop | length | tool_calls | content_filter | cancelled | error
}

// ResultBuilder assembles the Text and ToolCalls of a ModelResult from
// deltas, in linear time however long the output. Models use it to build
// their result; callers can use it to rebuild a partial result from a stored
// chunk log. The zero value is ready to use. It is not safe for concurrent
// use.
type ResultBuilder struct {
	text  strings.Builder
	calls []*callBuilder
	ids   map[string]bool // the IDs the calls have
}

type callBuilder struct {
	id, name string
	args     strings.Builder
}

// Add adds d: text is appended, and a tool call part is merged into call
// number d.ToolCall.Index (ID is kept from the first part that has one,
// unless an earlier call has that ID already: two calls with one ID could
// not be told apart by their results, and the later is left without, as a
// call streamed without an ID; Arguments are appended, and so is a Name
// part, unless it is the name so far again or that name and more: a server
// may split a name, repeat it in every part, or send it growing). A new
// call must take the next index, the number of calls so far; Add returns
// an error for any other index and then adds nothing.
func (b *ResultBuilder) Add(d Delta) error {
	tc := d.ToolCall
	if tc != nil && (tc.Index < 0 || tc.Index > len(b.calls)) {
		return fmt.Errorf("add tool call delta: index %d out of order, want at most %d", tc.Index, len(b.calls))
	}
	b.text.WriteString(d.Text)
	if tc == nil {
		return nil
	}
	if tc.Index == len(b.calls) {
		b.calls = append(b.calls, new(callBuilder))
	}
	call := b.calls[tc.Index]
	if b.takesID(tc) {
		call.id = tc.ID
		if b.ids == nil {
			b.ids = make(map[string]bool)
		}
		b.ids[tc.ID] = true
	}
	call.name = mergeName(call.name, tc.Name)
	call.args.WriteString(tc.Arguments)
	return nil
}

// mergeName returns a tool call's name, have so far, with part added:
// upstreams send the name whole once, whole in every part, or in pieces.
// The result always begins with have.
func mergeName(have, part string) string {
	switch {
	case strings.HasPrefix(part, have):
		return part // the first part, the name again, or more of it
	case part != "":
		return have + part
	}
	return have
}

// name returns the name of tool call index so far: "" for a call not
// begun.
func (b *ResultBuilder) name(index int) string {
	if index < 0 || index >= len(b.calls) {
		return ""
	}
	return b.calls[index].name
}

// takesID tells whether Add takes tc.ID for the call of tc.Index: one
// that has no ID yet, when no other call has that one.
func (b *ResultBuilder) takesID(tc *ToolCallDelta) bool {
	if tc.ID == "" || b.ids[tc.ID] {
		return false
	}
	return tc.Index >= len(b.calls) || b.calls[tc.Index].id == ""
}

// Result returns a new ModelResult holding the text and tool calls added so
// far (ToolCalls is nil when there are none); the caller sets Usage and
// FinishReason. The builder stays usable.
func (b *ResultBuilder) Result() *ModelResult {
	r := &ModelResult{Text: b.text.String()}
	for _, c := range b.calls {
		r.ToolCalls = append(r.ToolCalls, ToolCall{
			ID:       c.id,
			Type:     "function",
			Function: FunctionCall{Name: c.name, Arguments: c.args.String()},
		})
	}
	return r
}

// Stable ModelError codes for provider failures. The offline model may also
// fail with any code it is asked to (see [OfflineModel]).
const (
	CodeUpstreamError         = "upstream_error"
	CodeUpstreamTimeout       = "upstream_timeout"
	CodeUpstreamRateLimited   = "upstream_rate_limited"
	CodeUpstreamUnauthorized  = "upstream_unauthorized"
	CodeContextLengthExceeded = "context_length_exceeded"
	CodeInvalidRequest        = "invalid_request"
)

// CodeSaveFailed is the error code of a turn whose output was produced but
// could not be saved: the turn is committed failed and empty, so that the
// session goes on.
const CodeSaveFailed = "save_failed"

// CodeDeleted is the error code of a generation its session's deletion
// ended, whether it was running or queued: it ends cancelled.
const CodeDeleted = "deleted"

// deletedError is the error of a generation its session's deletion ended.
func deletedError() *ErrorInfo {
	return &ErrorInfo{Code: CodeDeleted, Message: "the session was deleted"}
}

// ModelError is returned by a Model when the provider failed; Code is a stable
// snake_case code surfaced to API clients (e.g. "upstream_error",
// "upstream_timeout", "upstream_rate_limited", "upstream_unauthorized",
// "context_length_exceeded", or the code the offline model was asked to fail with).
// Message is human text, safe to show to the client (it never holds the API key).
type ModelError struct {
	Code      string
	Message   string
	Status    int  // upstream HTTP status, 0 if none
	Retryable bool // the same request may succeed later
}

// Error returns "session: CODE (status N): MESSAGE", leaving out the parts
// that are empty.
func (e *ModelError) Error() string {
	var b strings.Builder
	b.WriteString("session: model error ")
	b.WriteString(e.Code)
	if e.Status != 0 {
		b.WriteString(" (status ")
		b.WriteString(strconv.Itoa(e.Status))
		b.WriteByte(')')
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// EstimateTokens estimates the number of tokens of s without a tokenizer:
// one token per four bytes, rounded up, so 0 for "" and at least 1 otherwise.
// It is meant for budgeting a context window, where overestimating a little
// is safer than a real tokenizer's exact count for one model.
func EstimateTokens(s string) int {
	return (len(s) + 3) / 4
}

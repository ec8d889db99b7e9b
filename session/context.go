package session

import (
	"context"
	"encoding/json"
	"slices"

	"sessiond/objects"
)

// DefaultContextTokens is the context budget of a model whose ModelInfo
// gives none.
const DefaultContextTokens = 128000

// contextReserve is what assembly leaves free for the reply.
const contextReserve = 1024

// assembleContext returns the messages of the branch ending at leaf, oldest
// first, after the system prompt, cut to budget tokens by dropping the
// oldest turns. The newest turn is kept even when the system prompt alone
// fills the budget, and when it is a tool result, so is the assistant turn
// whose call it answers, with the results between them that the budget
// takes (looked for through at most maxUnanswered results). Failed
// assistant turns with no output are skipped, and tool calls are paired as
// pairToolCalls says.
func (o *sessionObj) assembleContext(ctx context.Context, tx *objects.Tx, system string, leaf int64, budget int) ([]Message, error) {
	if budget <= 0 {
		budget = DefaultContextTokens
	}
	budget = max(budget-contextReserve, budget/2)
	used := 0
	if system != "" {
		used = EstimateTokens(system)
	}
	var kept []Message // newest first
	// anchored: a turn other than a tool result is kept. Until then the
	// budget does not apply: the newest turn, and the call it answers.
	anchored := false
	skipped := 0
	id := leaf
	const page = 64
	for id > 0 && (used < budget || !anchored) {
		// Read no more than the budget left can take (a token is about
		// four bytes): a page of 32 MiB turns must not be read for a few
		// KiB of context. The first turn of a page is always read.
		turns, _, err := o.branchTurns(ctx, tx, id, 0, page, max(budget-used, 0)*4+1)
		if err != nil {
			return nil, err
		}
		if len(turns) == 0 {
			break
		}
		full := false
		for _, t := range turns {
			m := turnMessage(t)
			if t.Role == RoleAssistant && m.Text() == "" && len(m.ToolCalls) == 0 {
				continue
			}
			cost := contentTokens(m) + 4
			for _, c := range m.ToolCalls {
				cost += EstimateTokens(c.Function.Name + c.Function.Arguments)
			}
			if used+cost > budget && anchored {
				full = true
				break
			}
			if used+cost > budget && len(kept) > 0 && m.Role == RoleTool {
				// A result between the newest turn and the call it
				// answers that the budget cannot take: left out (its
				// call with it, see pairToolCalls), read one at a time.
				if skipped++; skipped > maxUnanswered {
					full = true
					break
				}
				continue
			}
			used += cost
			kept = append(kept, m)
			anchored = anchored || m.Role != RoleTool
		}
		last := turns[len(turns)-1]
		if full || last.ParentID == nil {
			break
		}
		id = *last.ParentID
	}
	slices.Reverse(kept)
	out := make([]Message, 0, len(kept)+1)
	if system != "" {
		out = append(out, Message{Role: RoleSystem, Content: system})
	}
	return append(out, pairToolCalls(kept)...), nil
}

// pairToolCalls returns msgs (oldest first) as chat models accept tool
// calls: an assistant message's calls each answered by a tool message in
// the run of tool messages right after it. A call with no answer there (its
// turn was cancelled while it made the call, or a user turn came instead of
// its result) is left out of its message, and the message with it when it
// holds nothing else; a tool message that answers no call of the assistant
// message before its run (or a call answered already) is left out.
func pairToolCalls(msgs []Message) []Message {
	out := make([]Message, 0, len(msgs))
	for i := 0; i < len(msgs); {
		m := msgs[i]
		j := i + 1
		for j < len(msgs) && msgs[j].Role == RoleTool {
			j++
		}
		results := msgs[i+1 : j]
		if m.Role == RoleTool { // a run of results with no call before it
			i = j
			continue
		}
		if m.Role != RoleAssistant || len(m.ToolCalls) == 0 {
			out = append(out, m)
			i = j
			continue
		}
		answered := map[string]bool{}
		for _, r := range results {
			answered[r.ToolCallID] = true
		}
		calls := make([]ToolCall, 0, len(m.ToolCalls))
		open := map[string]bool{}
		for _, c := range m.ToolCalls {
			if answered[c.ID] && !open[c.ID] {
				calls = append(calls, c)
				open[c.ID] = true
			}
		}
		m.ToolCalls = nil
		if len(calls) > 0 {
			m.ToolCalls = calls
		}
		if len(calls) > 0 || m.Text() != "" {
			out = append(out, m)
		}
		for _, r := range results {
			if open[r.ToolCallID] {
				out = append(out, r)
				delete(open, r.ToolCallID)
			}
		}
		i = j
	}
	return out
}

// callCut reports whether a tool call of an assistant turn with status
// and finishReason was cut short: the turn ended otherwise than complete
// (cancelled, failed, interrupted) or at the token limit, and the call's
// arguments are not JSON (half written). A cut call takes no result (post
// refuses one) and reaches no model. (A complete turn's calls are taken
// as the model made them, bad JSON and all: a client may answer one with
// an error for the model to correct.)
func callCut(status string, finishReason *string, c ToolCall) bool {
	ended := status == TurnComplete && (finishReason == nil || *finishReason != FinishLength)
	return !ended && !json.Valid([]byte(c.Function.Arguments))
}

// turnMessage converts a stored turn to what a model sees: an assistant
// turn's calls but those cut short (callCut).
func turnMessage(t Turn) Message {
	m := Message{Role: t.Role, ToolCalls: t.ToolCalls}
	if cut := func(c ToolCall) bool { return callCut(t.Status, t.FinishReason, c) }; t.Role == RoleAssistant && slices.ContainsFunc(m.ToolCalls, cut) {
		m.ToolCalls = slices.DeleteFunc(slices.Clone(m.ToolCalls), cut) // the turn's own slice stays whole
	}
	if t.ToolCallID != nil {
		m.ToolCallID = *t.ToolCallID
	}
	var s string
	if err := json.Unmarshal(t.Content, &s); err == nil {
		m.Content = s
	} else {
		m.Parts = t.Content
	}
	return m
}

// imagePartTokens is what an image content part counts for in the budget:
// about what a vision model charges for a detailed image, whatever the size
// of its URL (a data URL of megabytes is not read as text).
const imagePartTokens = 1000

// contentTokens estimates the tokens of m's content: its text, and for
// content parts each text part's text, imagePartTokens for an image, and
// any other part (audio, a file) by the size of its JSON, as text would
// count. Counting only the text let turns with large non-text parts pass
// any budget whole.
func contentTokens(m Message) int {
	if len(m.Parts) == 0 {
		return EstimateTokens(m.Content)
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(m.Parts, &parts); err != nil {
		return EstimateTokens(string(m.Parts))
	}
	n := 0
	for _, raw := range parts {
		var p struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		json.Unmarshal(raw, &p)
		switch p.Type {
		case "text":
			n += EstimateTokens(p.Text)
		case "image_url", "input_image":
			n += imagePartTokens
		default:
			n += EstimateTokens(string(raw))
		}
	}
	return n
}

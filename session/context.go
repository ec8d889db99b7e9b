package session

import (
	"context"
	"encoding/json"

	"sessiond/objects"
)

// DefaultContextTokens is the context budget of a model whose ModelInfo
// gives none.
const DefaultContextTokens = 128000

// contextReserve is what assembly leaves free for the reply.
const contextReserve = 1024

// assembleContext returns the messages of the branch ending at leaf, oldest
// first, after the system prompt, cut to budget tokens by dropping the
// oldest turns; the newest turn is kept even when the system prompt alone
// fills the budget. A tool result is never kept without the assistant turn
// whose call it answers. Failed assistant turns with no output are skipped.
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
	id := leaf
	const page = 64
	for id > 0 && (used < budget || len(kept) == 0) { // the newest turn, always
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
			cost := EstimateTokens(m.Text()) + 4
			for _, c := range m.ToolCalls {
				cost += EstimateTokens(c.Function.Name + c.Function.Arguments)
			}
			if used+cost > budget && len(kept) > 0 {
				full = true
				break
			}
			used += cost
			kept = append(kept, m)
		}
		last := turns[len(turns)-1]
		if full || last.ParentID == nil {
			break
		}
		id = *last.ParentID
	}
	// The oldest kept turns must not be tool results cut off from their call.
	for len(kept) > 0 && kept[len(kept)-1].Role == RoleTool {
		kept = kept[:len(kept)-1]
	}
	out := make([]Message, 0, len(kept)+1)
	if system != "" {
		out = append(out, Message{Role: RoleSystem, Content: system})
	}
	for i := len(kept) - 1; i >= 0; i-- {
		out = append(out, kept[i])
	}
	return out, nil
}

// turnMessage converts a stored turn to what a model sees.
func turnMessage(t Turn) Message {
	m := Message{Role: t.Role, ToolCalls: t.ToolCalls}
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

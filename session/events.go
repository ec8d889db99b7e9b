package session

import (
	"context"
	"encoding/json"
	"time"

	"sessiond/objects"
)

// Sessions publish their lifecycle on these subjects (docs/events.md), with
// <id> the session id:
//
//	sessiond.session.<id>.created
//	sessiond.session.<id>.turn                  a committed turn (user, tool or assistant)
//	sessiond.session.<id>.generation.started
//	sessiond.session.<id>.generation.done       done, cancelled or interrupted: see status
//	sessiond.session.<id>.generation.failed
//	sessiond.session.<id>.deleted
const subjectPrefix = "sessiond.session."

// maxEventContent is the largest turn content carried in a turn event;
// larger content is left out (content_bytes says how much there is).
const maxEventContent = 16 << 10

// turnEvent is a turn as events carry it.
type turnEvent struct {
	ID           int64           `json:"id"`
	ParentID     *int64          `json:"parent_id"`
	Role         string          `json:"role"`
	Status       string          `json:"status"`
	GenerationID *string         `json:"generation_id,omitempty"`
	ContentBytes int             `json:"content_bytes"`
	Content      json.RawMessage `json:"content,omitempty"`
	ToolCalls    []ToolCall      `json:"tool_calls,omitempty"`
	Preview      string          `json:"preview"`
	CreatedAt    time.Time       `json:"created_at"`
}

func newTurnEvent(t Turn) turnEvent {
	e := turnEvent{ID: t.ID, ParentID: t.ParentID, Role: t.Role, Status: t.Status, GenerationID: t.GenerationID,
		ContentBytes: len(t.Content), ToolCalls: t.ToolCalls, Preview: preview(t), CreatedAt: t.CreatedAt}
	if len(t.Content) <= maxEventContent {
		e.Content = t.Content
	}
	return e
}

// publish records a lifecycle event of the session in its outbox (the same
// transaction as the change it reports). A no-op when events are off.
func (o *sessionObj) publish(ctx context.Context, tx *objects.Tx, m *meta, kind string, fields map[string]any) error {
	if !o.svc.Events {
		return nil
	}
	fields["session_id"] = m.ID
	fields["owner"] = m.Owner
	fields["at"] = nowMillis()
	return record(ctx, tx, m, kind, fields)
}

// record encodes body and puts it in the session's outbox as a kind event.
func record(ctx context.Context, tx *objects.Tx, m *meta, kind string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return tx.Publish(ctx, subjectPrefix+m.ID+"."+kind, b)
}

// turnEventMsg is a turn event's body: what publish makes of
// {"turn": ...}, with the fields in the same (sorted) order, without a
// map's reflection on every posted turn.
type turnEventMsg struct {
	At        time.Time `json:"at"`
	Owner     string    `json:"owner"`
	SessionID string    `json:"session_id"`
	Turn      turnEvent `json:"turn"`
}

// publishTurn records the event of a committed turn (see publish).
func (o *sessionObj) publishTurn(ctx context.Context, tx *objects.Tx, m *meta, t Turn) error {
	if !o.svc.Events {
		return nil
	}
	return record(ctx, tx, m, "turn", turnEventMsg{At: nowMillis(), Owner: m.Owner, SessionID: m.ID, Turn: newTurnEvent(t)})
}

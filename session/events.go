package session

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"sessiond/objects"
	"sessiond/streaming/jsonenc"
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

// MinBusEventBytes is the least an event bus must carry for the events
// sessions publish: a turn event holds up to maxEventContent of content
// and as much of tool calls, with its ids, times and preview besides.
// A bus that carries less would refuse turns and lose generations' output
// (their final commit publishes the turn): sessiond refuses to start.
const MinBusEventBytes = 64 << 10

// publish records a lifecycle event of the session in its outbox (the same
// transaction as the change it reports). A no-op when events are off.
func (o *sessionObj) publish(ctx context.Context, tx *objects.Tx, m *meta, kind string, fields map[string]any) error {
	if !o.svc.Events {
		return nil
	}
	fields["session_id"] = m.ID
	fields["owner"] = m.Owner
	fields["at"] = Timestamp{nowMillis()}
	return record(ctx, tx, m, kind, fields)
}

// record encodes body and puts it in the session's outbox as a kind event.
func record(ctx context.Context, tx *objects.Tx, m *meta, kind string, body any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as appendTurnEvent writes the turn events
	if err := enc.Encode(body); err != nil {
		return fmt.Errorf("encode %s event: %w", kind, err)
	}
	return tx.Publish(ctx, subjectPrefix+m.ID+"."+kind, bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

// endEventKind is the event of a generation's end with status:
// generation.failed for a failed one, generation.done for any other.
func endEventKind(status string) string {
	if status == GenFailed {
		return "generation.failed"
	}
	return "generation.done"
}

// publishGenerationEnd records the generation.done event of a generation
// that ends without a final turn from its model: cancelled while queued,
// superseded by a later one, failed to start, or interrupted by a restart. Consumers waiting
// for a generation's end get one for every generation. turnID is 0 when
// it had no turn.
func (o *sessionObj) publishGenerationEnd(ctx context.Context, tx *objects.Tx, m *meta, gid string, turnID int64, status string, e *ErrorInfo) error {
	return o.publish(ctx, tx, m, endEventKind(status), map[string]any{"generation_id": gid, "turn_id": turnID, "status": status,
		"finish_reason": status, "usage": nil, "error": e})
}

// cancelQueued cancels generations that wait in the queue (gid, or every
// one when gid is ""), with their generation.done events; e is their error
// (nil for a client's cancel). It returns how many it cancelled.
func (o *sessionObj) cancelQueued(ctx context.Context, tx *objects.Tx, gid string, e *ErrorInfo, now int64) (int, error) {
	return o.endQueued(ctx, tx, gid, GenCancelled, e, now)
}

// endQueued ends generations that wait in the queue (gid, or every queued
// one when gid is ""), with status (GenCancelled, GenFailed or GenInterrupted) and the
// error e, and returns how many it ended.
func (o *sessionObj) endQueued(ctx context.Context, tx *objects.Tx, gid, status string, e *ErrorInfo, now int64) (int, error) {
	var code, msg any
	if e != nil {
		code, msg = e.Code, e.Message
	}
	q, args := `UPDATE generations SET status = ?, error_code = ?, error_message = ?, finished_at = ? WHERE status = 'queued'`, []any{status, code, msg, now}
	if gid != "" {
		q, args = q+` AND id = ?`, append(args, gid)
	}
	ids, err := collect(ctx, tx, func(rows *objects.Rows) (id string, err error) { return id, rows.Scan(&id) }, q+` RETURNING id`, args...)
	if err != nil {
		return 0, fmt.Errorf("end queued generations: %w", err)
	}
	for _, id := range ids {
		if err := o.publishGenerationEnd(ctx, tx, o.m, id, 0, status, e); err != nil {
			return 0, err
		}
	}
	if len(ids) > 0 {
		o.svc.queued.signal(o.m.ID) // see startGeneration
		// The session's viewers get each one's final event, its only one,
		// as they would get the events of a generation that ran: a client
		// waiting for it learns that it ended, and why.
		svc, sessionID := o.svc, o.m.ID
		tx.OnCommit(func() {
			h := svc.existingHub(sessionID)
			if h == nil {
				return
			}
			for _, id := range ids {
				h.Broadcast(endedUnstarted(&Generation{ID: id, Status: status, Offset: 1, Error: e}))
			}
		})
	}
	return len(ids), nil
}

// publishTurn records the event of a committed turn (see publish), built
// by hand: every posted turn has one. preview is preview(t).
func (o *sessionObj) publishTurn(ctx context.Context, tx *objects.Tx, m *meta, t Turn, preview string) error {
	if !o.svc.Events {
		return nil
	}
	b := appendTurnEvent(nil, nowMillis(), m.Owner, m.ID, t, preview)
	return tx.Publish(ctx, subjectPrefix+m.ID+".turn", b)
}

// appendTurnEvent appends the body of a turn event as record would encode
// publish's map of it, the fields sorted:
//
//	{"at":…,"owner":…,"session_id":…,"turn":{"id":…,"parent_id":…,"role":…,
//	 "status":…,"generation_id":…,"content_bytes":…,"content":…,
//	 "tool_calls":[…],"preview":…,"created_at":…}}
//
// generation_id, content and tool_calls are left out when empty, and
// content when it is larger than maxEventContent (content_bytes says how
// large it is). Tool calls whose JSON is larger than maxEventContent are
// listed without their arguments (a coding agent's call may carry a whole
// file), and not at all when even that list is larger: an event must stay
// far below the bus's limit, or the turn could not commit. The content is
// spliced in as stored; preview is preview(t).
func appendTurnEvent(b []byte, at time.Time, owner, sessionID string, t Turn, preview string) []byte {
	content := t.Content
	if len(content) > maxEventContent {
		content = nil
	}
	b = slices.Grow(b, len(content)+384)
	b = append(b, `{"at":`...)
	b = jsonenc.Time(b, at)
	b = append(b, `,"owner":`...)
	b = jsonenc.String(b, owner)
	b = append(b, `,"session_id":`...)
	b = jsonenc.String(b, sessionID)
	b = append(b, `,"turn":{"id":`...)
	b = strconv.AppendInt(b, t.ID, 10)
	b = append(b, `,"parent_id":`...)
	b = jsonenc.NullableInt(b, t.ParentID)
	b = append(b, `,"role":`...)
	b = jsonenc.String(b, t.Role)
	b = append(b, `,"status":`...)
	b = jsonenc.String(b, t.Status)
	if t.GenerationID != nil {
		b = append(b, `,"generation_id":`...)
		b = jsonenc.String(b, *t.GenerationID)
	}
	b = append(b, `,"content_bytes":`...)
	b = strconv.AppendInt(b, int64(len(t.Content)), 10)
	if len(content) > 0 {
		b = append(b, `,"content":`...)
		b = appendContent(b, content)
	}
	if len(t.ToolCalls) > 0 {
		start := len(b)
		b = append(b, `,"tool_calls":`...)
		at := len(b)
		b = appendToolCalls(b, t.ToolCalls, true)
		if len(b)-at > maxEventContent {
			b = appendToolCalls(b[:at], t.ToolCalls, false)
		}
		if len(b)-at > maxEventContent {
			// Too many calls, or names too long, to list even without
			// arguments: the event goes without them (the turn has them),
			// so that it stays within MinBusEventBytes.
			b = b[:start]
		}
	}
	b = append(b, `,"preview":`...)
	b = jsonenc.String(b, preview)
	b = append(b, `,"created_at":`...)
	b = jsonenc.Time(b, t.CreatedAt.Time)
	return append(b, "}}"...)
}

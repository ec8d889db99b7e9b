package session

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"sessiond/objects"
)

// meta is a session's metadata row, kept in memory by the object.
//
// Posting turns, the hot path, leaves the row alone: its head column holds
// 0 while the head is the newest turn (the usual case) and updated_at is
// the later of the row's and the newest turn's creation (see loadMeta), so
// a posted turn costs one page write and one statement less.
type meta struct {
	ID, Owner, Title, Model, System, Policy string
	Metadata                                json.RawMessage
	Head                                    int64 // leaf of the active branch
	Newest                                  int64 // highest turn id; not stored
	Branched                                bool
	CreatedAt, UpdatedAt                    time.Time
	// CreateKey is the Idempotency-Key the session was created (forked,
	// imported) with, "" for none: a repeat finds its session by it.
	CreateKey string
}

// storedHead is the head column's value for m: 0 for the newest turn.
func (m *meta) storedHead() int64 {
	if m.Head == m.Newest {
		return 0
	}
	return m.Head
}

// noteTurn records a newly inserted turn as the newest one.
func (m *meta) noteTurn(id int64) { m.Newest = max(m.Newest, id) }

func loadMeta(ctx context.Context, tx *objects.Tx) (*meta, error) {
	m := &meta{}
	var md string
	var branched int
	var created, updated int64
	err := tx.QueryRow(ctx, `SELECT session_id, owner, title, model, system, metadata, busy_policy, head, branched, created_at, updated_at,
		coalesce(create_key, '') FROM meta WHERE id = 1`).
		Scan(&m.ID, &m.Owner, &m.Title, &m.Model, &m.System, &md, &m.Policy, &m.Head, &branched, &created, &updated, &m.CreateKey)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load meta: %w", err)
	}
	// The newest turn's creation, or when it was written if that is
	// earlier: an imported turn keeps its created_at, which a clock ahead
	// of this one may have put in the future (see insertTurn).
	var newestAt int64
	err = tx.QueryRow(ctx, `SELECT id, min(created_at, updated_at) FROM turns ORDER BY id DESC LIMIT 1`).Scan(&m.Newest, &newestAt)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("load newest turn: %w", err)
	}
	if m.Head == 0 {
		m.Head = m.Newest
	}
	m.Metadata = json.RawMessage(md)
	m.Branched = branched != 0
	m.CreatedAt = time.UnixMilli(created).UTC()
	m.UpdatedAt = time.UnixMilli(max(updated, newestAt)).UTC()
	return m, nil
}

func saveMeta(ctx context.Context, tx *objects.Tx, m *meta) error {
	branched := 0
	if m.Branched {
		branched = 1
	}
	_, err := tx.Exec(ctx, `INSERT INTO meta (id, session_id, owner, title, model, system, metadata, busy_policy, head, branched, created_at, updated_at, create_key)
		VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, nullif(?, ''))
		ON CONFLICT (id) DO UPDATE SET title = excluded.title, model = excluded.model, system = excluded.system,
			metadata = excluded.metadata, busy_policy = excluded.busy_policy, head = excluded.head,
			branched = excluded.branched, updated_at = excluded.updated_at`,
		m.ID, m.Owner, m.Title, m.Model, m.System, string(m.Metadata), m.Policy, m.storedHead(), branched,
		m.CreatedAt.UnixMilli(), m.UpdatedAt.UnixMilli(), m.CreateKey)
	if err != nil {
		return fmt.Errorf("save meta: %w", err)
	}
	return nil
}

const turnColumns = `id, parent_id, role, content, tool_calls, tool_call_id, model, prompt_tokens, completion_tokens,
	total_tokens, finish_reason, status, error_code, error_message, generation_id, created_at`

func scanTurn(sc interface{ Scan(...any) error }) (Turn, error) {
	var t Turn
	var parent sql.NullInt64
	var content string
	var toolCalls, toolCallID, model, finish, errCode, errMsg, gen sql.NullString
	var pt, ct, tt sql.NullInt64
	var created int64
	err := sc.Scan(&t.ID, &parent, &t.Role, &content, &toolCalls, &toolCallID, &model, &pt, &ct, &tt,
		&finish, &t.Status, &errCode, &errMsg, &gen, &created)
	if err != nil {
		return t, err
	}
	if parent.Valid {
		t.ParentID = &parent.Int64
	}
	t.Content = json.RawMessage(content)
	if toolCalls.Valid && toolCalls.String != "" {
		if err := json.Unmarshal([]byte(toolCalls.String), &t.ToolCalls); err != nil {
			return t, fmt.Errorf("turn %d tool calls: %w", t.ID, err)
		}
	}
	t.ToolCallID = nullString(toolCallID)
	t.Model = nullString(model)
	t.FinishReason = nullString(finish)
	t.GenerationID = nullString(gen)
	if tt.Valid {
		t.Usage = &Usage{PromptTokens: int(pt.Int64), CompletionTokens: int(ct.Int64), TotalTokens: int(tt.Int64)}
	}
	if errCode.Valid {
		t.Error = &ErrorInfo{Code: errCode.String, Message: errMsg.String}
	}
	t.CreatedAt = Timestamp{time.UnixMilli(created).UTC()}
	return t, nil
}

func nullString(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	v := s.String
	return &v
}

func (o *sessionObj) getTurn(ctx context.Context, tx *objects.Tx, id int64) (Turn, error) {
	t, err := scanTurn(tx.QueryRow(ctx, `SELECT `+turnColumns+` FROM turns WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("turn %d: %w", id, ErrNotFound)
	}
	if err == nil && t.Status == TurnStreaming {
		err = o.fillPartial(ctx, tx, &t)
	}
	return t, err
}

// partial is what a generation's saves have persisted of its turn.
type partial struct {
	text      string
	toolCalls string // JSON, "" when none
	upto      int64  // stream offset after the last piece; 0 when none
	reserved  int64  // the highest offset the generation was allowed to stream (see offsetLease); 0 when unknown
}

// savedPartial returns the output saved so far of a streaming turn: from
// the node's journal, or from the session's partials table for a turn an
// older build was generating.
func (o *sessionObj) savedPartial(ctx context.Context, tx *objects.Tx, turnID int64) (partial, error) {
	p, err := readPartial(ctx, tx, turnID)
	if err != nil || p.upto > 0 {
		return p, err
	}
	return o.svc.journal.read(ctx, o.m.ID, turnID)
}

// readPartial joins the saved pieces of a streaming turn's output from the
// session's own partials table, where builds before the node journal saved
// them (see journal).
func readPartial(ctx context.Context, tx *objects.Tx, turnID int64) (partial, error) {
	rows, err := tx.Query(ctx, `SELECT upto, text, tool_calls, NULL, NULL FROM partials WHERE turn_id = ? ORDER BY upto`, turnID)
	if err != nil {
		return partial{}, fmt.Errorf("read partial output of turn %d: %w", turnID, err)
	}
	return joinPieces(rows)
}

// fillPartial gives a streaming turn the output saved so far (its row holds
// none until the generation ends).
func (o *sessionObj) fillPartial(ctx context.Context, tx *objects.Tx, t *Turn) error {
	p, err := o.savedPartial(ctx, tx, t.ID)
	if err != nil || p.upto == 0 {
		return err
	}
	content, err := json.Marshal(p.text)
	if err != nil {
		return err
	}
	t.Content = content
	if p.toolCalls != "" {
		if err := json.Unmarshal([]byte(p.toolCalls), &t.ToolCalls); err != nil {
			return fmt.Errorf("turn %d partial tool calls: %w", t.ID, err)
		}
	}
	return nil
}

func (o *sessionObj) queryTurns(ctx context.Context, tx *objects.Tx, q string, args ...any) ([]Turn, error) {
	out, _, err := o.queryTurnsUpTo(ctx, tx, 0, q, args...)
	return out, err
}

// queryTurnsUpTo is queryTurns that stops reading, cut true, before a turn
// that would take the turns' size (turnBytes) over budget; the first turn
// is always read. budget 0: no bound.
func (o *sessionObj) queryTurnsUpTo(ctx context.Context, tx *objects.Tx, budget int, q string, args ...any) (out []Turn, cut bool, err error) {
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, false, fmt.Errorf("read turns: %w", err)
	}
	defer rows.Close()
	size := 0
	for rows.Next() {
		t, err := scanTurn(rows)
		if err != nil {
			return nil, false, err
		}
		if size += turnBytes(t); budget > 0 && size > budget && len(out) > 0 {
			cut = true
			break
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	rows.Close()
	// A streaming turn weighed its stored placeholder: with its partial
	// output filled in (up to MaxTurnBytes), the page is weighed again and
	// cut where it passes the budget, as the loop above would have.
	size = 0
	for i := range out {
		if out[i].Status == TurnStreaming {
			if err := o.fillPartial(ctx, tx, &out[i]); err != nil {
				return nil, false, err
			}
		}
		if size += turnBytes(out[i]); budget > 0 && size > budget && i > 0 {
			clear(out[i:])
			out, cut = out[:i], true
			break
		}
	}
	return out, cut, nil
}

// collect runs q and returns every row as scan reads it.
func collect[T any](ctx context.Context, tx *objects.Tx, scan func(*objects.Rows) (T, error), q string, args ...any) ([]T, error) {
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// turnBytes is what a turn weighs in a page: its content and its tool
// calls' arguments.
func turnBytes(t Turn) int {
	n := len(t.Content)
	for _, c := range t.ToolCalls {
		n += len(c.Function.Arguments)
	}
	return n
}

// insertTurn appends a turn (with t.ID when set, else the next id) and
// sets t.ID.
func insertTurn(ctx context.Context, tx *objects.Tx, t *Turn, idemKey string) error {
	var toolCalls any
	if len(t.ToolCalls) > 0 {
		b, err := json.Marshal(t.ToolCalls)
		if err != nil {
			return err
		}
		toolCalls = string(b)
	}
	var pt, ct, tt any
	if t.Usage != nil {
		pt, ct, tt = t.Usage.PromptTokens, t.Usage.CompletionTokens, t.Usage.TotalTokens
	}
	var errCode, errMsg any
	if t.Error != nil {
		errCode, errMsg = t.Error.Code, t.Error.Message
	}
	var key any
	if idemKey != "" {
		key = idemKey
	}
	// updated_at starts as the earlier of created_at and now: the same
	// for a turn posted now; now for a turn imported with a creation time
	// ahead of this clock, which loadMeta must not take for the session's
	// last update.
	created := t.CreatedAt.UnixMilli()
	written := min(created, nowMillis().UnixMilli())
	var id any // SQLite's next rowid: the newest id + 1
	if t.ID > 0 {
		id = t.ID
	}
	r, err := tx.Exec(ctx, `INSERT INTO turns (id, parent_id, role, content, tool_calls, tool_call_id, model, prompt_tokens,
		completion_tokens, total_tokens, finish_reason, status, error_code, error_message, generation_id, idempotency_key, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id, ptrOr(t.ParentID), t.Role, string(t.Content), toolCalls, ptrOr(t.ToolCallID), ptrOr(t.Model), pt, ct, tt,
		ptrOr(t.FinishReason), t.Status, errCode, errMsg, ptrOr(t.GenerationID), key, created, written)
	if err != nil {
		return fmt.Errorf("insert turn: %w", err)
	}
	if t.ID, err = r.LastInsertId(); err != nil {
		return fmt.Errorf("insert turn: %w", err)
	}
	if t.ID > MaxTurnID {
		// Past 2^53 a JSON client cannot read an id exactly, and an
		// import would refuse the session's export. The call fails, so
		// its writes, this row among them, are rolled back. Checked
		// after the insert: a query for the next id beforehand would
		// cost every post a statement.
		return fmt.Errorf("%w (the largest is %d); fork the session at an earlier turn to go on", ErrNoTurnIDs, MaxTurnID)
	}
	return nil
}

func ptrOr[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// branchTurns returns up to limit turns of the branch ending at leaf,
// newest first, with ids below before (0: no bound), and fewer (cut) when
// they would weigh more than budget (see queryTurnsUpTo). Its cost grows
// with limit and with how far before is from the leaf, not with the
// session's length.
//
// The walks read parent links only (parent_id comes before the content in
// a row, so a turn's overflow pages are never read for it), and the turns
// are fetched by "id IN (chain)": a join of the chain with turns made
// SQLite scan the whole table, and sort every row read.
func (o *sessionObj) branchTurns(ctx context.Context, tx *objects.Tx, leaf, before int64, limit, budget int) ([]Turn, bool, error) {
	start := leaf
	if before > 0 && leaf >= before {
		// The newest turn of the branch below before.
		var s sql.NullInt64
		if err := tx.QueryRow(ctx, branchStartSQL, leaf, before, before).Scan(&s); err != nil {
			return nil, false, fmt.Errorf("walk branch: %w", err)
		}
		if !s.Valid {
			return nil, false, nil
		}
		start = s.Int64
	}
	return o.queryTurnsUpTo(ctx, tx, budget, branchSQL, start, limit)
}

// branchTurnsAfter returns up to limit turns of the branch ending at leaf
// with ids above after, oldest first, and fewer (cut) when they would weigh
// more than budget. The walk from the leaf stops at after (ids grow along
// a branch), so its cost grows with the turns after it, read as parent
// links only, and with limit.
func (o *sessionObj) branchTurnsAfter(ctx context.Context, tx *objects.Tx, leaf, after int64, limit, budget int) ([]Turn, bool, error) {
	return o.queryTurnsUpTo(ctx, tx, budget, branchAfterSQL, leaf, after, after, limit)
}

// The branch walks (see branchTurns): ids along parent links, then the
// turns by id. TestBranchQueriesNeverScan checks their plans.
const (
	// branchStartSQL: the newest turn of the branch from leaf (?1) below
	// before (?2 = ?3).
	branchStartSQL = `WITH RECURSIVE up(id) AS (
			SELECT ?
			UNION ALL
			SELECT t.parent_id FROM turns t JOIN up ON t.id = up.id
			WHERE up.id >= ? AND t.parent_id IS NOT NULL
		)
		SELECT max(id) FROM up WHERE id < ?`
	// branchSQL: up to ?2 turns of the branch ending at ?1, newest first.
	branchSQL = `WITH RECURSIVE chain(id, n) AS (
			SELECT ?, 1
			UNION ALL
			SELECT t.parent_id, c.n + 1 FROM turns t JOIN chain c ON t.id = c.id
			WHERE t.parent_id IS NOT NULL AND c.n < ?
		)
		SELECT ` + turnColumns + ` FROM turns WHERE id IN (SELECT id FROM chain) ORDER BY id DESC`
	// branchAfterSQL: up to ?4 turns of the branch ending at ?1 above ?2
	// (= ?3), oldest first.
	branchAfterSQL = `WITH RECURSIVE chain(id) AS (
			SELECT ?
			UNION ALL
			SELECT t.parent_id FROM turns t JOIN chain c ON t.id = c.id
			WHERE t.parent_id IS NOT NULL AND t.parent_id > ?
		)
		SELECT ` + turnColumns + ` FROM turns WHERE id IN (SELECT id FROM chain) AND id > ? ORDER BY id LIMIT ?`
)

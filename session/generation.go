package session

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"sessiond/objects"
	"sessiond/streaming"
	"sessiond/streaming/jsonenc"
)

// DefaultPersistInterval is how often a running generation's partial output
// is committed, so that a crash loses at most this much of it.
const DefaultPersistInterval = 250 * time.Millisecond

var (
	errCancelled = errors.New("session: generation cancelled")
	errDeleted   = errors.New("session: the session was deleted")
	errShutdown  = errors.New("session: server shutting down")
)

// genRun is a running generation. Its goroutine owns the model stream and
// the producer side of log; the session object owns the rest and changes it
// only inside calls.
type genRun struct {
	id      string
	turnID  int64
	session string
	log     *streaming.Log
	cancel  context.CancelCauseFunc
	done    chan struct{} // closed once the final state is committed (or could not be)
}

// queuedGen is a generation waiting to start.
type queuedGen struct {
	id, model string
	parent    int64
}

// maxUnanswered bounds the walk over the turns no assistant answered yet.
const maxUnanswered = 1000

// nextQueued picks the queued generation to start, and the turn it
// answers. Turns posted while a generation ran are answered together:
// when the oldest queued generation's turn is among the turns at the head
// of the active branch that no assistant turn follows, it answers the head
// (all of them) with the model the last of those turns' posts asked for,
// and the other queued generations of those turns are to be cancelled as
// superseded once it starts: their ids are returned. A queued
// generation of another branch answers its own turn, and the session is
// marked branched. ok is false when nothing is queued. It writes nothing.
func (o *sessionObj) nextQueued(ctx context.Context, tx *objects.Tx, m *meta) (next queuedGen, superseded []string, ok bool, err error) {
	queued, err := collect(ctx, tx, func(rows *objects.Rows) (q queuedGen, err error) { return q, rows.Scan(&q.id, &q.parent, &q.model) },
		`SELECT id, parent_id, model FROM generations WHERE status = 'queued' ORDER BY created_at, rowid`)
	if err != nil {
		return queuedGen{}, nil, false, fmt.Errorf("read queued generations: %w", err)
	}
	if len(queued) == 0 {
		return queuedGen{}, nil, false, nil
	}
	// The head's unanswered turns: from the head up to the first
	// assistant turn. Only their roles and parents are read (a turn may
	// hold 32 MiB, a streaming one its partial output besides).
	unanswered := map[int64]bool{}
	for id := m.Head; id > 0 && len(unanswered) < maxUnanswered; {
		var role string
		var parent sql.NullInt64
		err := tx.QueryRow(ctx, `SELECT role, parent_id FROM turns WHERE id = ?`, id).Scan(&role, &parent)
		if errors.Is(err, sql.ErrNoRows) {
			err = fmt.Errorf("turn %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return queuedGen{}, nil, false, err
		}
		if role == RoleAssistant {
			break
		}
		unanswered[id] = true
		if !parent.Valid {
			break
		}
		id = parent.Int64
	}
	first := queued[0]
	if !unanswered[first.parent] {
		if first.parent != m.Head {
			m.Branched = true
		}
		return first, nil, true, nil
	}
	first.parent = m.Head
	for _, q := range queued[1:] {
		if unanswered[q.parent] {
			superseded = append(superseded, q.id)
			// The reply answers the last post too, with the model it
			// asked for (a post may name one): the latest choice.
			first.model = q.model
		}
	}
	return first, superseded, true, nil
}

// startGeneration records a running generation and its streaming assistant
// turn under parent. It returns the run, which the caller makes the
// object's running generation at the end of its call, and the function
// that launches it once the call commits.
func (o *sessionObj) startGeneration(ctx context.Context, tx *objects.Tx, m *meta, gid string, parent int64, modelName string, now time.Time) (*Generation, *genRun, func(), error) {
	model, info, err := o.svc.Models.Get(modelName)
	if err != nil {
		return nil, nil, nil, &notStartedError{err: fmt.Errorf("%w: %v", ErrInvalid, err)}
	}
	msgs, err := o.assembleContext(ctx, tx, m.System, parent, info.ContextTokens)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("assemble context: %w", err) // the database's: not the generation's fault
	}
	t := Turn{Role: RoleAssistant, Content: json.RawMessage(`""`), Status: TurnStreaming, CreatedAt: Timestamp{now},
		Model: &modelName, GenerationID: &gid}
	if parent > 0 {
		p := parent
		t.ParentID = &p
	}
	if err := insertTurn(ctx, tx, &t, ""); errors.Is(err, ErrNoTurnIDs) {
		return nil, nil, nil, &notStartedError{err: err}
	} else if err != nil {
		return nil, nil, nil, err
	}
	m.noteTurn(t.ID)
	if err := o.svc.journal.mark(ctx, tx, m.ID, t.ID); err != nil {
		return nil, nil, nil, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO generations (id, turn_id, parent_id, model, status, created_at) VALUES (?, ?, ?, ?, 'running', ?)
		ON CONFLICT (id) DO UPDATE SET turn_id = excluded.turn_id, parent_id = excluded.parent_id, model = excluded.model, status = 'running'`,
		gid, t.ID, parent, modelName, now.UnixMilli()); err != nil {
		return nil, nil, nil, fmt.Errorf("record generation: %w", err)
	}
	if parent == m.Head {
		m.Head = t.ID
	}
	if err := o.publish(ctx, tx, m, "generation.started", map[string]any{"generation_id": gid, "turn_id": t.ID, "model": modelName}); err != nil {
		return nil, nil, nil, err
	}
	svc := o.svc
	sessionID := m.ID
	// The log is in the hub from now on, which keeps the janitor from
	// dropping the hub (and releasing the log) before this call commits.
	var log *streaming.Log
	if err := svc.withHub(sessionID, func(h *streaming.Hub) (err error) {
		log, err = h.StartGeneration(gid)
		return err
	}); err != nil {
		return nil, nil, nil, fmt.Errorf("start stream: %w", err)
	}
	// Followers of a queued generation read its state again: calls of the
	// session, so they see this one's outcome.
	svc.queued.signal(sessionID)
	tx.OnRollback(log.Release)
	gctx, cancel := context.WithCancelCause(svc.ctx)
	run := &genRun{id: gid, turnID: t.ID, session: sessionID, log: log, cancel: cancel, done: make(chan struct{})}
	req := &ModelRequest{Model: modelName, Messages: msgs}
	launch := func() {
		// Added under hubMu, as Close sets closing before it waits on
		// wg: a generation whose start committed as Close began is
		// left streaming, for the next start-up to mark interrupted
		// (its journal row names it), as after a crash.
		svc.hubMu.Lock()
		closing := svc.closing
		if !closing {
			svc.wg.Add(1)
		}
		svc.hubMu.Unlock()
		if closing {
			cancel(errShutdown)
			run.log.Fail("interrupted", "the server stopped as this generation started")
			close(run.done) // a Cancel waiting on it returns
			return
		}
		release := o.h.Hold()
		svc.broadcastTurn(sessionID, t)
		go svc.runGeneration(gctx, o.h.Stub(), run, model, req, release)
	}
	return &Generation{ID: gid, Status: GenRunning, TurnID: t.ID}, run, launch, nil
}

// errOutputLimit stops a model whose output would pass MaxTurnBytes as
// stored (its content and tool calls as JSON): an upstream that never stops
// must not take the node's memory, and the turn stays one a client could
// post, export and import.
var errOutputLimit = errors.New("session: the output reached the turn size limit")

// runGeneration streams the model's output into the generation's log and
// the node's journal (saved every PersistInterval), and commits the final
// turn.
func (svc *Service) runGeneration(ctx context.Context, stub *objects.Stub, run *genRun, model Model, req *ModelRequest, release func()) {
	defer svc.wg.Done()
	defer release()
	defer run.cancel(nil)
	var b ResultBuilder
	saved := svc.journal.begin(run.session, run.turnID)
	size := 2 // the stored content: a JSON string, its quotes
	emit := func(d Delta) error {
		if size += jsonenc.MarshalLen(d.Text) - 2; d.ToolCall != nil {
			// Stored as JSON too: each call's id, name and framing (about
			// 64 bytes), and its arguments as a string.
			tc := d.ToolCall
			size += jsonenc.MarshalLen(tc.Arguments) - 2
			if tc.ID != "" || tc.Name != "" {
				size += jsonenc.MarshalLen(tc.ID) + jsonenc.MarshalLen(tc.Name) + 64
			}
		}
		if size > svc.MaxTurnBytes {
			return errOutputLimit
		}
		// Viewers are sent the name a tool call gains with this part
		// (nothing when an upstream sends the whole name again), so
		// that the parts they append make the name the turn keeps; the
		// journal keeps the name so far (see journalEntry.add).
		var gained string
		var kept *ToolCallDelta // the part as the journal and viewers take it
		if tc := d.ToolCall; tc != nil {
			prev := b.name(tc.Index)
			full := mergeName(prev, tc.Name)
			gained = full[len(prev):]
			c := *tc
			c.Name = ""
			if gained != "" {
				c.Name = full
			}
			if c.ID != "" && !b.takesID(tc) {
				// Viewers are sent the IDs the turn keeps: not the
				// repeated ID of an earlier call (nameToolCalls names
				// the call), nor a second ID of a call.
				c.ID = ""
			}
			kept = &c
		}
		if err := b.Add(d); err != nil {
			return err
		}
		if kept != nil {
			d.ToolCall = kept
		}
		sd := streaming.Delta{Text: d.Text}
		if tc := d.ToolCall; tc != nil {
			sd.ToolCall = &streaming.ToolCallDelta{Index: tc.Index, ID: tc.ID, Name: gained, Arguments: tc.Arguments}
		}
		if err := saved.lease(ctx, svc.journal.hurry); err != nil {
			return err
		}
		ev, err := run.log.Append(sd)
		if err != nil {
			return fmt.Errorf("append to stream: %w", err)
		}
		saved.add(d, ev.Offset)
		return nil
	}
	res, err := model.Stream(ctx, req, emit)
	if res == nil {
		res = b.Result()
	}
	out := outcome{result: res, status: GenDone, turnStatus: TurnComplete}
	var me *ModelError
	switch cause := context.Cause(ctx); {
	case err == nil:
	case errors.Is(cause, errCancelled) || errors.Is(cause, errInterrupted):
		out.status, out.turnStatus = GenCancelled, TurnCancelled
		out.result.FinishReason = FinishCancelled
	case errors.Is(cause, errDeleted):
		// Cancelled as a queued one is by the deletion, and with its
		// error: an agent told why it ended does not post again.
		out.status, out.turnStatus = GenCancelled, TurnCancelled
		out.result.FinishReason = FinishCancelled
		out.err = deletedError()
	case errors.Is(cause, errShutdown):
		out.status, out.turnStatus = GenInterrupted, TurnInterrupted
		out.err = &ErrorInfo{Code: "interrupted", Message: "the server stopped while this turn was being generated"}
		out.result.FinishReason = "interrupted"
	case errors.Is(err, errOutputLimit):
		// Cut where the limit fell, as a model's max_tokens cuts: the
		// output so far is the turn.
		out.result = b.Result()
		out.result.FinishReason = FinishLength
	case errors.As(err, &me):
		out.status, out.turnStatus = GenFailed, TurnFailed
		out.err = &ErrorInfo{Code: me.Code, Message: me.Message}
	default:
		out.status, out.turnStatus = GenFailed, TurnFailed
		out.err = &ErrorInfo{Code: CodeUpstreamError, Message: err.Error()}
	}
	if out.status == GenFailed {
		out.result.FinishReason = FinishError
		// The turn says why to its client; the operator learns of it
		// here (an upstream refusing the key, a model that is gone).
		svc.logger().Warn("session: a generation failed", "session", run.session, "generation", run.id,
			"model", req.Model, "code", out.err.Code, "err", out.err.Message)
	}
	svc.commitFinal(stub, run, out)
}

// errGenerationEnded: the generation is no longer running in the database
// (the instance was rebuilt, and marked it interrupted with its saved
// output).
var errGenerationEnded = errors.New("session: the generation already ended")

// finalRetries bounds the retries of a final turn refused because the
// session's queue was full.
const finalRetries = 20

// commitFinal commits a generation's final turn. A full queue is waited
// out. Any other failure (the output cannot be saved, the disk) is
// answered by saving the turn once more as failed without its output, so
// that the session is not left with a generation that runs for ever and
// blocks the queue behind it; unless the call's writes may be stored after
// all (ErrNotDurable) or the generation already ended, which the database
// then says.
func (svc *Service) commitFinal(stub *objects.Stub, run *genRun, out outcome) {
	// Only a generation still running is finished: one a rebuilt instance
	// (after a panic or a failed commit) marked interrupted stays so, and
	// starts no next one behind the new instance's back; a retry finds the
	// first try's writes if they were stored after all.
	finish := func(out outcome) error {
		_, err := objects.Do(context.Background(), stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (struct{}, error) {
			var st string
			if err := tx.QueryRow(ctx, `SELECT status FROM generations WHERE id = ?`, run.id).Scan(&st); err != nil {
				return struct{}{}, err
			}
			if st != GenRunning {
				return struct{}{}, errGenerationEnded
			}
			return struct{}{}, o.finishGeneration(ctx, tx, run, out)
		})
		return err
	}
	err := finish(out)
	for try := 0; try < finalRetries; try++ {
		var oe *objects.OverloadedError
		if !errors.As(err, &oe) {
			break
		}
		select {
		case <-svc.ctx.Done():
		case <-time.After(max(oe.RetryAfter, 10*time.Millisecond)):
		}
		err = finish(out)
	}
	if err == nil {
		return
	}
	log := svc.logger().With("session", run.session, "generation", run.id)
	if errors.Is(err, errGenerationEnded) {
		log.Warn("session: the generation was ended meanwhile (its session was rebuilt); its final turn is not saved")
		svc.journal.end(run.session, run.turnID) // the rebuilt instance took what was saved
		run.log.Fail("interrupted", "the generation was interrupted: its session was rebuilt after an error")
		close(run.done)
		return
	}
	if !errors.Is(err, objects.ErrNotDurable) && !errors.Is(err, objects.ErrClosed) && !errors.Is(err, objects.ErrDiskFailed) {
		log.Error("session: commit final turn; saving it as failed without its output", "err", err)
		lost := outcome{result: &ModelResult{Usage: out.result.Usage, FinishReason: FinishError}, status: GenFailed, turnStatus: TurnFailed,
			err: &ErrorInfo{Code: CodeSaveFailed, Message: "the output of this turn could not be saved: " + err.Error()}}
		if err = finish(lost); err == nil {
			return
		}
	}
	// The database has the turn as the failed call left it (committed
	// without its flush, or marked interrupted by a rebuilt instance), or
	// says running until the next wake marks it interrupted. Tell the
	// viewers now; the stored turn reaches them when they look.
	log.Error("session: commit final turn", "err", err)
	run.log.Fail("interrupted", "the final turn could not be saved: "+err.Error())
	close(run.done)
}

// notStartedError is why startGeneration could not start a generation,
// found before it wrote anything: its model is not configured.
type notStartedError struct{ err error }

func (e *notStartedError) Error() string { return e.err.Error() }
func (e *notStartedError) Unwrap() error { return e.err }

// startNext starts the first queued generation that can start, if any. One
// that cannot (see notStartedError) ends failed and the next is tried, so
// that a queued generation never keeps the one before it from ending.
// While the service closes, none starts: they end interrupted, with the
// generation ending now, as the next start-up would mark them, so that
// whoever follows one (an SSE POST that queued it, the session's sockets)
// gets its final event before the server stops.
func (o *sessionObj) startNext(ctx context.Context, tx *objects.Tx, m *meta, now time.Time) (*genRun, func(), error) {
	if o.svc.isClosing() {
		_, err := o.endQueued(ctx, tx, "", GenInterrupted, &ErrorInfo{Code: "interrupted", Message: "the server stopped before this generation finished"}, now.UnixMilli())
		return nil, nil, err
	}
	for {
		q, superseded, ok, err := o.nextQueued(ctx, tx, m)
		if err != nil || !ok {
			return nil, nil, err
		}
		_, run, launch, err := o.startGeneration(ctx, tx, m, q.id, q.parent, q.model, now)
		if err == nil {
			for _, id := range superseded {
				if _, err := o.cancelQueued(ctx, tx, id, &ErrorInfo{Code: "superseded",
					Message: fmt.Sprintf("generation %s answers this turn together with the turns before it", q.id)}, now.UnixMilli()); err != nil {
					return nil, nil, fmt.Errorf("supersede generation %s: %w", id, err)
				}
			}
			return run, launch, nil
		}
		var ns *notStartedError
		if !errors.As(err, &ns) {
			return nil, nil, err
		}
		o.svc.logger().Warn("session: a queued generation cannot start", "session", m.ID, "generation", q.id, "err", err)
		n, err := o.endQueued(ctx, tx, q.id, GenFailed, &ErrorInfo{Code: CodeInvalidRequest, Message: "the generation could not start: " + ns.Error()}, now.UnixMilli())
		if err != nil {
			return nil, nil, err
		}
		if n == 0 {
			return nil, nil, fmt.Errorf("end queued generation %s: not queued", q.id)
		}
	}
}

type outcome struct {
	result     *ModelResult
	status     string // generation status
	turnStatus string
	err        *ErrorInfo
}

// nameToolCalls gives a call the model streamed without an id, with the
// id of an earlier call, or with one over MaxToolCallIDBytes, one made
// from the generation's id and the call's place: a tool result must name
// the call it answers (tool_call_id), some OpenAI-compatible servers send
// none, and a repeated one would name two calls (the context would send
// the model the first only).
func nameToolCalls(calls []ToolCall, gid string) {
	seen := make(map[string]bool, len(calls))
	for i := range calls {
		if calls[i].ID == "" || len(calls[i].ID) > MaxToolCallIDBytes || seen[calls[i].ID] {
			calls[i].ID = fmt.Sprintf("call_%s_%d", strings.TrimPrefix(gid, "g_"), i)
		}
		seen[calls[i].ID] = true
	}
}

// finishGeneration commits a generation's final turn, then (after commit)
// ends its log, and starts the next queued generation if any.
func (o *sessionObj) finishGeneration(ctx context.Context, tx *objects.Tx, run *genRun, out outcome) error {
	res := out.result
	now := nowMillis()
	content, _ := json.Marshal(res.Text)
	nameToolCalls(res.ToolCalls, run.id)
	var calls any
	if len(res.ToolCalls) > 0 {
		b, _ := json.Marshal(res.ToolCalls)
		calls = string(b)
	}
	var code, msg any
	if out.err != nil {
		code, msg = out.err.Code, out.err.Message
	}
	u := res.Usage // nil: the model reported none, stored as NULL (see scanTurn)
	var pt, ct, tt any
	if u != nil {
		pt, ct, tt = u.PromptTokens, u.CompletionTokens, u.TotalTokens
	}
	if _, err := tx.Exec(ctx, `UPDATE turns SET content = ?, tool_calls = ?, prompt_tokens = ?, completion_tokens = ?, total_tokens = ?,
		finish_reason = ?, status = ?, error_code = ?, error_message = ?, updated_at = ? WHERE id = ?`,
		string(content), calls, pt, ct, tt, res.FinishReason, out.turnStatus,
		code, msg, now.UnixMilli(), run.turnID); err != nil {
		return fmt.Errorf("save final turn: %w", err)
	}
	// The turn holds its output: the journal's copy can go.
	tx.OnCommit(func() { o.svc.journal.end(run.session, run.turnID) })
	// The final event takes the offset after the last delta.
	final := run.log.Last() + 1
	if _, err := tx.Exec(ctx, `UPDATE generations SET status = ?, offset = ?, error_code = ?, error_message = ?, finished_at = ? WHERE id = ?`,
		out.status, final, code, msg, now.UnixMilli(), run.id); err != nil {
		return fmt.Errorf("save generation: %w", err)
	}
	turn, err := o.getTurn(ctx, tx, run.turnID)
	if err != nil {
		return err
	}
	m := *o.m
	m.UpdatedAt = now
	if err := o.publish(ctx, tx, &m, endEventKind(out.status), map[string]any{"generation_id": run.id, "turn_id": run.turnID, "status": out.status,
		"finish_reason": res.FinishReason, "usage": u, "error": out.err}); err != nil {
		return err
	}
	p := preview(turn)
	if err := o.publishTurn(ctx, tx, &m, turn, p); err != nil {
		return err
	}
	// Start the next queued generation, if any, in the same commit.
	headBefore := m.Head
	next, launch, err := o.startNext(ctx, tx, &m, now)
	if err != nil {
		return err
	}
	// The directory shows the preview of the head's branch (see
	// branchPreview): this turn's text, unless an edit moved the head to
	// another branch while it streamed, or the next generation moved it.
	var dirPreview *string
	switch {
	case m.Head == run.turnID && p != "":
		dirPreview = &p
	case m.Head == run.turnID || m.Head != headBefore:
		s, err := o.branchPreview(ctx, tx, m.Head)
		if err != nil {
			return err
		}
		dirPreview = &s
	}
	if err := saveMeta(ctx, tx, &m); err != nil {
		return err
	}
	svc := o.svc
	o.m = &m
	if o.run == run {
		o.run = next
	}
	tx.OnCommit(func() {
		turnJSON := AppendTurnJSON(nil, turn)
		if out.status == GenFailed {
			run.log.Fail(out.err.Code, out.err.Message)
		} else {
			usage, _ := json.Marshal(u)
			// With its error, as its generation.done event says.
			d := streaming.Done{Turn: turnJSON, Usage: usage, FinishReason: res.FinishReason, Error: out.err.done()}
			if _, err := run.log.Finish(d); err != nil {
				svc.logger().Warn("session: end stream", "generation", run.id, "err", err)
			}
		}
		svc.broadcastTurn(m.ID, turn)
		svc.touchDirectory(&m, dirPreview)
		close(run.done)
		if launch != nil {
			launch()
		}
	})
	return nil
}

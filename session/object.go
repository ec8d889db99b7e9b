package session

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"sessiond/objects"
)

// sessionObj is the in-memory instance of one session object. Its methods
// run inside calls (objects.Do), one at a time. Fields change at the end of
// a call, after its last fallible step, so that the next call of the same
// batch sees them and a failed call leaves them as they were (a failed batch
// commit discards the instance). Effects outside the object (viewers,
// generation goroutines) happen in OnCommit hooks: durable before visible.
type sessionObj struct {
	svc *Service
	h   *objects.Handle
	m   *meta   // nil until created
	run *genRun // the running generation, if any
	// deleting: Delete has begun (it waits for the running generation to
	// end before the object goes); the session answers as gone meanwhile.
	deleting bool
}

func (svc *Service) newSession(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
	o := &sessionObj{svc: svc, h: h}
	m, err := loadMeta(ctx, tx)
	if err != nil {
		return nil, err
	}
	o.m = m
	if m == nil {
		return o, nil
	}
	// Nothing runs in a fresh instance: a generation the database says is
	// running was cut short by a crash or shutdown. Mark it interrupted with
	// the output persisted so far.
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM generations WHERE status IN ('running', 'queued')`).Scan(&n); err != nil {
		return nil, err
	}
	if n > 0 {
		if err := o.interruptStreaming(ctx, tx, time.Now().UnixMilli()); err != nil {
			return nil, err
		}
	}
	if n > 0 || h.Unsettled() {
		// The list entry again: a turn interruptStreaming saved may be
		// the head, now with its output; and a previous instance that
		// ended with events unpublished, most likely in a crash, lost
		// the directory updates it held in memory (see dirUpdates), so
		// its entry could show an older title, preview or time, or be
		// missing after a create, until the session changed again.
		p, err := o.branchPreview(ctx, tx, m.Head)
		if err != nil {
			return nil, err
		}
		mc := *m
		tx.OnCommit(func() { svc.touchDirectory(&mc, &p) })
	}
	return o, nil
}

// interruptStreaming ends what a crash left running: each streaming turn
// gets the output its generation saved and status interrupted; running and
// queued generations become interrupted at the offset of that output.
func (o *sessionObj) interruptStreaming(ctx context.Context, tx *objects.Tx, now int64) error {
	ids, err := collect(ctx, tx, func(rows *objects.Rows) (id int64, err error) { return id, rows.Scan(&id) },
		`SELECT id FROM turns WHERE status = 'streaming'`)
	if err != nil {
		return err
	}
	// The server stopped, or (a generation of this process still writing
	// one of the turns) the session's instance was rebuilt under it after
	// a failed commit or a panic: the turns and generations say which.
	turnMsg, genMsg := "the server stopped while this turn was being generated", "the server stopped before this generation finished"
	for _, id := range ids {
		if o.svc.journal.running(o.m.ID, id) {
			turnMsg = "this turn was cut short: its session failed to save it, or failed otherwise, and was reopened (see the server's log)"
			genMsg = "this generation was cut short: its session failed to save it, or failed otherwise, and was reopened (see the server's log)"
			break
		}
	}
	for _, id := range ids {
		p, err := o.savedPartial(ctx, tx, id)
		if err != nil {
			return err
		}
		tx.OnCommit(func() { o.svc.journal.end(o.m.ID, id) })
		content, _ := json.Marshal(p.text)
		var calls any
		if p.toolCalls != "" {
			// Named as a generation's end names them: a call
			// streamed without an id, or with another's, gets one a
			// tool result can answer.
			var gid string
			if err := tx.QueryRow(ctx, `SELECT coalesce(generation_id, '') FROM turns WHERE id = ?`, id).Scan(&gid); err != nil {
				return fmt.Errorf("read the generation of turn %d: %w", id, err)
			}
			var tcs []ToolCall
			if err := json.Unmarshal([]byte(p.toolCalls), &tcs); err != nil {
				return fmt.Errorf("turn %d partial tool calls: %w", id, err)
			}
			nameToolCalls(tcs, gid)
			b, err := json.Marshal(tcs)
			if err != nil {
				return err
			}
			calls = string(b)
		}
		if _, err := tx.Exec(ctx, `UPDATE turns SET content = ?, tool_calls = coalesce(?, tool_calls), status = 'interrupted',
			finish_reason = 'interrupted', error_code = 'interrupted',
			error_message = ?, updated_at = ? WHERE id = ?`,
			string(content), calls, turnMsg, now, id); err != nil {
			return err
		}
		// Its final event takes the offset after the highest one the
		// generation may have streamed: clients may have seen deltas past
		// the last one saved, and must resume from behind the end to be
		// sent the saved turn (see offsetLease). Rows of older builds
		// record no lease: the offset after the last delta saved.
		if _, err := tx.Exec(ctx, `UPDATE generations SET offset = ? WHERE turn_id = ? AND status = 'running'`, max(p.upto, p.reserved)+1, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM partials WHERE turn_id = ?`, id); err != nil {
			return err
		}
	}
	// Their ends are published like any other's (consumers wait for them).
	type ended struct {
		id   string
		turn int64
	}
	gens, err := collect(ctx, tx, func(rows *objects.Rows) (g ended, err error) { return g, rows.Scan(&g.id, &g.turn) },
		`UPDATE generations SET status = 'interrupted', error_code = 'interrupted', error_message = ?, finished_at = ?
		WHERE status IN ('running', 'queued') RETURNING id, turn_id`, genMsg, now)
	if err != nil {
		return err
	}
	// Each turn saved now is committed as interrupted: its turn event
	// follows its generation's end at once, as finishGeneration orders
	// them, before the ends of the queued ones (which have no turn).
	publishTurn := func(id int64) error {
		t, err := o.getTurn(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := o.publishTurn(ctx, tx, o.m, t, preview(t)); errors.Is(err, objects.ErrTooLarge) {
			// Not for the bus (a server with a smaller limit than
			// sessiond's start-up check asked for): the session must
			// still open, so the event goes, not the session.
			o.svc.logger().Error("session: the event of an interrupted turn is too large for the bus, not published", "session", o.m.ID, "turn", id, "err", err)
		} else if err != nil {
			return err
		}
		return nil
	}
	// The running ones (with a turn) first.
	slices.SortStableFunc(gens, func(a, b ended) int { return cmp.Compare(b.turn, a.turn) })
	published := make(map[int64]bool, len(ids))
	for _, g := range gens {
		if err := o.publishGenerationEnd(ctx, tx, o.m, g.id, g.turn, GenInterrupted, &ErrorInfo{Code: "interrupted", Message: genMsg}); err != nil {
			return err
		}
		if g.turn != 0 && slices.Contains(ids, g.turn) && !published[g.turn] {
			if err := publishTurn(g.turn); err != nil {
				return err
			}
			published[g.turn] = true
		}
	}
	if len(gens) > 0 {
		o.svc.queued.signal(o.m.ID) // queued ones ended too (see startGeneration)
	}
	for _, id := range ids { // a streaming turn whose generation had ended
		if !published[id] {
			if err := publishTurn(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// check returns ErrNotFound unless the session exists and owner may see it
// ("" sees every session).
func (o *sessionObj) check(owner string) error {
	if o.m == nil || o.deleting || (owner != "" && o.m.Owner != owner) {
		return ErrNotFound
	}
	return nil
}

func (o *sessionObj) session(ctx context.Context, tx *objects.Tx) (*Session, error) {
	m := o.m
	s := &Session{ID: m.ID, Title: m.Title, Model: m.Model, System: m.System, Owner: m.Owner,
		Metadata: m.Metadata, BusyPolicy: m.Policy, CreatedAt: Timestamp{m.CreatedAt}, UpdatedAt: Timestamp{m.UpdatedAt}, HeadTurnID: m.Head}
	if s.BusyPolicy == "" {
		s.BusyPolicy = PolicyQueue // what a PATCH could store before it was refused; it behaves as queue
	}
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM turns`).Scan(&s.LastTurnID); err != nil {
		return nil, fmt.Errorf("read last turn: %w", err)
	}
	if o.run != nil {
		s.Generation = &GenRef{ID: o.run.id, Status: GenRunning, Offset: o.run.log.Last()}
	} else {
		var gid string
		err := tx.QueryRow(ctx, `SELECT id FROM generations WHERE status = 'queued' ORDER BY created_at, rowid LIMIT 1`).Scan(&gid)
		if err == nil {
			s.Generation = &GenRef{ID: gid, Status: GenQueued}
		}
	}
	return s, nil
}

func (o *sessionObj) create(ctx context.Context, tx *objects.Tx, owner string, req *CreateRequest, model string) (*Session, error) {
	if o.m != nil {
		return o.existing(ctx, tx, owner, req)
	}
	now := nowMillis()
	return o.establish(ctx, tx, &meta{ID: req.ID, Owner: owner, Title: req.Title, Model: model, System: req.System,
		Metadata: req.Metadata, Policy: req.BusyPolicy, CreatedAt: now, UpdatedAt: now, CreateKey: req.IdempotencyKey})
}

// existing answers a create of a session that exists: the session itself
// when a repeat of the request that made it (the same owner and
// Idempotency-Key), ErrConflict otherwise.
func (o *sessionObj) existing(ctx context.Context, tx *objects.Tx, owner string, req *CreateRequest) (*Session, error) {
	if req.IdempotencyKey != "" && o.m.CreateKey == req.IdempotencyKey && o.m.Owner == owner {
		return o.session(ctx, tx)
	}
	return nil, fmt.Errorf("%w: session %s already exists", errSessionExists, req.ID)
}

// establish records a new session's metadata, with defaults filled in,
// announces it, and returns it as the API shows it.
func (o *sessionObj) establish(ctx context.Context, tx *objects.Tx, m *meta) (*Session, error) {
	if len(m.Metadata) == 0 {
		m.Metadata = json.RawMessage("{}")
	}
	if m.Policy == "" {
		m.Policy = PolicyQueue
	}
	if err := saveMeta(ctx, tx, m); err != nil {
		return nil, err
	}
	if err := o.publish(ctx, tx, m, "created", map[string]any{"title": m.Title, "model": m.Model}); err != nil {
		return nil, err
	}
	o2 := *o
	o2.m = m
	s, err := o2.session(ctx, tx)
	if err == nil {
		o.m = m
	}
	return s, err
}

// update applies req and reports whether it changed anything. A request
// that changes nothing saves nothing: updated_at, which orders the list,
// stays.
func (o *sessionObj) update(ctx context.Context, tx *objects.Tx, req *UpdateRequest) (*Session, bool, error) {
	m := *o.m
	changed := false
	set := func(dst *string, v *string) {
		if v != nil && *dst != *v {
			*dst, changed = *v, true
		}
	}
	set(&m.Title, req.Title)
	set(&m.Model, req.Model)
	set(&m.System, req.System)
	set(&m.Policy, req.BusyPolicy)
	if len(req.Metadata) > 0 && !sameJSON(m.Metadata, req.Metadata) {
		m.Metadata, changed = req.Metadata, true
	}
	if !changed {
		s, err := o.session(ctx, tx)
		return s, false, err
	}
	m.UpdatedAt = nowMillis()
	if err := saveMeta(ctx, tx, &m); err != nil {
		return nil, false, err
	}
	o2 := *o
	o2.m = &m
	s, err := o2.session(ctx, tx)
	if err == nil {
		o.m = &m
	}
	return s, err == nil, err
}

// sameJSON reports whether two JSON texts hold the same value: the same
// but for white space, the order of an object's keys, and how a number is
// written (1, 1.0 and 10e-1 are one number; no two different numbers are
// taken for one, as float64 would for large integers).
func sameJSON(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	va, errA := decodeExact(a)
	vb, errB := decodeExact(b)
	return errA == nil && errB == nil && equalJSON(va, vb)
}

// decodeExact decodes JSON with its numbers as written.
func decodeExact(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

// equalJSON compares values from decodeExact.
func equalJSON(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || !equalJSON(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalJSON(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		return ok && sameNumber(string(x), string(y))
	default: // string, bool, nil
		return a == b
	}
}

// sameNumber reports whether two JSON numbers are equal, exactly: each is
// brought to sign, digits without leading or trailing zeros, and exponent.
// One whose exponent does not fit an int is compared as written.
func sameNumber(a, b string) bool {
	if a == b {
		return true
	}
	na, okA := normNumber(a)
	nb, okB := normNumber(b)
	return okA && okB && na == nb
}

type normalNumber struct {
	neg    bool
	digits string
	exp    int
}

func normNumber(s string) (normalNumber, bool) {
	var n normalNumber
	if strings.HasPrefix(s, "-") {
		n.neg, s = true, s[1:]
	}
	mant, e, hasExp := strings.Cut(strings.ToLower(s), "e")
	if hasExp {
		x, err := strconv.Atoi(e)
		if err != nil || x > 1<<30 || x < -(1<<30) {
			return n, false
		}
		n.exp = x
	}
	whole, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(whole+frac, "0")
	n.exp -= len(frac)
	trimmed := strings.TrimRight(digits, "0")
	n.exp += len(digits) - len(trimmed)
	n.digits = trimmed
	if n.digits == "" { // zero, whatever its sign and exponent
		return normalNumber{}, true
	}
	return n, true
}

// requestHash identifies a PostRequest for idempotency.
func requestHash(req *PostRequest) string {
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00%v\x00%s\x00%d\x00", len(req.Turns), req.Generate, req.Model, req.Parent)
	for _, t := range req.Turns {
		fmt.Fprintf(h, "%s\x00%s\x00%d\x00", t.Role, t.ToolCallID, len(t.Content))
		h.Write(t.Content) // as sent: hashing needs no re-encoding
	}
	if req.Root {
		// Only when set: the hash of every request without it is the one
		// recorded before root existed.
		h.Write([]byte("root\x00"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// post appends turns and starts or queues a generation. It is idempotent by
// req.IdempotencyKey: a repeat returns the original result.
func (o *sessionObj) post(ctx context.Context, tx *objects.Tx, req *PostRequest) (*PostResult, error) {
	if err := req.check(); err != nil {
		return nil, err // before anything is written, the idempotency row included
	}
	var hash string
	if req.IdempotencyKey != "" {
		hash = requestHash(req)
		res, found, err := o.replay(ctx, tx, req.IdempotencyKey, hash)
		if found || err != nil {
			return res, err
		}
	}
	if req.Model != "" && !req.Generate {
		// Unused, but a model this server does not serve is a mistake the
		// client should hear of, as it does on create, update and a
		// generating post (checked below, with the generation).
		if err := o.svc.checkModel(req.Model); err != nil {
			return nil, err
		}
	}
	m := *o.m
	now := nowMillis()
	hasUser := false
	for _, t := range req.Turns {
		hasUser = hasUser || t.Role == RoleUser
	}
	if o.run != nil && hasUser {
		switch m.Policy {
		case PolicyReject:
			return nil, fmt.Errorf("%w: generation %s is running and this session rejects new turns meanwhile", ErrGenerationRunning, o.run.id)
		case PolicyInterrupt:
			run := o.run
			tx.OnCommit(func() { run.cancel(errInterrupted) })
		}
	}
	parent := m.Head
	if req.Root {
		if m.Head != 0 {
			m.Branched = true
		}
		parent = 0
	} else if req.Parent != 0 {
		if _, err := o.getTurn(ctx, tx, req.Parent); err != nil {
			return nil, fmt.Errorf("%w: parent turn %d does not exist", ErrInvalid, req.Parent)
		}
		if req.Parent != m.Head {
			m.Branched = true
		}
		parent = req.Parent
	}
	if len(req.Turns) == 0 && parent == 0 {
		return nil, fmt.Errorf("%w: nothing to answer: the session has no turns yet; post one with generate", ErrInvalid)
	}
	res := &PostResult{Turns: []Turn{}}
	var tools toolRun
	lastPreview := ""
	for _, nt := range req.Turns {
		t := Turn{Role: nt.Role, Content: nt.Content, Status: TurnComplete, CreatedAt: Timestamp{now}}
		if parent > 0 {
			p := parent
			t.ParentID = &p
		}
		if nt.ToolCallID != "" {
			if err := tools.check(ctx, o, tx, parent, nt.ToolCallID); err != nil {
				return nil, err
			}
			id := nt.ToolCallID
			t.ToolCallID = &id
		}
		if err := insertTurn(ctx, tx, &t, ""); err != nil {
			return nil, err
		}
		if t.Role == RoleTool {
			tools.last = t.ID
		}
		m.noteTurn(t.ID)
		p := preview(t)
		if p != "" {
			lastPreview = p
		}
		if err := o.publishTurn(ctx, tx, &m, t, p); err != nil {
			return nil, err
		}
		parent = t.ID
		res.Turns = append(res.Turns, t)
	}
	m.Head = parent
	m.UpdatedAt = now
	var run *genRun
	var launch func()
	if req.Generate {
		model := req.Model
		if model == "" {
			model = m.Model
		}
		if err := o.svc.checkModel(model); err != nil {
			return nil, err
		}
		queued, err := o.queuedCount(ctx, tx)
		if err != nil {
			return nil, err
		}
		if queued >= MaxQueuedGenerations {
			return nil, fmt.Errorf("%w: %d generations are queued already; wait for one to end", ErrGenerationRunning, queued)
		}
		if o.run != nil || queued > 0 {
			g := &Generation{ID: newGenerationID(), Status: GenQueued}
			if _, err := tx.Exec(ctx, `INSERT INTO generations (id, turn_id, parent_id, model, status, created_at) VALUES (?, 0, ?, ?, 'queued', ?)`,
				g.ID, parent, model, now.UnixMilli()); err != nil {
				return nil, fmt.Errorf("queue generation: %w", err)
			}
			res.Generation = g
		} else {
			g, r, l, err := o.startGeneration(ctx, tx, &m, newGenerationID(), parent, model, now)
			if err != nil {
				return nil, err
			}
			res.Generation, run, launch = g, r, l
		}
	}
	// The directory's preview: the last posted turn with text; else, when
	// the head moved to another place, what branchPreview finds there;
	// else the entry's own.
	var dirPreview *string
	switch {
	case lastPreview != "":
		dirPreview = &lastPreview
	case m.Head != o.m.Head:
		p, err := o.branchPreview(ctx, tx, m.Head)
		if err != nil {
			return nil, err
		}
		dirPreview = &p
	}
	// The row changes only if the head is no longer simply the newest turn
	// (see meta); updated_at follows from the turns just inserted.
	if m.storedHead() != o.m.storedHead() || m.Branched != o.m.Branched {
		if err := saveMeta(ctx, tx, &m); err != nil {
			return nil, err
		}
	}
	if req.IdempotencyKey != "" {
		ids := make([]int64, len(res.Turns))
		for i, t := range res.Turns {
			ids[i] = t.ID
		}
		idsJSON, _ := json.Marshal(ids)
		var gid any
		if res.Generation != nil {
			gid = res.Generation.ID
		}
		if _, err := tx.Exec(ctx, `INSERT INTO idempotency (key, request, turn_ids, generation, created_at) VALUES (?, ?, ?, ?, ?)`,
			req.IdempotencyKey, hash, string(idsJSON), gid, now.UnixMilli()); err != nil {
			return nil, fmt.Errorf("record idempotency key: %w", err)
		}
	}
	turns := res.Turns
	var genMsg []byte
	if res.Generation != nil {
		genMsg = GenerationMessageJSON(res.Generation)
	}
	o.m = &m
	if run != nil {
		o.run = run
	}
	tx.OnCommit(func() {
		for _, t := range turns {
			o.svc.broadcastTurn(m.ID, t)
		}
		if genMsg != nil {
			o.svc.broadcast(m.ID, genMsg)
		}
		if launch != nil {
			launch()
		}
		o.svc.touchDirectory(&m, dirPreview)
	})
	return res, nil
}

// maxToolResults bounds the tool turns callsAnswered walks back over.
const maxToolResults = 1000

// toolRun is what post knows of the calls its tool turns answer: the
// calling turn found for the last tool turn it inserted, so that the
// results after it in one request are checked without a walk each.
type toolRun struct {
	last      int64    // the tool turn inserted last by this post; 0: none
	caller    int64    // the assistant turn that made the calls; 0: none found
	calls     []string // its calls' ids
	answered  []string // the calls the results after it answer, up to last
	unchecked bool     // caller is the running generation's turn: calls not stored yet
	cut       []string // caller's calls cut short (callCut)
	ended     string   // caller's status, or its finish reason when that cut the calls
}

// check checks that a tool turn under parent answers a call (see
// callsAnswered), walking back only when parent is not the tool turn this
// post inserted last.
func (r *toolRun) check(ctx context.Context, o *sessionObj, tx *objects.Tx, parent int64, callID string) error {
	if parent == 0 || parent != r.last {
		var err error
		if r.caller, r.calls, r.answered, r.unchecked, r.cut, r.ended, err = o.callsAnswered(ctx, tx, parent); err != nil {
			return err
		}
	}
	switch {
	case slices.Contains(r.cut, callID):
		return fmt.Errorf("%w: tool_call_id %q: assistant turn %d ended %s with that call cut short (its arguments are not JSON): it takes no result; post a user turn, or generate again", ErrInvalid, callID, r.caller, r.ended)
	case r.caller != 0 && slices.Contains(r.answered, callID):
		// Only the first result of a call reaches the model (see
		// pairToolCalls): a second would be stored for nothing.
		return fmt.Errorf("%w: tool_call_id %q: the call of assistant turn %d has its result already", ErrInvalid, callID, r.caller)
	case r.unchecked || slices.Contains(r.calls, callID):
		r.answered = append(r.answered, callID)
		return nil
	case r.caller == 0:
		return fmt.Errorf("%w: tool_call_id %q: a tool result must follow the assistant turn that made the call (and its other results)", ErrInvalid, callID)
	}
	return fmt.Errorf("%w: tool_call_id %q answers no tool call of assistant turn %d, which the tool result follows", ErrInvalid, callID, r.caller)
}

// callsAnswered returns the assistant turn whose calls a tool turn under
// parent answers: the one its run of tool results follows, with the ids of
// its calls (caller 0 when the run follows no assistant turn) and of the
// calls the run's results answer. A result that answers nothing, or a call
// answered already, would be left out of every context (see
// assembleContext), and the model asked the same again (an agent looping
// on a mistyped id): post refuses it. The running generation's turn, whose
// calls are not stored yet, is unchecked but for calls answered already.
func (o *sessionObj) callsAnswered(ctx context.Context, tx *objects.Tx, parent int64) (caller int64, calls, answered []string, unchecked bool, cut []string, ended string, err error) {
	at := parent
	for range maxToolResults {
		if at == 0 {
			return 0, nil, nil, false, nil, "", nil
		}
		var up sql.NullInt64
		var role, status string
		var stored, callID, finish sql.NullString
		if err := tx.QueryRow(ctx, `SELECT parent_id, role, tool_calls, tool_call_id, status, finish_reason FROM turns WHERE id = ?`, at).Scan(&up, &role, &stored, &callID, &status, &finish); err != nil {
			return 0, nil, nil, false, nil, "", fmt.Errorf("read turn %d: %w", at, err)
		}
		switch role {
		case RoleTool:
			if callID.Valid {
				answered = append(answered, callID.String)
			}
			at = up.Int64
			continue
		case RoleAssistant:
			if o.run != nil && o.run.turnID == at {
				return at, nil, answered, true, nil, "", nil
			}
			var made []ToolCall
			if stored.Valid {
				if err := json.Unmarshal([]byte(stored.String), &made); err != nil {
					return 0, nil, nil, false, nil, "", fmt.Errorf("read the tool calls of turn %d: %w", at, err)
				}
			}
			var fr *string
			if finish.Valid {
				fr = &finish.String
			}
			ended = status
			if status == TurnComplete {
				ended = "at the token limit (finish reason " + FinishLength + ")"
			}
			for _, c := range made {
				if callCut(status, fr, c) {
					cut = append(cut, c.ID)
				} else {
					calls = append(calls, c.ID)
				}
			}
			return at, calls, answered, false, cut, ended, nil
		}
		return 0, nil, nil, false, nil, "", nil
	}
	return 0, nil, nil, false, nil, "", nil
}

// replay answers a repeated idempotency key with the original result.
func (o *sessionObj) replay(ctx context.Context, tx *objects.Tx, key, hash string) (*PostResult, bool, error) {
	var stored, idsJSON string
	var gid *string
	err := tx.QueryRow(ctx, `SELECT request, turn_ids, generation FROM idempotency WHERE key = ?`, key).Scan(&stored, &idsJSON, &gid)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read idempotency key: %w", err)
	}
	if stored != hash {
		return nil, true, fmt.Errorf("%w: idempotency key %q was used for a different request", ErrConflict, key)
	}
	var ids []int64
	if err := json.Unmarshal([]byte(idsJSON), &ids); err != nil {
		return nil, true, err
	}
	res := &PostResult{Turns: []Turn{}, replayed: true}
	for _, id := range ids {
		t, err := o.getTurn(ctx, tx, id)
		if err != nil {
			return nil, true, err
		}
		res.Turns = append(res.Turns, t)
	}
	if gid != nil {
		g, err := o.generation(ctx, tx, *gid)
		if err != nil {
			return nil, true, err
		}
		res.Generation = g
	}
	return res, true, nil
}

// MaxQueuedGenerations bounds the generations waiting in one session's
// queue (busy policy queue); a post that would queue one more is refused
// with ErrGenerationRunning. Each would be a model call of its own.
const MaxQueuedGenerations = 16

// queuedCount counts the session's queued generations.
func (o *sessionObj) queuedCount(ctx context.Context, tx *objects.Tx) (int, error) {
	var n int
	err := tx.QueryRow(ctx, `SELECT count(*) FROM generations WHERE status = 'queued'`).Scan(&n)
	return n, err
}

func (o *sessionObj) generation(ctx context.Context, tx *objects.Tx, gid string) (*Generation, error) {
	g := &Generation{ID: gid}
	var code, msg *string
	err := tx.QueryRow(ctx, `SELECT status, turn_id, offset, error_code, error_message FROM generations WHERE id = ?`, gid).
		Scan(&g.Status, &g.TurnID, &g.Offset, &code, &msg)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("generation %s: %w", gid, ErrNotFound)
	}
	if err != nil { // a call whose caller left, say: not a missing generation
		return nil, fmt.Errorf("read generation %s: %w", gid, err)
	}
	if o.run != nil && o.run.id == gid {
		g.Offset = o.run.log.Last()
	}
	if g.Offset == 0 && g.TurnID == 0 && g.Finished() {
		// Ended before it started: its final event is its only one, at
		// the first offset (see endedUnstarted).
		g.Offset = 1
	}
	if code != nil {
		g.Error = &ErrorInfo{Code: *code, Message: deref(msg)}
	}
	return g, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// turns pages through a branch (see TurnQuery and API.md).
func (o *sessionObj) turns(ctx context.Context, tx *objects.Tx, q TurnQuery) ([]Turn, bool, error) {
	leaf := q.Branch
	if leaf == 0 {
		leaf = o.m.Head
	} else {
		// Refused as an unknown parent_id is: without the check, an unknown
		// leaf reads as the whole head branch or as none, by the history.
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM turns WHERE id = ?`, leaf).Scan(&n); err != nil {
			return nil, false, err
		}
		if n == 0 {
			return nil, false, fmt.Errorf("%w: turn %d does not exist", ErrInvalid, leaf)
		}
	}
	if leaf == 0 {
		return []Turn{}, false, nil
	}
	limit, budget := q.Limit, o.svc.MaxPageBytes
	var out []Turn
	var cut bool
	var err error
	switch {
	case !o.m.Branched && q.After != nil:
		out, cut, err = o.queryTurnsUpTo(ctx, tx, budget, `SELECT `+turnColumns+` FROM turns WHERE id > ? AND id <= ? ORDER BY id LIMIT ?`, *q.After, leaf, limit+1)
	case !o.m.Branched:
		before := leaf + 1
		if q.Before != nil && *q.Before < before {
			before = *q.Before
		}
		out, cut, err = o.queryTurnsUpTo(ctx, tx, budget, `SELECT `+turnColumns+` FROM turns WHERE id < ? ORDER BY id DESC LIMIT ?`, before, limit+1)
	case q.After != nil:
		out, cut, err = o.branchTurnsAfter(ctx, tx, leaf, *q.After, limit+1, budget)
	default:
		var before int64
		if q.Before != nil {
			before = *q.Before
		}
		out, cut, err = o.branchTurns(ctx, tx, leaf, before, limit+1, budget)
	}
	if err != nil {
		return nil, false, err
	}
	more := len(out) > limit || cut
	if len(out) > limit {
		out = out[:limit]
	}
	if q.After == nil { // newest first → ascending
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	if out == nil {
		out = []Turn{}
	}
	return out, more, nil
}

// branchPreview returns the preview the directory shows for a session
// whose head is turn head: the text of the nearest turn on head's branch
// that has any (head itself, or its parent, and so on up), so that a head
// without text (an assistant turn that only calls tools, an image, a
// generation just started) shows the words above it, never those of
// another branch. It looks at most maxPreviewWalk turns up; "" when none
// of them has text.
func (o *sessionObj) branchPreview(ctx context.Context, tx *objects.Tx, head int64) (string, error) {
	for i := 0; head > 0 && i < maxPreviewWalk; i++ {
		t, err := o.getTurn(ctx, tx, head)
		if errors.Is(err, ErrNotFound) {
			return "", nil // a parent link an old import left dangling
		}
		if err != nil {
			return "", fmt.Errorf("preview of turn %d: %w", head, err)
		}
		if p := preview(t); p != "" {
			return p, nil
		}
		head = 0
		if t.ParentID != nil {
			head = *t.ParentID
		}
	}
	return "", nil
}

// maxPreviewWalk bounds the turns branchPreview reads.
const maxPreviewWalk = 64

// preview is the directory's one-line summary of a turn.
func preview(t Turn) string {
	c := t.Content
	var s string
	if text, ok := plainString(c); ok {
		s = text
	} else {
		// A preview needs the first words only: decode a bounded prefix, so
		// that a 32 MiB turn costs no more than a short one.
		if len(c) > 4096 && c[0] == '"' {
			// Cut after about 2 KiB, between escapes: step over each
			// whole (\n, \\, \u00e9). The string's closing quote is its
			// last byte, so none comes before.
			cut := 1
			for cut < 2048 {
				switch {
				case c[cut] != '\\':
					cut++
				case c[cut+1] == 'u':
					cut += 6
				default:
					cut += 2
				}
			}
			t.Content = append(append([]byte(nil), c[:cut]...), '"')
		}
		s = turnMessage(t).Text()
	}
	s = strings.Join(strings.Fields(s), " ")
	return truncateRunes(s, previewRunes)
}

// previewRunes is the length of a preview, in runes, before its "…".
const previewRunes = 140

// plainString returns the text of a JSON string without escapes, the
// common turn, without decoding it: up to 4 KiB of it, enough for a
// preview. ok is false for anything else (an escape, invalid UTF-8, not a
// string), which takes encoding/json.
func plainString(c []byte) (string, bool) {
	if len(c) < 2 || c[0] != '"' || c[len(c)-1] != '"' {
		return "", false
	}
	c = c[1 : len(c)-1]
	if len(c) > 4096 {
		c = c[:4096]
		for len(c) > 0 && !utf8.RuneStart(c[len(c)-1]) { // whole runes only
			c = c[:len(c)-1]
		}
		if len(c) > 0 {
			c = c[:len(c)-1]
		}
	}
	if bytes.IndexByte(c, '\\') >= 0 || !utf8.Valid(c) {
		return "", false
	}
	return string(c), true
}

var errInterrupted = errors.New("session: interrupted by a new turn")

package session

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"sessiond/objects"
)

// NamespacePartials holds the node's journal of partial output: one object,
// JournalName, with the output of every running generation of the node.
const NamespacePartials = "partials"

// JournalName names the journal object. A node has one; a cluster will
// name each node's after the node.
const JournalName = "node"

// journalCacheKiB and journalCheckpointFrames size the journal database's
// page cache and WAL. Its table and index hold a row per running
// generation per round (~80,000 for 1,000 streams of 20 s, ~10 MB), and a
// round touches most of the index (~600 pages). With the defaults (256 KiB,
// a checkpoint every ~1,000 pages) every round read pages back from the
// file, spilled them to the WAL, and was checkpointed every round or two,
// copying the same index pages again: BenchmarkJournalRound 22.6-24.4 ms
// a round, against 15.1-16.4 with the cache alone (alternating) and 11.7
// with the WAL too (a WAL of up to ~60 MB).
const (
	journalCacheKiB         = 16 << 10
	journalCheckpointFrames = 10000
)

// journalSchema is the journal's schema. A row is a piece of a streaming
// turn's output: the text since the previous piece, in id order.
var journalSchema = []string{
	`CREATE TABLE partial (
		id         INTEGER PRIMARY KEY,
		session    TEXT NOT NULL,
		turn_id    INTEGER NOT NULL,
		upto       INTEGER NOT NULL, -- the generation's stream offset after this piece
		text       TEXT NOT NULL,    -- text produced since the previous piece
		tool_calls TEXT              -- every tool call so far (JSON), when they changed: rows of older builds
	);
	CREATE INDEX partial_turn ON partial (session, turn_id);`,
	// tool_deltas: the tool call parts since the previous piece (a JSON
	// array of ToolCallDelta), saved like the text. A coding agent's call
	// of a few MiB, saved whole every round, wrote gigabytes for one call.
	`ALTER TABLE partial ADD COLUMN tool_deltas TEXT`,
	// reserve: the highest stream offset the generation may reach before
	// the next round (see offsetLease).
	`ALTER TABLE partial ADD COLUMN reserve INTEGER`,
}

// offsetLease is how many offsets past the last one saved a generation may
// stream before the journal has recorded that it may. Deltas past the last
// round are lost to a crash, yet clients may have seen them: the final
// event of a generation a crash interrupted takes the offset after the
// highest one recorded (interruptStreaming), so that a client that saw an
// unsaved delta is still behind it and, resuming, is sent the saved turn
// (and not told that it has everything). A generation that streams this
// many deltas within one round waits for the next, which it asks for at
// once: 65,536 in 250 ms is far beyond any model.
const offsetLease = 1 << 16

// journal saves the output of running generations for a crash. Each
// generation hands it every delta (in memory, no I/O); every
// PersistInterval one goroutine writes what came since the last round,
// for all of the node's generations, in one commit of the journal object.
// A thousand streams thus cost four commits a second rather than one per
// stream every PersistInterval (saved in each session's own database, that
// was 4,000 commits a second and a sixth of their CPU).
//
// A generation's rows are deleted in the round after its turn is
// committed (end). After a crash, a session reads its streaming turn's
// output from the journal when it wakes (interruptStreaming), and start-up
// wakes every session the journal names (recoverPartials), so nothing waits
// for a client to look, and rows of turns that were committed but not yet
// forgotten are dropped.
type journal struct {
	svc *Service

	mu   sync.Mutex
	live map[turnKey]*journalEntry // running generations
	gone map[turnKey]struct{}      // ended: delete their rows in the next round

	wake      chan struct{} // a generation began: rounds start again
	hurried   chan struct{} // a generation waits for its lease: a round now
	stop      chan struct{}
	done      chan struct{}
	started   bool
	closeOnce sync.Once
}

type turnKey struct {
	session string
	turn    int64
}

// journalEntry is one running generation's output not yet written.
type journalEntry struct {
	mu      sync.Mutex
	text    []byte     // since the last round
	calls   []callPart // tool call parts since the last round
	upto    int64      // offset of the last delta added
	changed bool

	reserved int64         // deltas may go up to this offset (see offsetLease)
	raised   chan struct{} // closed when reserved grows
}

// lease waits until the generation may stream its next delta: until a
// round has recorded a reservation that covers its offset (hurry asks for
// one now), or ctx is done.
func (e *journalEntry) lease(ctx context.Context, hurry func()) error {
	e.mu.Lock()
	for e.upto+1 > e.reserved {
		ch := e.raised
		e.mu.Unlock()
		hurry()
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		e.mu.Lock()
	}
	e.mu.Unlock()
	return nil
}

// raise records that a round committed reservation upto: deltas may go up
// to it.
func (e *journalEntry) raise(upto int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if upto <= e.reserved {
		return
	}
	e.reserved = upto
	close(e.raised)
	e.raised = make(chan struct{})
}

// callPart is the tool call parts of one call since the last round, merged.
type callPart struct {
	index    int
	id, name string
	args     []byte
}

// add records a delta with stream offset upto. The generation's own
// builder has accepted d, so its tool call part is in order, and its name,
// when it has one, is the call's whole name so far (runGeneration), which
// ResultBuilder takes over the name of an earlier piece. Consecutive parts
// of one call are merged.
func (e *journalEntry) add(d Delta, upto int64) {
	e.mu.Lock()
	e.text = append(e.text, d.Text...)
	if tc := d.ToolCall; tc != nil {
		if n := len(e.calls); n > 0 && e.calls[n-1].index == tc.Index {
			c := &e.calls[n-1]
			if c.id == "" {
				c.id = tc.ID
			}
			if tc.Name != "" {
				c.name = tc.Name
			}
			c.args = append(c.args, tc.Arguments...)
		} else {
			e.calls = append(e.calls, callPart{index: tc.Index, id: tc.ID, name: tc.Name, args: []byte(tc.Arguments)})
		}
	}
	e.upto, e.changed = upto, true
	e.mu.Unlock()
}

// piece is a row about to be written.
type piece struct {
	key   turnKey
	text  []byte
	calls []callPart
	upto  int64
	entry *journalEntry
}

// callsJSON returns the piece's tool call parts as a JSON array of
// ToolCallDelta, or nil when it has none.
func (p piece) callsJSON() any {
	if len(p.calls) == 0 {
		return nil
	}
	ds := make([]ToolCallDelta, len(p.calls))
	for i, c := range p.calls {
		ds[i] = ToolCallDelta{Index: c.index, ID: c.id, Name: c.name, Arguments: string(c.args)}
	}
	b, _ := json.Marshal(ds)
	return string(b)
}

// newJournalObject builds the journal object's instance: it has no state
// in memory, every call works on its database.
func newJournalObject(context.Context, *objects.Handle, *objects.Tx) (any, error) {
	return struct{}{}, nil
}

func newJournal(svc *Service) *journal {
	return &journal{svc: svc, live: make(map[turnKey]*journalEntry), gone: make(map[turnKey]struct{}),
		wake: make(chan struct{}, 1), hurried: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// begin registers a generation's streaming turn and returns its entry. Its
// first offsetLease offsets are reserved by its mark.
func (j *journal) begin(session string, turn int64) *journalEntry {
	e := &journalEntry{reserved: offsetLease, raised: make(chan struct{})}
	j.mu.Lock()
	j.live[turnKey{session, turn}] = e
	j.mu.Unlock()
	select {
	case j.wake <- struct{}{}:
	default:
	}
	return e
}

// mark records, before the commit that starts a generation, that the
// session's turn is streaming: start-up wakes every session the journal
// names (recoverPartials), and a generation killed before its first round
// of output would otherwise stay running until a client looked. It is
// written with the runtime's durability, so that a synced start has a
// synced mark. A start that does not commit leaves an empty row, dropped
// in the next round.
func (j *journal) mark(ctx context.Context, tx *objects.Tx, session string, turn int64) error {
	k := turnKey{session, turn}
	j.mu.Lock()
	delete(j.gone, k) // a start of this turn that rolled back: its row is this one's
	j.mu.Unlock()
	stub, err := j.stub()
	if err == nil {
		_, err = stub.Exec(ctx, nil, `INSERT INTO partial (session, turn_id, upto, text, reserve) VALUES (?, ?, 0, '', ?)`, session, turn, offsetLease)
	}
	if err != nil {
		return fmt.Errorf("record the streaming turn in the journal: %w", err)
	}
	tx.OnRollback(func() { j.end(session, turn) })
	return nil
}

// end forgets a turn whose output is committed: whatever the generation
// added since the last round is dropped, and its rows are deleted in the
// next round.
func (j *journal) end(session string, turn int64) {
	j.mu.Lock()
	delete(j.live, turnKey{session, turn})
	j.gone[turnKey{session, turn}] = struct{}{}
	j.mu.Unlock()
}

// running reports whether a generation of this process is writing turn:
// one whose session's instance was rebuilt under it (after a failed
// commit, or a panic), where a crash leaves none.
func (j *journal) running(session string, turn int64) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	_, ok := j.live[turnKey{session, turn}]
	return ok
}

// hurry asks for a round now: a generation waits for its lease.
func (j *journal) hurry() {
	select {
	case j.hurried <- struct{}{}:
	default:
	}
}

func (j *journal) stub() (*objects.Stub, error) {
	return j.svc.partials.Get(JournalName)
}

// start starts writing a round every interval (DefaultPersistInterval if
// not positive) until close.
func (j *journal) start(interval time.Duration) {
	if interval <= 0 {
		interval = DefaultPersistInterval
	}
	j.started = true
	go j.run(interval)
}

// run writes a round every interval while generations run or rows wait
// for deletion, sleeps while none do, and writes a last round at close.
func (j *journal) run(interval time.Duration) {
	defer close(j.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-j.stop:
			j.flush()
			return
		case <-t.C:
		case <-j.hurried:
		}
		if j.flush() {
			continue
		}
		t.Stop()
		select {
		case <-j.stop:
			j.flush()
			return
		case <-j.wake:
		case <-j.hurried:
		}
		t.Reset(interval)
	}
}

// close ends run after its last round, if start started it. Later calls
// do nothing.
func (j *journal) close() {
	if !j.started {
		return
	}
	j.closeOnce.Do(func() { close(j.stop) })
	<-j.done
}

// flush writes one round: new pieces of running generations and the
// deletion of ended ones, in one commit. A failed round is retried with
// the next: its pieces go back in front of what came since. It reports
// whether more rounds are needed: generations run, or deletions wait.
func (j *journal) flush() (busy bool) {
	if j.svc.rt.Fault() != nil {
		// Fenced after a failed disk flush: no round can be written until
		// the restart, which recovers from what the disk holds. Retrying
		// every interval would only log.
		return false
	}
	pieces, gone := j.take()
	if len(pieces) > 0 || len(gone) > 0 {
		if err := j.write(pieces, gone); err != nil {
			j.svc.logger().Warn("session: persist partial output, will retry", "generations", len(pieces), "err", err)
			j.restore(pieces, gone)
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.live) > 0 || len(j.gone) > 0
}

// take removes what the next round writes: each running generation's
// output since the last round, and the turns ended since.
func (j *journal) take() ([]piece, map[turnKey]struct{}) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var pieces []piece
	for k, e := range j.live {
		e.mu.Lock()
		if e.changed {
			pieces = append(pieces, piece{key: k, text: e.text, calls: e.calls, upto: e.upto, entry: e})
			e.text, e.calls, e.changed = nil, nil, false
		}
		e.mu.Unlock()
	}
	var gone map[turnKey]struct{}
	if len(j.gone) > 0 {
		gone, j.gone = j.gone, make(map[turnKey]struct{})
	}
	return pieces, gone
}

// restore puts back what a failed round took, in front of what came since;
// the pieces of turns ended meanwhile are dropped (their output is
// committed).
func (j *journal) restore(pieces []piece, gone map[turnKey]struct{}) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for k := range gone {
		j.gone[k] = struct{}{}
	}
	for _, p := range pieces {
		e := j.live[p.key]
		if e == nil {
			continue
		}
		e.mu.Lock()
		e.text = append(p.text, e.text...)
		e.calls = append(p.calls, e.calls...)
		e.changed = true
		e.mu.Unlock()
	}
}

// write commits one round. Partial output is there for a crash of the
// process, which a commit without fsync survives: it skips the fsync even
// in full durability (power loss costs at most the output since the last
// commit of the turn itself).
func (j *journal) write(pieces []piece, gone map[turnKey]struct{}) error {
	stub, err := j.stub()
	if err != nil {
		return err
	}
	_, err = stub.CallWith(context.Background(), &objects.CallOptions{Durability: objects.DurabilityNormal},
		func(ctx context.Context, _ any, tx *objects.Tx) (any, error) {
			// Deletions first: a session deleted and made again under its
			// id may number a new turn as an ended one.
			for k := range gone {
				if _, err := tx.Exec(ctx, `DELETE FROM partial WHERE session = ? AND turn_id = ?`, k.session, k.turn); err != nil {
					return nil, err
				}
			}
			for _, p := range pieces {
				if _, err := tx.Exec(ctx, `INSERT INTO partial (session, turn_id, upto, text, tool_deltas, reserve) VALUES (?, ?, ?, ?, ?, ?)`,
					p.key.session, p.key.turn, p.upto, string(p.text), p.callsJSON(), p.upto+offsetLease); err != nil {
					return nil, err
				}
			}
			return nil, nil
		})
	if err != nil {
		return err
	}
	for _, p := range pieces {
		p.entry.raise(p.upto + offsetLease)
	}
	return nil
}

// read joins the pieces of a streaming turn's output written so far.
func (j *journal) read(ctx context.Context, session string, turn int64) (partial, error) {
	var p partial
	stub, err := j.stub()
	if err != nil {
		return p, err
	}
	_, err = stub.Call(ctx, func(ctx context.Context, _ any, tx *objects.Tx) (any, error) {
		rows, err := tx.Query(ctx, `SELECT upto, text, tool_calls, tool_deltas, reserve FROM partial WHERE session = ? AND turn_id = ? ORDER BY id`, session, turn)
		if err != nil {
			return nil, err
		}
		p, err = joinPieces(rows)
		return nil, err
	})
	if err != nil {
		return p, fmt.Errorf("read partial output of turn %d: %w", turn, err)
	}
	return p, nil
}

// joinPieces reads rows of (upto, text, tool_calls, tool_deltas, reserve)
// in order and closes them: the text is the concatenation; the tool calls
// are the parts of every row merged, or (rows of older builds) the last
// tool_calls given; the reservation is the highest.
func joinPieces(rows *objects.Rows) (partial, error) {
	defer rows.Close()
	var p partial
	var b ResultBuilder
	parts := false
	for rows.Next() {
		var text string
		var calls, deltas sql.NullString
		var reserve sql.NullInt64
		if err := rows.Scan(&p.upto, &text, &calls, &deltas, &reserve); err != nil {
			return p, err
		}
		p.reserved = max(p.reserved, reserve.Int64)
		if err := b.Add(Delta{Text: text}); err != nil {
			return p, err
		}
		if calls.Valid {
			p.toolCalls = calls.String
		}
		if deltas.Valid {
			var ds []ToolCallDelta
			if err := json.Unmarshal([]byte(deltas.String), &ds); err != nil {
				return p, fmt.Errorf("saved tool call parts: %w", err)
			}
			for i := range ds {
				if err := b.Add(Delta{ToolCall: &ds[i]}); err != nil {
					return p, fmt.Errorf("saved tool call parts: %w", err)
				}
			}
			parts = true
		}
	}
	r := b.Result()
	p.text = r.Text
	if parts {
		j, err := json.Marshal(r.ToolCalls)
		if err != nil {
			return p, err
		}
		p.toolCalls = string(j)
	}
	return p, rows.Err()
}

// recoverPartials wakes every session the journal names, which ends what
// a crash left streaming (newSession), then drops the rows it had at
// start-up: those of turns that were committed just before the crash, and
// of sessions since deleted. A session that cannot be woken keeps its rows
// for the next start.
func (j *journal) recoverPartials(ctx context.Context) {
	stub, err := j.stub()
	if err != nil {
		return
	}
	var sessions []string
	var last int64
	if _, err := stub.Call(ctx, func(ctx context.Context, _ any, tx *objects.Tx) (any, error) {
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM partial`).Scan(&last); err != nil {
			return nil, err
		}
		rows, err := tx.Query(ctx, `SELECT DISTINCT session FROM partial WHERE id <= ?`, last)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				return nil, err
			}
			sessions = append(sessions, s)
		}
		return nil, rows.Err()
	}); err != nil {
		j.svc.logger().Warn("session: read the partial output journal", "err", err)
		return
	}
	woken := 0
	defer func() {
		j.svc.logger().Info("session: start-up recovery done", "sessions", len(sessions), "woken", woken)
	}()
	for _, id := range sessions {
		if ctx.Err() != nil {
			return
		}
		s, err := j.svc.stub(ctx, id)
		switch {
		case err == nil:
			_, err = s.Call(ctx, func(context.Context, any, *objects.Tx) (any, error) { return nil, nil })
			if err == nil {
				woken++
			}
		case errors.Is(err, ErrNotFound):
			err = nil // deleted since: its rows only go
		}
		if err == nil {
			_, err = stub.Exec(ctx, &objects.CallOptions{Durability: objects.DurabilityNormal},
				`DELETE FROM partial WHERE session = ? AND id <= ?`, id, last)
		}
		if err != nil {
			j.svc.logger().Warn("session: recover partial output", "session", id, "err", err)
		}
	}
}

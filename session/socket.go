package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"sessiond/objects"
	"sessiond/streaming"
)

// viewerTag tags the WebSockets of a session's viewers.
const viewerTag = "viewer"

// socketViewer is the viewer behind one held WebSocket. It lives in the
// service, not in the session instance, so it survives hibernation.
type socketViewer struct {
	v       *streaming.Viewer
	session string
	owner   string
	release func() // of the stream counted for owner (Service.OpenStream)
	joined  bool   // in the session's hub (after hello, or the first other message); guarded by the session's serial calls
}

// viewerMap is the set of socket viewers, for closing a deleted session's.
type viewerMap struct {
	mu sync.Mutex
	m  map[*socketViewer]struct{}
}

func (vm *viewerMap) put(sv *socketViewer) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.m == nil {
		vm.m = make(map[*socketViewer]struct{})
	}
	vm.m[sv] = struct{}{}
}

// remove reports whether sv was there.
func (vm *viewerMap) remove(sv *socketViewer) bool {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	_, ok := vm.m[sv]
	delete(vm.m, sv)
	return ok
}

// removeSession forgets every viewer of a session (it was deleted).
func (vm *viewerMap) removeSession(id string) []*socketViewer {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	var out []*socketViewer
	for sv := range vm.m {
		if sv.session == id {
			out = append(out, sv)
			delete(vm.m, sv)
		}
	}
	return out
}

// closeGroup runs viewer closes that must not hold up their caller (a
// session's call, which would otherwise wait for a close handshake with a
// client that may not read): each in a goroutine that Service.Close waits
// for. Unlike a sync.WaitGroup's, Go may be called while Wait waits (a
// socket may end as the service stops).
type closeGroup struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // made by Wait, closed when n drops to 0
}

// Go runs f in a goroutine of the group.
func (g *closeGroup) Go(f func()) {
	g.mu.Lock()
	g.n++
	g.mu.Unlock()
	go func() {
		defer func() {
			g.mu.Lock()
			if g.n--; g.n == 0 && g.idle != nil {
				close(g.idle)
				g.idle = nil
			}
			g.mu.Unlock()
		}()
		f()
	}()
}

// Wait waits until no goroutine of the group runs.
func (g *closeGroup) Wait() {
	g.mu.Lock()
	if g.n == 0 {
		g.mu.Unlock()
		return
	}
	if g.idle == nil {
		g.idle = make(chan struct{})
	}
	idle := g.idle
	g.mu.Unlock()
	<-idle
}

// handOvers order sockets' hand-overs against their sessions' deletions,
// per session: Accept holds its session's read lock from its access check
// to the socket's hand-over, Delete the write lock around its deletion of
// the object. Only the sockets of a session being deleted wait.
type handOvers struct {
	mu sync.Mutex
	m  map[string]*handOver
}

type handOver struct {
	sync.RWMutex
	refs int // guarded by handOvers.mu
}

// get returns session id's lock, to be given back with put.
func (hs *handOvers) get(id string) *handOver {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.m == nil {
		hs.m = make(map[string]*handOver)
	}
	h := hs.m[id]
	if h == nil {
		h = &handOver{}
		hs.m[id] = h
	}
	h.refs++
	return h
}

// put gives back a lock from get, unlocked.
func (hs *handOvers) put(id string, h *handOver) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if h.refs--; h.refs == 0 {
		delete(hs.m, id)
	}
}

// viewerOf returns the viewer a socket was accepted with.
func viewerOf(s *objects.Socket) *socketViewer {
	sv, _ := s.Value().(*socketViewer)
	return sv
}

// Accept hands a WebSocket to the session for owner: the runtime holds it
// (it survives the session's hibernation) and the session answers its
// messages per API.md; streaming.Accept gives ws, or streaming.NewWebSocket
// for a connection accepted otherwise. Once Accept succeeds the caller must
// not use ws. When it fails, ws was not handed over and is left open: the
// caller closes it with the close code for the error (see ErrorCode and
// docs/protocol.md: 1013 for unavailable while the server stops, …).
//
// The socket counts among owner's streams until its connection closes
// (streaming.WebSocket.AfterClose); one from streaming.NewWebSocket, whose
// connection cannot be watched, until its close reaches the session.
func (svc *Service) Accept(ctx context.Context, owner, id string, ws *streaming.WebSocket) error {
	conn := ws.Conn()
	release, err := svc.OpenStream(owner)
	if err != nil {
		return err
	}
	// From the access check to the hand-over, the session's deletion
	// waits (see Delete): the socket is either handed over before the
	// object goes (and closed with it), or refused by the check.
	ho := svc.handOver.get(id)
	ho.RLock()
	defer svc.handOver.put(id, ho)
	defer ho.RUnlock()
	stub, err := svc.stub(ctx, id)
	if err != nil {
		release()
		return err
	}
	// Check access now: a ticket is short-lived, but the session may have
	// been deleted since it was issued.
	if _, err := do(ctx, svc, owner, id, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (struct{}, error) {
		return struct{}{}, nil
	}); err != nil {
		release()
		return err
	}
	sv := &socketViewer{v: streaming.NewViewer(ws, svc.ViewerOptions), session: id, owner: owner, release: release}
	svc.viewers.put(sv)
	// The viewer rides on the socket, so it is there before the first
	// message is delivered.
	if _, err := stub.AcceptWebSocket(ctx, conn, &objects.SocketOptions{Tags: []string{viewerTag}, Value: sv}); err != nil {
		// The viewer never started (nothing was sent to it) and is
		// dropped as it is: closing it would close ws with 1001, and the
		// caller's code for err would never reach the client.
		svc.viewers.remove(sv)
		release()
		return err
	}
	// The socket's end is delivered to the session (WebSocketClose), but
	// that delivery can fail (the session cannot be woken: its database
	// fails to open, its instance is being rebuilt): the slot and the
	// viewer are released when the connection closes, whatever reaches
	// the session.
	ws.AfterClose(func() { svc.closes.Go(func() { svc.forgetViewer(sv) }) })
	return nil
}

// forgetViewer releases what the service holds for a socket that ended:
// its place among its owner's streams, its place in the session's hub and
// its viewer (closed in the background: it may wait for its writer). Only
// the first call does anything: it may come from the socket's close
// delivered to the session, from the connection's own close (see
// Accept), or both.
func (svc *Service) forgetViewer(sv *socketViewer) {
	if !svc.viewers.remove(sv) {
		return
	}
	sv.release()
	if h := svc.existingHub(sv.session); h != nil {
		h.RemoveViewer(sv.v)
	}
	svc.closes.Go(func() { sv.v.Close() })
}

// serverMsg builds a small server → client message.
func serverMsg(typ string, fields map[string]any) []byte {
	if fields == nil {
		fields = map[string]any{}
	}
	fields["type"] = typ
	b, _ := json.Marshal(fields)
	return b
}

func errorMsg(code, message string) []byte {
	return serverMsg("error", map[string]any{"code": code, "message": message})
}

// WebSocketMessage answers one client message (objects.SocketHandler).
func (o *sessionObj) WebSocketMessage(ctx context.Context, tx *objects.Tx, s *objects.Socket, typ websocket.MessageType, data []byte) error {
	sv := viewerOf(s)
	if sv == nil {
		return nil
	}
	if o.check(sv.owner) != nil {
		// Not waited for here: CloseWith drains the queue and waits for
		// the close handshake, seconds with a client that does not read,
		// and every call of the session would wait behind this one. A
		// session being deleted closes its sockets as its deletion will
		// (1000, protocol.md); a refusal otherwise is 1008 "code: message".
		code, reason := streaming.ClosePolicyViolation, "not_found: session not found"
		if o.m == nil || o.deleting {
			code, reason = streaming.CloseNormal, objects.ReasonDeleted
		}
		o.svc.closes.Go(func() { sv.v.CloseWith(code, reason) })
		return nil
	}
	msg, err := streaming.DecodeClientMessage(data)
	if err != nil {
		var pe *streaming.ProtocolError
		if errors.As(err, &pe) {
			sv.v.Send(errorMsg(pe.Code, pe.Message))
			return nil
		}
		sv.v.Send(errorMsg("invalid_request", err.Error()))
		return nil
	}
	// fromStart: a running generation this socket, joining now, gets
	// from its first event (a send repeated on a new socket without
	// hello, whose generation runs), not from the next.
	var fromStart string
	if !sv.joined && msg.Type != streaming.TypeHello {
		// A client that skips hello still gets the session's live events.
		sv.joined = true
		id := o.m.ID
		tx.OnCommit(func() { o.svc.addViewerFrom(id, sv.v, nil, fromStart) })
	}
	switch msg.Type {
	case streaming.TypePing:
		sv.v.Send(serverMsg("pong", nil))
	case streaming.TypeHello:
		return o.hello(ctx, tx, sv, msg.Resume)
	case streaming.TypeCancel:
		if o.run != nil && o.run.id == msg.Generation {
			run := o.run
			tx.OnCommit(func() { run.cancel(errCancelled) })
			return nil
		}
		k, err := o.cancelQueued(ctx, tx, msg.Generation, nil, time.Now().UnixMilli())
		if err != nil {
			return err
		}
		if k == 0 {
			if _, err := o.generation(ctx, tx, msg.Generation); err != nil {
				sv.v.Send(errorMsg("not_found", fmt.Sprintf("generation %s not found", msg.Generation)))
			}
		}
	case streaming.TypeSend:
		// As a post's body: a field a turn does not take (parent_id,
		// id, status…) is refused, not ignored.
		turns, err := DecodeNewTurns(msg.Turns)
		if err != nil {
			sv.v.Send(errorMsg("invalid_request", err.Error()))
			return nil
		}
		req := PostRequest{Turns: turns, Generate: msg.Generate, Model: msg.Model, IdempotencyKey: msg.IdempotencyKey,
			Parent: msg.ParentID, Root: msg.Root}
		if err := o.svc.ValidateTurns(turns); err != nil {
			code, text := ErrorCode(err)
			sv.v.Send(errorMsg(code, text))
			return nil
		}
		res, err := o.post(ctx, tx, &req)
		if err != nil {
			code, text := ErrorCode(err)
			if code == "internal" {
				return err
			}
			sv.v.Send(errorMsg(code, text))
			// Roll back what post wrote before it failed (its turns, when
			// the model is unknown), as the REST call does.
			return fmt.Errorf("send: %w: %w", objects.ErrDeclined, err)
		}
		if res.replayed {
			// A retry (after a reconnect, say) of a send that was
			// stored: nothing new reaches the other viewers, so this one
			// gets the original turns as they are now, and the end of
			// their generation if it has ended; a generation still
			// running or queued sends its events as it goes.
			msgs := make([][]byte, 0, len(res.Turns)+2)
			for _, t := range res.Turns {
				msgs = append(msgs, TurnMessageJSON(t))
			}
			if g := res.Generation; g != nil && g.Finished() {
				final, err := o.finalMessagesOf(ctx, tx, g)
				if err != nil {
					return err
				}
				msgs = append(msgs, final...)
			} else if g != nil {
				msgs = append(msgs, GenerationMessageJSON(g))
				if o.run != nil && o.run.id == g.ID {
					fromStart = g.ID // all of its deltas, if this socket joins now
				}
			}
			sv.v.Send(msgs...)
			return nil
		}
		// The committed turns reach every viewer, this one included, as
		// "turn" messages, then the generation, if the send made one, as a
		// "generation" message; its events follow.
	}
	return nil
}

// maxMissedTurns bounds the turns a hello with {"turn": N} replays (also
// bounded in bytes, see Service.MaxPageBytes).
const maxMissedTurns = 1000

// hello sends ready and joins the viewer to the session's stream, resuming
// where it asks (or, if a generation runs, from its start).
func (o *sessionObj) hello(ctx context.Context, tx *objects.Tx, sv *socketViewer, resume *streaming.ClientResume) error {
	sess, err := o.session(ctx, tx)
	if err != nil {
		return err
	}
	ready := serverMsg("ready", map[string]any{"session": sess})
	var pos *streaming.Position
	var finished *Generation
	if resume != nil && resume.Generation != "" {
		pos = &streaming.Position{Generation: resume.Generation, After: resume.After}
		if o.run == nil || o.run.id != resume.Generation {
			g, err := o.generation(ctx, tx, resume.Generation)
			if err != nil {
				return o.refuseResume(sv, ready, "not_found", fmt.Sprintf("generation %s not found", resume.Generation))
			}
			if g.PastEnd(resume.After) {
				// No client saw it: refused as SSE refuses it (400).
				return o.refuseResume(sv, ready, "invalid_request", fmt.Sprintf("generation %s has no event at offset %d: its last is %d (after is the last offset seen)", g.ID, resume.After, g.Offset))
			}
			finished = g
		}
	} else if o.run != nil {
		pos = &streaming.Position{Generation: o.run.id, After: 0}
	}
	// A generation running beside the one resumed: this socket has not
	// seen it start, so it gets it from its first event, as a hello
	// without resume would (not from the next event, its text cut).
	fromStart := ""
	if o.run != nil && pos != nil && pos.Generation != o.run.id {
		fromStart = o.run.id
	}
	var final [][]byte
	// Nothing to replay of one whose final event was seen; of one that
	// ended before it started (no turn), its final event alone.
	if finished != nil && finished.Finished() && finished.finalUnseen(resume.After) {
		if final, err = o.finalMessagesOf(ctx, tx, finished); err != nil {
			return err
		}
	}
	var missed []Turn
	replay := resume != nil && resume.Generation == ""
	if replay { // {"turn": N}; N = 0: from the first turn
		var more bool
		missed, more, err = o.turns(ctx, tx, TurnQuery{After: &resume.Turn, Limit: maxMissedTurns})
		if err != nil {
			return err
		}
		if more {
			// A page's worth follow (see turns); the client reads the
			// rest with GET /turns?after=<the last one>.
			ready = serverMsg("ready", map[string]any{"session": sess, "more_turns": true})
		}
	}
	svc := o.svc
	id := o.m.ID
	rejoin := sv.joined
	sv.joined = true
	tx.OnCommit(func() {
		sv.v.Send(ready)
		if replay {
			// A replay the client asked for, bounded by the page: it
			// must not count as a slow viewer's backlog. It replaces
			// what an earlier hello's replay has yet to write, so a
			// client repeating hello without reading holds one page.
			msgs := make([][]byte, len(missed))
			for i, t := range missed {
				msgs[i] = TurnMessageJSON(t)
			}
			sv.v.SendBacklog(msgs...)
		}
		var err error
		switch {
		case !rejoin:
			err = svc.addViewerFrom(id, sv.v, pos, fromStart)
		case pos != nil:
			err = svc.withHub(id, func(h *streaming.Hub) error { return h.Resume(sv.v, pos.Generation, pos.After) })
		}
		switch {
		case errors.Is(err, streaming.ErrGenerationNotFound):
			// No longer retained: the committed turn stands for its events.
			for _, m := range final {
				sv.v.Send(m)
			}
		case errors.Is(err, streaming.ErrOffsetOutOfRange):
			// Past the running generation's last event: the viewer does
			// not follow it (see Hub.AddViewer).
			sv.v.Send(errorMsg("invalid_request", fmt.Sprintf("generation %s has no event at offset %d (after is the last offset seen)", pos.Generation, pos.After)))
		}
	})
	return nil
}

// refuseResume answers a hello whose generation resume is impossible:
// ready, then an error; the viewer joins the session's live stream (if it
// had not), following no generation from the position it gave, and a
// generation running from its first event, as after a hello without
// resume (joined at the live point, its reply would lack its start).
func (o *sessionObj) refuseResume(sv *socketViewer, ready []byte, code, message string) error {
	sv.v.Send(ready)
	sv.v.Send(errorMsg(code, message))
	if !sv.joined {
		sv.joined = true
		fromStart := ""
		if o.run != nil {
			fromStart = o.run.id
		}
		return o.svc.addViewerFrom(o.m.ID, sv.v, nil, fromStart)
	}
	return nil
}

// addViewerFrom adds v to the session's hub (Hub.AddViewerFrom), under
// hubMu (see withHub): never to a hub the janitor has just closed, which
// would leave the socket open and deaf to the session's broadcasts and
// generations. ErrViewerClosed is nil here: the socket is going, and its
// close forgets it.
func (svc *Service) addViewerFrom(id string, v *streaming.Viewer, resume *streaming.Position, fromStart string) error {
	err := svc.withHub(id, func(h *streaming.Hub) error { return h.AddViewerFrom(v, resume, fromStart) })
	if errors.Is(err, streaming.ErrViewerClosed) {
		return nil
	}
	return err
}

// finalMessagesOf returns the final messages of generation g, which has
// ended: its turn, read from the session, and its final event.
func (o *sessionObj) finalMessagesOf(ctx context.Context, tx *objects.Tx, g *Generation) ([][]byte, error) {
	var t *Turn
	if g.TurnID > 0 {
		tt, err := o.getTurn(ctx, tx, g.TurnID)
		if err != nil {
			return nil, err
		}
		t = &tt
	}
	return finalMessages(g, t), nil
}

func finalMessages(g *Generation, t *Turn) [][]byte {
	if t == nil {
		return [][]byte{endedUnstarted(g)}
	}
	turnJSON := AppendTurnJSON(nil, *t)
	out := [][]byte{serverMsg("turn", map[string]any{"turn": json.RawMessage(turnJSON)})}
	if g.Status == GenFailed && g.Error != nil {
		ev, _ := streaming.EncodeError(g.ID, g.Offset, g.Error.Code, g.Error.Message)
		return append(out, ev)
	}
	usage, _ := json.Marshal(t.Usage)
	// With its error, as the live done said (interrupted, superseded…).
	d := streaming.Done{Turn: turnJSON, Usage: usage, FinishReason: deref(t.FinishReason), Error: g.Error.done()}
	ev, err := streaming.EncodeDone(g.ID, g.Offset, d)
	if err == nil {
		out = append(out, ev)
	}
	return out
}

// endedUnstarted is the final event, at offset 1, of a generation that
// ended before it started (cancelled or superseded while queued, deleted,
// interrupted by a restart; no turn): error when it failed to start,
// otherwise done with a null turn, its status as finish_reason and its
// error, if any, saying why.
func endedUnstarted(g *Generation) []byte {
	if g.Status == GenFailed && g.Error != nil {
		ev, _ := streaming.EncodeError(g.ID, g.Offset, g.Error.Code, g.Error.Message)
		return ev
	}
	d := streaming.Done{Turn: json.RawMessage("null"), FinishReason: g.Status, Error: g.Error.done()}
	ev, _ := streaming.EncodeDone(g.ID, g.Offset, d) // a null turn is a turn: it cannot fail
	return ev
}

// WebSocketClose forgets the socket's viewer (objects.SocketHandler).
func (o *sessionObj) WebSocketClose(ctx context.Context, tx *objects.Tx, s *objects.Socket, code websocket.StatusCode, reason string) error {
	if sv := viewerOf(s); sv != nil {
		o.svc.forgetViewer(sv)
	}
	return nil
}

// followRecheck is how often Follow reads a queued generation's state
// without a signal (a variable for tests).
var followRecheck = time.Second

// Follow sends a generation's events after offset after to v, then its live
// events; a generation whose log is no longer kept is sent as its committed
// turn and final event (nothing when after is at or past that event), and
// v is then closed with CloseNormal, as a viewer with CloseOnFinal closes
// after a log's final event. A queued generation is waited for until it
// starts.
func (svc *Service) Follow(ctx context.Context, owner, id, gid string, after int64, v *streaming.Viewer) error {
	queued := false // seen queued: the session's deletion ends it, cancelled with error deleted
	for {
		g, err := svc.Generation(ctx, owner, id, gid)
		if errors.Is(err, ErrNotFound) && queued {
			// Gone while it waited: only a deletion removes a session, and
			// it cancels the queued generations with error deleted. Their
			// viewers on the session's sockets got that final event from
			// the deletion; this follower gets it here.
			if after < 1 {
				v.Send(endedUnstarted(&Generation{ID: gid, Status: GenCancelled, Offset: 1, Error: deletedError()}))
			}
			v.CloseWith(streaming.CloseNormal, "generation finished")
			return nil
		}
		if err != nil {
			return err
		}
		if g.Status == GenQueued {
			queued = true
			// Wait for the session to start or end a queued generation
			// (genSignals), then read again. The channel is taken before
			// a second read, so that a change between the two is not
			// missed; the timer is a safety net for a transition that
			// would not signal.
			ch, leave := svc.queued.wait(id)
			if g, err = svc.Generation(ctx, owner, id, gid); err != nil {
				leave()
				return err
			}
			if g.Status == GenQueued {
				select {
				case <-ctx.Done():
				case <-ch:
				case <-time.After(followRecheck):
				}
				leave()
				if err := ctx.Err(); err != nil {
					return err
				}
				continue
			}
			leave()
		}
		if h := svc.existingHub(id); h != nil {
			err := h.Resume(v, gid, after)
			// A hub closed since it was looked up (by the janitor: it held
			// no log) retains no generation.
			if err == nil || !errors.Is(err, streaming.ErrGenerationNotFound) && !errors.Is(err, streaming.ErrHubClosed) {
				return err
			}
		}
		if !g.Finished() { // running, but its log is gone: the server restarted under it
			return fmt.Errorf("generation %s: %w", gid, ErrNotFound)
		}
		var t *Turn // none when it ended before it started: its final event alone
		if g.TurnID != 0 {
			tt, err := do(ctx, svc, owner, id, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (Turn, error) {
				return o.getTurn(ctx, tx, g.TurnID)
			})
			if err != nil {
				return err
			}
			t = &tt
		}
		if g.finalUnseen(after) {
			for _, m := range finalMessages(g, t) {
				v.Send(m)
			}
		}
		v.CloseWith(streaming.CloseNormal, "generation finished")
		return nil
	}
}

// ErrorCode maps an error of this package to a stable API error code and a
// human message; "internal" for anything unexpected. The message leaves out
// the package's prefix of its errors ("session: not found" reads "not
// found"), and only that: a session named "my-session" keeps its name.
func ErrorCode(err error) (code, message string) {
	code, message = errorCode(err)
	message = strings.ReplaceAll(message, ": session: ", ": ")
	return code, strings.TrimPrefix(message, "session: ")
}

func errorCode(err error) (code, message string) {
	var me *ModelError
	var oe *objects.OverloadedError
	switch {
	case errors.Is(err, ErrNotFound):
		return "not_found", err.Error()
	case errors.Is(err, ErrTooLarge):
		return "too_large", err.Error()
	case errors.Is(err, ErrGenerationRunning):
		return "generation_running", err.Error()
	case errors.Is(err, ErrConflict):
		return "conflict", err.Error()
	case errors.Is(err, ErrTooManyStreams):
		return "rate_limited", err.Error()
	case errors.Is(err, ErrInvalidJSON):
		return "invalid_json", err.Error()
	case errors.Is(err, ErrInvalid):
		return "invalid_request", err.Error()
	case errors.As(err, &oe):
		return "overloaded", err.Error()
	case errors.As(err, &me):
		return me.Code, me.Message
	case errors.Is(err, objects.ErrMissingFile):
		return CodeDataLost, "the session's data is missing from the server's disk (its database file was removed): delete the session to remove it from the list"
	case errors.Is(err, objects.ErrClosed):
		return "unavailable", "the server is shutting down"
	case errors.Is(err, objects.ErrDiskFailed):
		return "unavailable", "a write to the server's disk failed: it refuses requests until it is restarted"
	case objects.IsDiskFull(err):
		return "unavailable", "the server's disk is full: nothing was stored; try again once it has room"
	}
	return "internal", "internal error"
}

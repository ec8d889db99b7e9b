package session

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"sessiond/objects"
	"sessiond/streaming"
)

// Limits and defaults of a Service.
const (
	// DefaultMaxTurnBytes bounds one turn's content (a large tool result
	// fits: the WebSocket carries messages up to 32 MiB).
	DefaultMaxTurnBytes = 32 << 20
	// DefaultMaxTurnsPerRequest bounds the turns of one post.
	DefaultMaxTurnsPerRequest = 100
	// DefaultMaxPageBytes bounds a page of turns (see Service.MaxPageBytes).
	DefaultMaxPageBytes = 16 << 20
	// DefaultMaxStreamsPerOwner bounds an owner's open streams (see
	// Service.MaxStreamsPerOwner).
	DefaultMaxStreamsPerOwner = 10_000
	// MaxTitleBytes, MaxSystemBytes and MaxMetadataBytes bound session fields.
	MaxTitleBytes    = 1 << 10
	MaxSystemBytes   = 256 << 10
	MaxMetadataBytes = 64 << 10
	// MaxToolCallIDBytes bounds a tool call's id (and so a tool result's
	// tool_call_id): a model's longer one is replaced (nameToolCalls), an
	// import's is refused. Unbounded, a tool result's export line (its
	// content and the id) could pass what an import reads.
	MaxToolCallIDBytes = 1 << 10
	// MaxMetadataDepth is how deep metadata may nest, the object itself
	// level 1. JSON decoders take 10,000 levels (encoding/json's limit,
	// which every request body and import line has); an export line holds
	// metadata two levels deeper than it is, so that deeper would export
	// to a line no import takes.
	MaxMetadataDepth = 9998
	// NamespaceSessions and NamespaceDirectories are the object namespaces.
	NamespaceSessions    = "session"
	NamespaceDirectories = "directory"
)

// Service runs conversations: it registers the session and directory
// object classes on a runtime and offers the operations the API needs.
// Every method that takes an owner refuses (with ErrNotFound) sessions of
// other owners; the empty owner is an administrator who sees them all.
//
// Build it with NewService before the runtime opens; call Close before the
// runtime's Close. Safe for concurrent use.
type Service struct {
	// Models resolves model names. Required.
	Models *Registry
	// MaxTurnBytes bounds one turn's content. Default DefaultMaxTurnBytes.
	MaxTurnBytes int
	// MaxTurnsPerRequest bounds one post. Default DefaultMaxTurnsPerRequest.
	MaxTurnsPerRequest int
	// MaxPageBytes bounds the content and tool calls of a page of turns
	// (Turns) past its first turn: a page that would hold more ends early,
	// with more set, so that fifty turns of 32 MiB are not one response.
	// Default DefaultMaxPageBytes.
	MaxPageBytes int
	// MaxStreamsPerOwner bounds the streams one owner holds open at once:
	// WebSockets (Accept) and event streams (OpenStream). One more is
	// refused with ErrTooManyStreams. Administrators (the empty owner) are
	// not limited. 0 means no limit. Default DefaultMaxStreamsPerOwner.
	MaxStreamsPerOwner int
	// PersistInterval is how often the partial output of running
	// generations is committed (all of them at once, see journal).
	// Default DefaultPersistInterval.
	PersistInterval time.Duration
	// ViewerOptions configures WebSocket viewers. Default
	// DefaultViewerOptions: streaming's defaults with a 5 ms flush interval.
	ViewerOptions *streaming.ViewerOptions
	// Events makes sessions publish their lifecycle (events.go) through
	// the runtime's event bus, which must then be set. Default false.
	Events bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	rt       *objects.Runtime
	sessions *objects.Namespace
	dirs     *objects.Namespace
	partials *objects.Namespace
	journal  *journal

	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup

	// hubMu guards hubs and closing. Viewers and generation logs are
	// added to a hub with it held (withHub), so that the janitor, which
	// drops a hub holding neither, cannot close one between its lookup and
	// the add.
	hubMu sync.Mutex
	hubs  map[string]*streaming.Hub
	// closing: Close has begun. withHub refuses, so no viewer joins and no
	// generation starts after Close took the hubs to close, and a
	// generation's launch adds to wg only before Close waits on it.
	closing bool

	dir     dirUpdates
	viewers viewerMap
	closes  closeGroup // viewer closes handed off by calls (see closeGroup)

	handOver handOvers // orders Accept against Delete, per session
	streams  streamCounts
	queued   genSignals

	// deletions holds the ids of sessions a Delete is removing (id →
	// struct{}): between the object's removal and its entry's, the entry
	// is no ghost (see unlistGhost), and the Delete publishes the events.
	deletions sync.Map
}

// DefaultViewerOptions coalesce a viewer's writes over 5 ms rather than
// streaming's 15 ms: at typical model speeds (20 to 100 tokens/s) that adds
// no delay to a token, while a burst (a fast model, a backlog) still goes
// out in few writes.
func DefaultViewerOptions() *streaming.ViewerOptions {
	return &streaming.ViewerOptions{FlushInterval: 5 * time.Millisecond}
}

// NewService registers the session classes on rt (which must not be open
// yet) and returns the service. Start it with Start after rt.Open.
func NewService(rt *objects.Runtime, models *Registry) (*Service, error) {
	svc := &Service{
		Models:             models,
		MaxTurnBytes:       DefaultMaxTurnBytes,
		MaxTurnsPerRequest: DefaultMaxTurnsPerRequest,
		MaxPageBytes:       DefaultMaxPageBytes,
		MaxStreamsPerOwner: DefaultMaxStreamsPerOwner,
		PersistInterval:    DefaultPersistInterval,
		ViewerOptions:      DefaultViewerOptions(),
		rt:                 rt,
		hubs:               make(map[string]*streaming.Hub),
	}
	svc.dir.pending = make(map[string]map[string]dirUpdate)
	svc.dir.wake = make(chan struct{}, 1)
	var err error
	if svc.sessions, err = rt.Register(NamespaceSessions, objects.Class{Migrations: sessionSchema, New: svc.newSession}); err != nil {
		return nil, err
	}
	if svc.dirs, err = rt.Register(NamespaceDirectories, objects.Class{Migrations: directorySchema, New: newDirectory,
		// An owner's list is kept by the sessions: one whose file is lost
		// is made again, and each session comes back into it with its next
		// change. (Its create idempotency keys go with the file.)
		RecreateMissing: true}); err != nil {
		return nil, err
	}
	if svc.partials, err = rt.Register(NamespacePartials, objects.Class{Migrations: journalSchema, New: newJournalObject, CacheKiB: journalCacheKiB, CheckpointFrames: journalCheckpointFrames}); err != nil {
		return nil, err
	}
	svc.journal = newJournal(svc)
	svc.ctx, svc.cancel = context.WithCancelCause(context.Background())
	return svc, nil
}

// Start starts the service's background work (directory updates, hub
// clean-up, the partial output journal and its recovery after a crash).
// Call it once, after the runtime is open.
func (svc *Service) Start() {
	svc.wg.Add(3)
	go svc.runDirectory(svc.ctx)
	go svc.runHubJanitor(svc.ctx)
	go func() {
		defer svc.wg.Done()
		svc.journal.recoverPartials(svc.ctx)
	}()
	svc.journal.start(svc.PersistInterval)
}

// StopGenerations begins Close: it stops running generations (each
// commits its output so far, marked interrupted, and ends its stream with
// that done event) and waits for them; none starts after it. Viewers stay
// open, so that a stream following a generation (SSE, WebSocket) gets its
// final event: a server calls it before it ends its streams, then Close.
// It may be called more than once, and concurrently with Close.
func (svc *Service) StopGenerations() {
	svc.hubMu.Lock()
	svc.closing = true
	svc.hubMu.Unlock()
	svc.cancel(errShutdown)
	svc.wg.Wait()
}

// Close stops running generations (StopGenerations), waits for them and
// for pending directory updates, writes the journal's last round, and
// closes every viewer. Call it before closing the runtime.
func (svc *Service) Close() error {
	svc.StopGenerations()
	// The directory's worker flushed as it stopped, perhaps before the
	// interrupted generations committed: their updates are pending still.
	svc.flushDirectory()
	svc.journal.close()
	svc.hubMu.Lock()
	hubs := make([]*streaming.Hub, 0, len(svc.hubs))
	for id, h := range svc.hubs {
		hubs = append(hubs, h)
		delete(svc.hubs, id)
	}
	svc.hubMu.Unlock()
	closeHubs(hubs)
	svc.closes.Wait()
	return nil
}

// maxHubCloses bounds the hubs closeHubs closes at once.
const maxHubCloses = 256

// closeHubs closes hubs concurrently, up to maxHubCloses at a time, and
// waits for all. A hub's Close waits for the close handshakes of its
// viewers (each up to about 5 s with a client that does not read): one
// after another, shutdown would take that long for each such session.
// Call it without hubMu held.
func closeHubs(hubs []*streaming.Hub) {
	sem := make(chan struct{}, maxHubCloses)
	var wg sync.WaitGroup
	for _, h := range hubs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			h.Close()
		})
	}
	wg.Wait()
}

func (svc *Service) logger() *slog.Logger {
	if svc.Logger != nil {
		return svc.Logger
	}
	return slog.Default()
}

// isClosing reports whether Close has begun.
func (svc *Service) isClosing() bool {
	svc.hubMu.Lock()
	defer svc.hubMu.Unlock()
	return svc.closing
}

// withHub runs fn with the session's viewer hub, creating it, under
// hubMu: the hub fn gets is the session's and stays open while fn runs (the
// janitor cannot drop it in between). fn must not block: it adds a viewer
// or a generation log (Hub.AddViewer, Resume, StartGeneration), which
// never wait on a client. Lock order: hubMu, then the hub's locks.
//
// Once Close has begun it refuses with objects.ErrClosed (503 unavailable):
// a hub made then would be one Close never closes.
func (svc *Service) withHub(id string, fn func(h *streaming.Hub) error) error {
	svc.hubMu.Lock()
	defer svc.hubMu.Unlock()
	if svc.closing {
		return fmt.Errorf("session %s: the service is closing: %w", id, objects.ErrClosed)
	}
	h := svc.hubs[id]
	if h == nil {
		h = streaming.NewHub(&streaming.HubOptions{Logger: svc.Logger})
		svc.hubs[id] = h
	}
	return fn(h)
}

// existingHub returns the session's hub if it has one.
func (svc *Service) existingHub(id string) *streaming.Hub {
	svc.hubMu.Lock()
	defer svc.hubMu.Unlock()
	return svc.hubs[id]
}

// hubJanitorInterval is how often runHubJanitor looks for idle hubs.
const hubJanitorInterval = 30 * time.Second

// runHubJanitor forgets idle hubs (see sweepHubs).
func (svc *Service) runHubJanitor(ctx context.Context) {
	defer svc.wg.Done()
	t := time.NewTicker(hubJanitorInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		svc.sweepHubs()
	}
}

// sweepHubs closes and forgets the hubs that hold no viewer and no log,
// running or retained (Hub.CloseIfIdle). A generation's log is in its hub
// from StartGeneration, inside the call that starts it, so a sweep between
// that and the call's commit leaves the hub alone; viewers and logs are
// only added under hubMu (withHub), so none can be added to a hub this
// closes.
func (svc *Service) sweepHubs() {
	svc.hubMu.Lock()
	defer svc.hubMu.Unlock()
	for id, h := range svc.hubs {
		if h.CloseIfIdle() {
			delete(svc.hubs, id)
		}
	}
}

// broadcastTurn sends a committed turn to every viewer of the session.
func (svc *Service) broadcastTurn(id string, t Turn) {
	h := svc.existingHub(id)
	if h == nil {
		return
	}
	h.Broadcast(TurnMessageJSON(t))
}

// broadcast sends msg to every viewer of the session, if it has any.
func (svc *Service) broadcast(id string, msg []byte) {
	if h := svc.existingHub(id); h != nil {
		h.Broadcast(msg)
	}
}

// stub returns the stub of an existing session, or ErrNotFound. Calls
// through it never create a session.
func (svc *Service) stub(ctx context.Context, id string) (*objects.Stub, error) {
	if ValidateID(id) != nil {
		if len(id) > 256 { // not echoed whole: it may be 100 KB
			id = strings.ToValidUTF8(id[:256], "") + "…"
		}
		return nil, fmt.Errorf("session %q: %w", id, ErrNotFound)
	}
	ok, err := svc.sessions.Exists(ctx, id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("session %s: %w", id, ErrNotFound)
	}
	return svc.sessions.Get(id)
}

// do runs fn on an existing session visible to owner.
func do[R any](ctx context.Context, svc *Service, owner, id string, fn func(ctx context.Context, o *sessionObj, tx *objects.Tx) (R, error)) (R, error) {
	var zero R
	stub, err := svc.stub(ctx, id)
	if err != nil {
		return zero, err
	}
	r, err := objects.Do(ctx, stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (R, error) {
		if err := o.check(owner); err != nil {
			return zero, fmt.Errorf("session %s: %w", id, err)
		}
		return fn(ctx, o, tx)
	})
	if errors.Is(err, objects.ErrMissingFile) && owner != "" {
		// The owner was in the lost file: only the caller's own list
		// tells whether the session is theirs. Another owner must not
		// learn that it exists.
		if listed, lerr := svc.listed(ctx, owner, id); lerr == nil && !listed {
			return zero, fmt.Errorf("session %s: %w", id, ErrNotFound)
		}
	}
	return r, err
}

// forkTitle is the title of a fork of a session titled title: "Fork of "
// and the title, cut to MaxTitleBytes (ending in "…" when cut), so that
// the fork's title passes the checks of PATCH and of an import of its
// export.
func forkTitle(title string) string {
	if title == "" {
		return ""
	}
	return cutText("Fork of "+title, MaxTitleBytes)
}

// cutText returns s if it fits in limit bytes, otherwise its longest
// prefix that, with "…" appended, does, cut between user-perceived
// characters: not inside a rune, nor before a combining mark, a variation
// selector, an emoji modifier or tag, nor next to a zero-width joiner
// (an approximation of grapheme cluster boundaries, which the standard
// library does not give).
func cutText(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	const ellipsis = "…"
	cut := max(limit-len(ellipsis), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	for cut > 0 {
		next, _ := utf8.DecodeRuneInString(s[cut:])
		prev, size := utf8.DecodeLastRuneInString(s[:cut])
		if !extendsCluster(next) && prev != zwj {
			break
		}
		cut -= size
	}
	return s[:cut] + ellipsis
}

// zwj is the zero-width joiner, which joins emoji into one character.
const zwj = '\u200d'

// extendsCluster reports whether r belongs with the character before it.
func extendsCluster(r rune) bool {
	switch {
	case r == zwj,
		r >= 0xfe00 && r <= 0xfe0f,   // variation selectors
		r >= 0x1f3fb && r <= 0x1f3ff, // emoji skin-tone modifiers
		r >= 0xe0020 && r <= 0xe007f, // tags (flags of regions)
		r >= 0xe0100 && r <= 0xe01ef: // variation selectors supplement
		return true
	}
	return unicode.Is(unicode.M, r)
}

func validText(field, s string, limit int) error {
	if len(s) > limit {
		return fmt.Errorf("%w: %s is %d bytes, the limit is %d", ErrTooLarge, field, len(s), limit)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, field)
	}
	return nil
}

// nullAsAbsent returns md, or nil for a JSON null: metadata null is left
// out, as every other field's null is.
func nullAsAbsent(md json.RawMessage) json.RawMessage {
	if string(bytes.TrimSpace(md)) == "null" {
		return nil
	}
	return md
}

func validMetadata(md json.RawMessage) error {
	if len(md) == 0 {
		return nil
	}
	if len(md) > MaxMetadataBytes {
		return fmt.Errorf("%w: metadata is %d bytes, the limit is %d", ErrTooLarge, len(md), MaxMetadataBytes)
	}
	if !utf8.Valid(md) {
		// encoding/json would take it (raw bytes stay raw in a
		// RawMessage), and every ready message would carry it.
		return fmt.Errorf("%w: metadata is not valid UTF-8", ErrInvalid)
	}
	var v map[string]any
	if err := json.Unmarshal(md, &v); err != nil || v == nil {
		return fmt.Errorf("%w: metadata must be a JSON object", ErrInvalid)
	}
	if d := jsonDepth(md); d > MaxMetadataDepth {
		return fmt.Errorf("%w: metadata nests %d levels deep, the limit is %d", ErrTooLarge, d, MaxMetadataDepth)
	}
	return nil
}

// jsonDepth returns how deep the JSON value b nests: 0 for a scalar, 1
// for an object or array of scalars, and so on.
func jsonDepth(b []byte) int {
	depth, deepest, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString && c == '\\':
			i++ // the escaped character, a quote maybe
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

// checkModel refuses a model this server does not serve, in the API's
// words (the registry's error is an internal one).
func (svc *Service) checkModel(name string) error {
	if _, _, err := svc.Models.Get(name); err != nil {
		return fmt.Errorf("%w: model %q is not one this server serves", ErrInvalid, name)
	}
	return nil
}

func validPolicy(p string) error {
	switch p {
	case "", PolicyQueue, PolicyReject, PolicyInterrupt:
		return nil
	}
	return fmt.Errorf("%w: busy_policy must be queue, reject or interrupt", ErrInvalid)
}

// Create creates a session owned by owner.
func (svc *Service) Create(ctx context.Context, owner string, req CreateRequest) (*Session, error) {
	hash := req.hash() // as sent, before the defaults
	req.Metadata = nullAsAbsent(req.Metadata)
	if req.ID == "" {
		req.ID = NewID()
	} else if err := ValidateID(req.ID); err != nil {
		return nil, err
	}
	if err := errors.Join(validText("title", req.Title, MaxTitleBytes), validText("system", req.System, MaxSystemBytes),
		validMetadata(req.Metadata), validPolicy(req.BusyPolicy)); err != nil {
		return nil, err
	}
	model := req.Model
	if model == "" {
		model = svc.Models.Default()
	}
	if err := svc.checkModel(model); err != nil {
		return nil, err
	}
	if req.IdempotencyKey != "" {
		id, err := svc.claimCreate(ctx, owner, req.IdempotencyKey, hash, req.ID)
		if err != nil {
			return nil, err
		}
		req.ID = id
	}
	stub, err := svc.sessions.Get(req.ID)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	s, err := objects.Do(ctx, stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (*Session, error) {
		return o.create(ctx, tx, owner, &req, model)
	})
	if errors.Is(err, objects.ErrMissingFile) {
		// The id is a session's whose file is lost: data_lost is for
		// its owner (whose list vouches for it, see do); anyone else
		// learns that the id is taken, as of any session.
		if listed, lerr := svc.listed(ctx, owner, req.ID); lerr == nil && !listed {
			return nil, fmt.Errorf("%w: session %s already exists", ErrConflict, req.ID)
		}
	}
	if err != nil {
		return nil, err
	}
	// The directory learns of a new session before the caller does, so a
	// list right after a create shows it.
	if err := svc.upsertDirectory(ctx, owner, DirEntry{ID: s.ID, Title: s.Title, CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt}, true); err != nil {
		return nil, err
	}
	return s, nil
}

// upsertDirectory writes entry e in owner's directory now (see
// directory.upsert).
func (svc *Service) upsertDirectory(ctx context.Context, owner string, e DirEntry, keepPreview bool) error {
	stub, err := svc.dirs.Get(owner)
	if err != nil {
		return err
	}
	_, err = objects.Do(ctx, stub, func(ctx context.Context, d *directory, tx *objects.Tx) (struct{}, error) {
		return struct{}{}, d.upsert(ctx, tx, e, keepPreview)
	})
	return err
}

// undoDeleting lets calls reach session id again after its deletion
// failed (best effort: the flag is in memory only).
func (svc *Service) undoDeleting(id string) {
	stub, err := svc.stub(context.Background(), id)
	if err != nil {
		return // gone after all, or nothing to call: Do would make it anew
	}
	_, err = objects.Do(context.Background(), stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (struct{}, error) {
		o.deleting = false
		return struct{}{}, nil
	})
	if err != nil {
		svc.logger().Warn("session: a failed deletion leaves the session unreachable until it hibernates", "session", id, "err", err)
	}
}

// Get returns a session.
func (svc *Service) Get(ctx context.Context, owner, id string) (*Session, error) {
	return do(ctx, svc, owner, id, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (*Session, error) {
		return o.session(ctx, tx)
	})
}

// Update changes a session's title, model, system prompt, metadata or busy policy.
func (svc *Service) Update(ctx context.Context, owner, id string, req UpdateRequest) (*Session, error) {
	req.Metadata = nullAsAbsent(req.Metadata)
	var errs []error
	if req.Title != nil {
		errs = append(errs, validText("title", *req.Title, MaxTitleBytes))
	}
	if req.System != nil {
		errs = append(errs, validText("system", *req.System, MaxSystemBytes))
	}
	if req.BusyPolicy != nil {
		// "" is the default on a create, but not a policy to set: stored,
		// it read as one outside queue, reject and interrupt.
		if *req.BusyPolicy == "" {
			errs = append(errs, fmt.Errorf("%w: busy_policy must be queue, reject or interrupt", ErrInvalid))
		} else {
			errs = append(errs, validPolicy(*req.BusyPolicy))
		}
	}
	if req.Model != nil {
		errs = append(errs, svc.checkModel(*req.Model))
	}
	errs = append(errs, validMetadata(req.Metadata))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var listedBy string // the session's owner, when its entry changed
	s, err := do(ctx, svc, owner, id, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (*Session, error) {
		s, changed, err := o.update(ctx, tx, &req)
		if err == nil && changed {
			m := *o.m
			m.Title, m.UpdatedAt = s.Title, s.UpdatedAt.Time
			listedBy = m.Owner
			tx.OnCommit(func() { svc.touchDirectory(&m, nil) })
		}
		return s, err
	})
	if err == nil && listedBy != "" {
		// In the list before the answer: an update is rare, and a
		// crash must not leave the list with the old title for as long
		// as the session stays unchanged (updates wait directoryDelay
		// in memory). Applied in order with the owner's pending ones.
		svc.flushDirectoryOf(listedBy)
	}
	return s, err
}

// Delete removes a session: its generations end (cancelled, error
// "deleted"), then its data, its viewers and its directory entry go. Once
// the session has taken the deletion, it finishes even when ctx ends (the
// running generation's end is awaited), so that no session is left half
// deleted.
//
// The session's outbox goes with it, maybe before its last events (the
// generations' ends among them) were published: the directory's update
// records those again, with the same ids, before the session's deleted
// event, so that they are published, once.
func (svc *Service) Delete(ctx context.Context, owner, id string) error {
	var sessOwner string
	run, err := do(ctx, svc, owner, id, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (*genRun, error) {
		sessOwner = o.m.Owner
		// Queued generations never start: the running one, cancelled,
		// would otherwise start the next as it ends, on a session about
		// to go.
		if _, err := o.cancelQueued(ctx, tx, "", deletedError(), time.Now().UnixMilli()); err != nil {
			return nil, err
		}
		o.deleting = true
		if o.run != nil {
			o.run.cancel(errDeleted)
		}
		return o.run, nil
	})
	if errors.Is(err, ErrNotFound) && owner != "" {
		// A crash between the object's deletion and its directory's
		// update left the entry: the repeated Delete finishes the job.
		if removed, uerr := svc.unlistGhost(ctx, owner, id); uerr != nil || removed {
			return uerr
		}
	}
	if errors.Is(err, objects.ErrMissingFile) {
		return svc.deleteLost(ctx, owner, id)
	}
	if err != nil {
		return err
	}
	svc.deletions.Store(id, struct{}{})
	defer svc.deletions.Delete(id)
	// Begun, the deletion no longer depends on the caller: a session left
	// deleting answers 404 to every call, a repeated Delete too, and is
	// still listed and stored.
	ctx = context.WithoutCancel(ctx)
	if run != nil {
		select {
		case <-run.done:
		case <-svc.ctx.Done():
			svc.undoDeleting(id)
			return fmt.Errorf("delete session %s: %w", id, objects.ErrClosed)
		}
	}
	stub, err := svc.sessions.Get(id)
	if err != nil {
		return err
	}
	// Under the write lock of handOver: a socket whose Accept passed its
	// access check (before this deletion's first call) is handed over
	// before the object goes, so the deletion closes it and removeSession
	// below finds its viewer; one that checks later is refused. Without
	// it, a socket could attach to the deleted name afterwards, its slot
	// never released and its first message re-creating the object.
	ho := svc.handOver.get(id)
	ho.Lock()
	svc.flushViewers(id)
	err = stub.DeleteHandingOver(ctx, func(ctx context.Context, evs []objects.Event) error {
		return svc.keepDeletedEvents(ctx, sessOwner, id, evs)
	})
	ho.Unlock()
	svc.handOver.put(id, ho)
	if err != nil {
		svc.undoDeleting(id)
		return err
	}
	// The session is gone with its sockets (closed silently, so no
	// WebSocketClose comes): forget its hub and viewers now, whatever
	// befalls the directory's update below. The hub is closed without
	// hubMu held: Close waits for its viewers' close handshakes, and every
	// session needs hubMu to reach its hub.
	svc.hubMu.Lock()
	h := svc.hubs[id]
	delete(svc.hubs, id)
	svc.hubMu.Unlock()
	if h != nil {
		h.Close()
	}
	for _, sv := range svc.viewers.removeSession(id) {
		sv.release()
		sv.v.Close()
	}
	deletedObjectHook(id)
	_, err = svc.unlist(ctx, sessOwner, id, nil)
	return err
}

// deletedObjectHook runs between a deleted session's object going and its
// entry's removal (tests).
var deletedObjectHook = func(id string) {}

// keepDeletedEvents stores evs, the events session id had not published
// as its object goes, in owner's directory, where its entry's removal
// (unlist) publishes them with their ids, before its deleted event. Kept
// before the object goes, they survive a crash between the two, which
// leaves them for the removal of the entry that crash left (unlistGhost);
// a deletion that then fails leaves them for its repeat to replace.
func (svc *Service) keepDeletedEvents(ctx context.Context, owner, id string, evs []objects.Event) error {
	if !svc.Events {
		return nil
	}
	dstub, err := svc.dirs.Get(owner)
	if err != nil {
		return err
	}
	_, err = objects.Do(ctx, dstub, func(ctx context.Context, d *directory, tx *objects.Tx) (struct{}, error) {
		return struct{}{}, d.keepEvents(ctx, tx, id, evs)
	})
	return err
}

// deleteLost deletes session id, whose database file is missing (see
// CodeDataLost), for owner: what the session knew of itself, its owner
// included, is gone with the file, so owner's directory vouches for it. A
// session another owner's directory lists is not found. An admin's delete
// (owner "") removes the object only: its owner's list keeps the entry
// until that owner deletes it too, or lists it, as after a crash
// mid-deletion (unlistGhost).
func (svc *Service) deleteLost(ctx context.Context, owner, id string) error {
	notFound := fmt.Errorf("session %s: %w", id, ErrNotFound)
	if owner != "" {
		listed, err := svc.listed(ctx, owner, id)
		if err != nil {
			return err
		}
		if !listed {
			return notFound
		}
	}
	ctx = context.WithoutCancel(ctx) // begun, as Delete's
	stub, err := svc.sessions.Get(id)
	if err != nil {
		return err
	}
	ho := svc.handOver.get(id)
	ho.Lock()
	err = stub.Delete(ctx)
	ho.Unlock()
	svc.handOver.put(id, ho)
	if err != nil {
		return err
	}
	svc.logger().Warn("session: deleted a session whose database file was missing", "session", id, "owner", owner)
	if owner == "" {
		return nil
	}
	_, err = svc.unlist(ctx, owner, id, nil)
	return err
}

// listed reports whether owner's directory lists session id.
func (svc *Service) listed(ctx context.Context, owner, id string) (bool, error) {
	if ok, err := svc.dirs.Exists(ctx, owner); !ok || err != nil {
		return false, err
	}
	dstub, err := svc.dirs.Get(owner)
	if err != nil {
		return false, err
	}
	return objects.Do(ctx, dstub, func(ctx context.Context, d *directory, tx *objects.Tx) (bool, error) {
		var n int
		err := tx.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE id = ?`, id).Scan(&n)
		return n > 0, err
	})
}

// flushViewers closes the WebSockets of session id, about to be deleted,
// with the deletion's close code once they have written what is queued to
// them (for at most ViewerOptions.CloseTimeout): the final events of the
// generations the deletion ended, which the deletion's own close of the
// sockets would cut off.
func (svc *Service) flushViewers(id string) {
	svc.viewers.mu.Lock()
	var vs []*streaming.Viewer
	for sv := range svc.viewers.m {
		if sv.session == id {
			vs = append(vs, sv.v)
		}
	}
	svc.viewers.mu.Unlock()
	var wg sync.WaitGroup
	for _, v := range vs {
		wg.Go(func() { v.CloseWith(streaming.CloseNormal, objects.ReasonDeleted) })
	}
	wg.Wait()
}

// unlist removes a deleted session's entry from its owner's directory and
// publishes its deletion there (the session's own outbox is gone with it),
// after the events its outbox held unpublished, which Delete kept in the
// directory (keepDeletedEvents). If check is not nil, it runs first in the
// directory's call, and nothing happens unless it reports true. unlist
// reports whether it removed.
func (svc *Service) unlist(ctx context.Context, owner, id string, check func(ctx context.Context, tx *objects.Tx) (bool, error)) (bool, error) {
	// No update of the entry taken before may land after its removal.
	flushMu := svc.dir.flushLock(owner)
	flushMu.Lock()
	defer flushMu.Unlock()
	svc.dir.mu.Lock()
	delete(svc.dir.pending[owner], id)
	svc.dir.mu.Unlock()
	dstub, err := svc.dirs.Get(owner)
	if err != nil {
		return false, err
	}
	return objects.Do(ctx, dstub, func(ctx context.Context, d *directory, tx *objects.Tx) (bool, error) {
		if check != nil {
			if ok, err := check(ctx, tx); !ok || err != nil {
				return false, err
			}
		}
		if err := d.remove(ctx, tx, id); err != nil {
			return false, err
		}
		unpublished, err := d.takeEvents(ctx, tx, id)
		if err != nil {
			return false, err
		}
		if !svc.Events {
			return true, nil
		}
		for _, ev := range unpublished {
			if err := tx.PublishID(ctx, ev.Subject, ev.ID, ev.Data); err != nil {
				return false, err
			}
		}
		b, _ := json.Marshal(map[string]any{"session_id": id, "owner": owner, "at": nowMillis()})
		return true, tx.Publish(ctx, subjectPrefix+id+".deleted", b)
	})
}

// unlistGhost removes owner's directory entry of session id if no such
// session exists, and publishes its deletion: what a crash during Delete
// leaves (or an admin's deletion of a session whose file was lost). It
// reports whether there was one. An entry a Delete under way is about to
// remove is none.
func (svc *Service) unlistGhost(ctx context.Context, owner, id string) (bool, error) {
	if ValidateID(id) != nil {
		return false, nil
	}
	if _, ok := svc.deletions.Load(id); ok {
		return false, nil
	}
	if ok, err := svc.dirs.Exists(ctx, owner); !ok || err != nil {
		return false, err
	}
	return svc.unlist(ctx, owner, id, func(ctx context.Context, tx *objects.Tx) (bool, error) {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE id = ?`, id).Scan(&n); err != nil || n == 0 {
			return false, err
		}
		// Checked within the directory's call: a session made again
		// under this id lists itself only after it exists.
		exists, err := svc.sessions.Exists(ctx, id)
		return !exists, err
	})
}

// List returns a page of owner's sessions, most recently active first.
func (svc *Service) List(ctx context.Context, owner, cursor string, limit int) ([]DirEntry, string, error) {
	stub, err := svc.dirs.Get(owner)
	if err != nil {
		return nil, "", fmt.Errorf("%w: owner: %s", ErrInvalid, strings.TrimPrefix(err.Error(), "objects: "))
	}
	if cursor != "" {
		if _, _, err := decodeCursor(cursor); err != nil {
			return nil, "", err
		}
	}
	svc.flushDirectoryOf(owner)
	// An owner with no directory has no sessions: a list creates none (an
	// admin's ?owner= would otherwise leave a database for every name).
	if ok, err := svc.dirs.Exists(ctx, owner); err != nil || !ok {
		return []DirEntry{}, "", err
	}
	type page struct {
		entries []DirEntry
		next    string
	}
	// An entry whose session is gone, left by a crash during its
	// deletion, goes as a page shows it (unlistGhost), and the page is
	// read again, a few times at most: a client that never repeats the
	// DELETE would list it forever.
	for round := 1; ; round++ {
		p, err := objects.Do(ctx, stub, func(ctx context.Context, d *directory, tx *objects.Tx) (page, error) {
			e, n, err := d.list(ctx, tx, cursor, limit)
			return page{e, n}, err
		})
		if err != nil {
			return nil, "", err
		}
		kept := p.entries[:0]
		for _, e := range p.entries {
			if exists, err := svc.sessions.Exists(ctx, e.ID); err != nil || exists {
				kept = append(kept, e)
				continue
			}
			removed, err := svc.unlistGhost(ctx, owner, e.ID)
			if err != nil || !removed {
				kept = append(kept, e)
				continue
			}
			svc.logger().Warn("session: the list held a deleted session; removed", "session", e.ID, "owner", owner)
		}
		if len(kept) == len(p.entries) || round == maxGhostRounds {
			return kept, p.next, nil
		}
	}
}

// maxGhostRounds bounds the pages List reads again after removing entries
// of sessions that are gone.
const maxGhostRounds = 3

// flushDirectoryOf applies the owner's pending directory updates now, so a
// list shows what the same client just did. It reports whether they were
// applied (see applyDirectory).
func (svc *Service) flushDirectoryOf(owner string) bool {
	mu := svc.dir.flushLock(owner)
	mu.Lock()
	defer mu.Unlock()
	return svc.applyDirectory(owner)
}

// Turns pages through the turns of a branch.
func (svc *Service) Turns(ctx context.Context, owner, id string, q TurnQuery) ([]Turn, bool, error) {
	if q.Limit <= 0 || q.Limit > 1000 {
		return nil, false, fmt.Errorf("%w: limit must be 1 to 1000", ErrInvalid)
	}
	type page struct {
		turns []Turn
		more  bool
	}
	p, err := do(ctx, svc, owner, id, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (page, error) {
		t, more, err := o.turns(ctx, tx, q)
		return page{t, more}, err
	})
	return p.turns, p.more, err
}

// ValidateTurns checks turns a client posts.
func (svc *Service) ValidateTurns(turns []NewTurn) error {
	if len(turns) > svc.MaxTurnsPerRequest {
		return fmt.Errorf("%w: %d turns in one request, the limit is %d", ErrTooLarge, len(turns), svc.MaxTurnsPerRequest)
	}
	for i, t := range turns {
		switch t.Role {
		case RoleUser:
			if t.ToolCallID != "" {
				return fmt.Errorf("%w: turn %d: tool_call_id is only for role tool", ErrInvalid, i)
			}
		case RoleTool:
			if t.ToolCallID == "" {
				return fmt.Errorf("%w: turn %d: a tool turn needs tool_call_id", ErrInvalid, i)
			}
			if len(t.ToolCallID) > MaxToolCallIDBytes {
				return fmt.Errorf("%w: turn %d: tool_call_id is %d bytes, the limit is %d", ErrInvalid, i, len(t.ToolCallID), MaxToolCallIDBytes)
			}
		default:
			return fmt.Errorf("%w: turn %d: role must be user or tool", ErrInvalid, i)
		}
		if len(t.Content) > svc.MaxTurnBytes {
			return fmt.Errorf("%w: turn %d is %d bytes, the limit is %d", ErrTooLarge, i, len(t.Content), svc.MaxTurnBytes)
		}
		if err := validContent(t.Content); err != nil {
			return fmt.Errorf("turn %d: %w", i, err)
		}
	}
	return nil
}

// validContent accepts a JSON string or an array of content parts, each an
// object with a string "type" (a "text" part needs a string "text").
func validContent(c json.RawMessage) error {
	if len(c) == 0 {
		return fmt.Errorf("%w: content is required", ErrInvalid)
	}
	if c[0] == '"' {
		// A string. The request's decoder has validated the JSON already:
		// no need to decode (and copy) what may be 32 MiB again.
		return nil
	}
	var parts []map[string]json.RawMessage
	if err := json.Unmarshal(c, &parts); err != nil || len(parts) == 0 {
		// null decodes without error, to no parts: refused with [].
		return fmt.Errorf("%w: content must be a string or a non-empty array of content parts", ErrInvalid)
	}
	for i, p := range parts {
		var typ string
		if err := json.Unmarshal(p["type"], &typ); err != nil || typ == "" {
			return fmt.Errorf("%w: content part %d needs a string type", ErrInvalid, i)
		}
		if typ == "text" {
			var text string
			if err := json.Unmarshal(p["text"], &text); err != nil {
				return fmt.Errorf("%w: text part %d needs a string text", ErrInvalid, i)
			}
		}
	}
	return nil
}

// check refuses a post that asks for nothing or whose idempotency key is
// too long. sessionObj.post calls it too, so every way of posting (REST,
// WebSocket send) refuses the same requests with the same error.
func (req *PostRequest) check() error {
	if len(req.Turns) == 0 && !req.Generate {
		return fmt.Errorf("%w: nothing to do: no turns and no generate", ErrInvalid)
	}
	if len(req.IdempotencyKey) > maxKeyBytes {
		return fmt.Errorf("%w: Idempotency-Key is longer than %d bytes", ErrInvalid, maxKeyBytes)
	}
	if req.Root && req.Parent != 0 {
		return fmt.Errorf("%w: root and parent_id exclude each other", ErrInvalid)
	}
	if req.Root && len(req.Turns) == 0 {
		return fmt.Errorf("%w: root needs turns: a generation at the root would answer nothing", ErrInvalid)
	}
	return nil
}

// Post appends turns and, with Generate, starts (or queues) a generation.
func (svc *Service) Post(ctx context.Context, owner, id string, req PostRequest) (*PostResult, error) {
	if err := svc.ValidateTurns(req.Turns); err != nil {
		return nil, err
	}
	if err := req.check(); err != nil {
		return nil, err
	}
	return do(ctx, svc, owner, id, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (*PostResult, error) {
		return o.post(ctx, tx, &req)
	})
}

// Generation returns a generation's state.
func (svc *Service) Generation(ctx context.Context, owner, id, gid string) (*Generation, error) {
	return do(ctx, svc, owner, id, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (*Generation, error) {
		return o.generation(ctx, tx, gid)
	})
}

// Cancel stops a generation and returns its final state. A running one
// commits what it produced as cancelled; a queued one never starts; a
// finished one is returned as it is.
func (svc *Service) Cancel(ctx context.Context, owner, id, gid string) (*Generation, error) {
	done, err := do(ctx, svc, owner, id, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (chan struct{}, error) {
		if o.run != nil && o.run.id == gid {
			o.run.cancel(errCancelled)
			return o.run.done, nil
		}
		if _, err := o.generation(ctx, tx, gid); err != nil {
			return nil, err
		}
		_, err := o.cancelQueued(ctx, tx, gid, nil, time.Now().UnixMilli())
		return nil, err
	})
	if err != nil {
		return nil, err
	}
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return svc.Generation(ctx, owner, id, gid)
}

// Fork creates a new session, owned by the same owner, holding a copy of
// the branch that ends at turnID. idemKey, when set, makes it idempotent
// as Create's IdempotencyKey does.
//
// The branch is copied in pages (forkPageTurns turns, at most MaxPageBytes
// of content each), read from the source in calls of their own and written
// in the new session's one creating call: memory stays bounded however long
// the branch, and the new session exists whole or not at all. A turn still
// streaming is copied as it stands, interrupted.
func (svc *Service) Fork(ctx context.Context, owner, id string, turnID int64, idemKey string) (*Session, error) {
	hash := createHash("fork", []byte(id), fmt.Append(nil, turnID))
	if idemKey != "" && owner != "" {
		// A repeat gets the fork it made, even if its source is gone.
		fid, err := svc.madeWith(ctx, owner, idemKey, hash)
		if err != nil {
			return nil, err
		}
		if fid != "" {
			if s, err := svc.Get(ctx, owner, fid); !errors.Is(err, ErrNotFound) {
				return s, err
			}
		}
	}
	m, err := do(ctx, svc, owner, id, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (meta, error) {
		if _, err := o.getTurn(ctx, tx, turnID); err != nil {
			return meta{}, fmt.Errorf("%w: turn %d does not exist", ErrInvalid, turnID)
		}
		return *o.m, nil
	})
	if err != nil {
		return nil, err
	}
	title := forkTitle(m.Title)
	req := CreateRequest{Title: title, Model: m.Model, System: m.System, Metadata: m.Metadata, BusyPolicy: m.Policy}
	if idemKey != "" {
		nid, err := svc.claimCreate(ctx, m.Owner, idemKey, hash, NewID())
		if err != nil {
			return nil, err
		}
		req.ID, req.IdempotencyKey = nid, idemKey
	}
	// Pages walk the branch from its end towards its root, newest first.
	pages := func(ctx context.Context, emit func([]Turn) error) error {
		for n, leaf := 0, turnID; leaf > 0; n++ {
			forkPageHook(n)
			page, err := do(ctx, svc, owner, id, func(ctx context.Context, o *sessionObj, tx *objects.Tx) ([]Turn, error) {
				turns, _, err := o.branchTurns(ctx, tx, leaf, 0, forkPageTurns, svc.MaxPageBytes)
				return turns, err
			})
			if err != nil {
				return fmt.Errorf("fork: read the branch of session %s: %w", id, err)
			}
			if len(page) == 0 && n > 0 {
				// A parent link to a turn the session lacks (an import
				// made before imports were checked): the branch ends here.
				break
			}
			if len(page) == 0 || page[0].ID != leaf {
				return fmt.Errorf("fork: session %s: turn %d is gone", id, leaf)
			}
			if err := emit(page); err != nil {
				return err
			}
			leaf = 0
			if p := page[len(page)-1].ParentID; p != nil {
				leaf = *p
			}
		}
		return nil
	}
	return svc.restore(ctx, m.Owner, req, pages, turnID)
}

// interruptCopy makes t, a turn still streaming when it was copied (by a
// fork, or into an export), interrupted as a turn the server's stop cut
// short is: its output so far, finish_reason and error "interrupted"
// (finish_reason and error kept when it has them).
func interruptCopy(t *Turn) {
	if t.GenerationID != nil {
		nameToolCalls(t.ToolCalls, *t.GenerationID) // as its end would
	}
	t.Status = TurnInterrupted
	if t.FinishReason == nil {
		fr := "interrupted"
		t.FinishReason = &fr
	}
	if t.Error == nil {
		t.Error = &ErrorInfo{Code: "interrupted", Message: "the turn was still being generated when it was copied into this session"}
	}
}

// forkPageTurns is the most turns of one page of a fork's copy.
const forkPageTurns = 256

// forkPageHook runs before a fork reads its page n (tests).
var forkPageHook = func(n int) {}

// turnPages hands restore the turns of a new session, a page at a time, in
// any order of ids. It stops at emit's first error and returns it.
type turnPages func(ctx context.Context, emit func([]Turn) error) error

// restore creates a session holding the turns that pages give (ids and
// parents kept), its head the turn head, or the newest turn when head is 0
// or not among them. The pages are written in the new session's creating
// call, so that the session exists with all of them or not at all.
func (svc *Service) restore(ctx context.Context, owner string, req CreateRequest, pages turnPages, head int64) (*Session, error) {
	if req.ID == "" {
		req.ID = NewID()
	}
	if _, _, err := svc.Models.Get(req.Model); err != nil {
		req.Model = svc.Models.Default()
	}
	stub, err := svc.sessions.Get(req.ID)
	if err != nil {
		return nil, err
	}
	var shown *string // the directory's preview; nil: the session existed
	s, err := objects.Do(ctx, stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (*Session, error) {
		if o.m != nil {
			return o.existing(ctx, tx, owner, &req)
		}
		// links holds each turn's id and parent, to tell at the end
		// whether the turns form one chain (16 bytes a turn).
		var links [][2]int64
		var newest int64
		known := false
		err := pages(ctx, func(page []Turn) error {
			for _, t := range page {
				if t.Status == TurnStreaming {
					interruptCopy(&t)
				}
				var parent int64
				if t.ParentID != nil {
					parent = *t.ParentID
				}
				links = append(links, [2]int64{t.ID, parent})
				id := t.ID
				if err := insertTurn(ctx, tx, &t, ""); err != nil {
					return err
				}
				newest = max(newest, id)
				if id == head {
					known = true
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if !known {
			head = newest
		}
		p, err := o.branchPreview(ctx, tx, head)
		if err != nil {
			return nil, err
		}
		// One chain, head at its end, lists as turns by id; anything
		// else follows the head's branch.
		slices.SortFunc(links, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
		branched := head != newest
		for i := 1; i < len(links) && !branched; i++ {
			branched = links[i][1] != links[i-1][0]
		}
		now := nowMillis()
		s, err := o.establish(ctx, tx, &meta{ID: req.ID, Owner: owner, Title: req.Title, Model: req.Model, System: req.System,
			Metadata: req.Metadata, Policy: req.BusyPolicy, Head: head, Newest: newest, Branched: branched, CreatedAt: now, UpdatedAt: now,
			CreateKey: req.IdempotencyKey})
		if err == nil {
			shown = &p
		}
		return s, err
	})
	if err != nil {
		return nil, err
	}
	e := DirEntry{ID: s.ID, Title: s.Title, CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt}
	if shown != nil {
		e.Preview = *shown
	}
	return s, svc.upsertDirectory(ctx, owner, e, shown == nil)
}

// exportLine is one line of an export: a session, then its turns.
type exportLine struct {
	Type    string   `json:"type"`
	Session *Session `json:"session,omitempty"`
	Turn    *Turn    `json:"turn,omitempty"`
}

// Export writes the session and all its turns (every branch) as JSON lines.
// The turns are read in pages (MaxPageBytes), each in a call of its own,
// so that memory stays bounded however large the session; the export holds
// the turns up to the session's last turn when it began.
func (svc *Service) Export(ctx context.Context, owner, id string, w io.Writer) error {
	s, err := do(ctx, svc, owner, id, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (*Session, error) {
		return o.session(ctx, tx)
	})
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(exportLine{Type: "session", Session: s}); err != nil {
		return err
	}
	for after := int64(0); after < s.LastTurnID; {
		turns, err := do(ctx, svc, owner, id, func(ctx context.Context, o *sessionObj, tx *objects.Tx) ([]Turn, error) {
			out, _, err := o.queryTurnsUpTo(ctx, tx, svc.MaxPageBytes,
				`SELECT `+turnColumns+` FROM turns WHERE id > ? AND id <= ? ORDER BY id LIMIT 256`, after, s.LastTurnID)
			return out, err
		})
		if err != nil {
			return err
		}
		if len(turns) == 0 {
			break
		}
		for _, t := range turns {
			// The turn line is the WebSocket turn message: its content
			// spliced in, not validated and copied again (a 32 MiB turn:
			// 0.22 -> 0.04 s).
			if _, err := w.Write(append(TurnMessageJSON(t), '\n')); err != nil {
				return err
			}
		}
		after = turns[len(turns)-1].ID
	}
	return nil
}

// invalidUTF8At returns the offset of the first byte of b that is not
// UTF-8, or len(b).
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}

// MaxTurnID is the largest turn id: 2^53-1, the largest integer every
// JSON client reads exactly. A session mints no id past it (a post that
// would need one is refused with ErrNoTurnIDs), and an import takes every
// id up to it, so that any session's export imports.
const MaxTurnID = 1<<53 - 1

// MaxImportTurnID is the largest turn id an import may hold: MaxTurnID,
// every id a session can mint. (It was 2^50, below ids the server went on
// to mint, whose sessions' exports it then refused.)
const MaxImportTurnID = MaxTurnID

// Import creates a session from an export, owned by owner. It keeps the
// exported id when it is free, and takes a new one otherwise. idemKey,
// when set, makes it idempotent as Create's IdempotencyKey does (the same
// export bytes with the same key make one session).
func (svc *Service) Import(ctx context.Context, owner string, r io.Reader, idemKey string) (*Session, error) {
	body := sha256.New()
	sc := bufio.NewScanner(io.TeeReader(r, body))
	// A line holds one turn: its content, up to MaxTurnBytes, and the
	// rest of the turn, well under 64 KiB.
	maxLine := svc.MaxTurnBytes + 64<<10
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var lineAt, read int64 // where the line sc holds starts; the bytes split off
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		adv, tok, err := bufio.ScanLines(data, atEOF)
		if tok != nil {
			lineAt = read
		}
		read += int64(adv)
		return adv, tok, err
	})
	var s *Session
	var turns []Turn
	var last int64
	ids := map[int64]bool{}
	importedAt := nowMillis()
	for n := 1; sc.Scan(); n++ {
		if sc.Err() != nil {
			break // the read failed: the last line is cut, report the failure
		}
		if !utf8.Valid(sc.Bytes()) {
			// JSON text is UTF-8 (RFC 8259); encoding/json would keep raw
			// bytes such as 0xff in a content as they are, to be served
			// back to clients that refuse them. A pass of its own: the
			// decoder below does not look.
			return nil, fmt.Errorf("%w: line %d: the body is not valid UTF-8 at byte offset %d", ErrInvalidJSON, n, lineAt+int64(invalidUTF8At(sc.Bytes())))
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var l exportLine
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("%w: line %d: %v", ErrInvalidJSON, n, err)
			}
			return nil, fmt.Errorf("%w: line %d: %s", ErrInvalidShape, n, jsonDecodeMessage(err))
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: line %d holds more than one JSON value", ErrInvalidJSON, n)
		}
		// Each line type has its own object: the other's is a field
		// its line does not have, as an unknown one is.
		if l.Type == "session" && l.Turn != nil {
			return nil, fmt.Errorf("%w: line %d: a session line has no field \"turn\"", ErrInvalidShape, n)
		}
		if l.Type == "turn" && l.Session != nil {
			return nil, fmt.Errorf("%w: line %d: a turn line has no field \"session\"", ErrInvalidShape, n)
		}
		switch {
		case l.Type == "session" && l.Session != nil && s == nil:
			s = l.Session
		case l.Type == "turn" && l.Turn != nil && s != nil:
			t := *l.Turn
			if t.ID <= last || t.ID > MaxImportTurnID {
				return nil, fmt.Errorf("%w: line %d: turn ids must increase, from 1 to %d", ErrInvalid, n, int64(MaxImportTurnID))
			}
			if t.ParentID != nil && !ids[*t.ParentID] {
				return nil, fmt.Errorf("%w: line %d: parent turn %d is not among the turns before it", ErrInvalid, n, *t.ParentID)
			}
			switch t.Status {
			case "", TurnComplete, TurnStreaming, TurnCancelled, TurnFailed, TurnInterrupted:
			default:
				return nil, fmt.Errorf("%w: line %d: unknown turn status %q", ErrInvalid, n, t.Status)
			}
			switch t.Role {
			case RoleSystem, RoleUser, RoleAssistant, RoleTool:
			default:
				return nil, fmt.Errorf("%w: line %d: unknown role %q", ErrInvalid, n, t.Role)
			}
			if err := validContent(t.Content); err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			if t.ToolCallID != nil && len(*t.ToolCallID) > MaxToolCallIDBytes ||
				slices.ContainsFunc(t.ToolCalls, func(c ToolCall) bool { return len(c.ID) > MaxToolCallIDBytes }) {
				return nil, fmt.Errorf("%w: line %d: a tool call id over %d bytes", ErrInvalid, n, MaxToolCallIDBytes)
			}
			if len(t.Content) > svc.MaxTurnBytes {
				// As a post's: every turn a session holds is one a
				// client could post.
				return nil, fmt.Errorf("%w: line %d: the turn's content is %d bytes, the limit is %d", ErrTooLarge, n, len(t.Content), svc.MaxTurnBytes)
			}
			if t.Status == "" {
				t.Status = TurnComplete
			}
			if u := t.Usage; u != nil && (u.PromptTokens < 0 || u.CompletionTokens < 0 || u.TotalTokens < 0) {
				return nil, fmt.Errorf("%w: line %d: usage counts must not be negative", ErrInvalid, n)
			}
			if t.CreatedAt.IsZero() {
				t.CreatedAt = Timestamp{importedAt} // absent: the import's time, not year 1
			}
			last = t.ID
			ids[t.ID] = true
			turns = append(turns, t)
		default:
			return nil, fmt.Errorf("%w: line %d: expected a session line first, then turn lines", ErrInvalid, n)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: a line of the import is over %d bytes (a turn's content may have %d)", ErrTooLarge, maxLine, svc.MaxTurnBytes)
		}
		return nil, fmt.Errorf("read import: %w", err)
	}
	if s == nil {
		return nil, fmt.Errorf("%w: empty import", ErrInvalid)
	}
	if s.LastTurnID != 0 && last != s.LastTurnID {
		// An export's last line is the turn its session line names: one
		// that stops before it was cut short (a download broken off, a
		// file truncated), and would make a shorter session silently.
		return nil, fmt.Errorf("%w: the import ends at turn %d, but its session line has last_turn_id %d: the export is incomplete (export it again; or, for turns removed by hand, set last_turn_id to the last turn's id)", ErrInvalid, last, s.LastTurnID)
	}
	if s.HeadTurnID != 0 && !ids[s.HeadTurnID] {
		// The head is where the conversation goes on: one that names no
		// turn would silently become the last turn, another branch.
		return nil, fmt.Errorf("%w: the session line's head_turn_id %d is not among the turns (0 or absent: the last turn)", ErrInvalid, s.HeadTurnID)
	}
	s.Metadata = nullAsAbsent(s.Metadata)
	if err := errors.Join(validText("title", s.Title, MaxTitleBytes), validText("system", s.System, MaxSystemBytes),
		validMetadata(s.Metadata), validPolicy(s.BusyPolicy)); err != nil {
		return nil, err
	}
	req := CreateRequest{ID: s.ID, Title: s.Title, Model: s.Model, System: s.System, Metadata: s.Metadata, BusyPolicy: s.BusyPolicy}
	if ValidateID(req.ID) != nil {
		req.ID = ""
	} else if ok, err := svc.sessions.Exists(ctx, req.ID); err != nil {
		return nil, err
	} else if ok {
		req.ID = ""
	}
	exported := s.ID // valid or not: only an id a create took is compared with it
	hash := createHash("import", body.Sum(nil))
	if idemKey != "" {
		if req.ID == "" {
			req.ID = NewID()
		}
		id, err := svc.claimCreate(ctx, owner, idemKey, hash, req.ID)
		if err != nil {
			return nil, err
		}
		req.ID, req.IdempotencyKey = id, idemKey
	}
	pages := func(_ context.Context, emit func([]Turn) error) error { return emit(turns) }
	made, err := svc.restore(ctx, owner, req, pages, s.HeadTurnID)
	if errors.Is(err, errSessionExists) && req.ID == exported {
		// Another request (a concurrent import of the same export, a
		// create) took the exported id since it was checked (or since
		// the key's first request claimed it): take a new one, as for an
		// id taken before. With a key, the key moves to it, once for all
		// the requests that carry the key.
		id := NewID()
		if idemKey != "" {
			if id, err = svc.moveCreateClaim(ctx, owner, idemKey, hash, exported, id); err != nil {
				return nil, err
			}
		}
		req.ID = id
		made, err = svc.restore(ctx, owner, req, pages, s.HeadTurnID)
	}
	return made, err
}

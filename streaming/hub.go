package streaming

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// HubOptions configures a Hub. A nil *HubOptions means all defaults.
type HubOptions struct {
	// Retention is the LogOptions.Retention of the hub's generation logs.
	// Zero means DefaultRetention (10 minutes).
	Retention time.Duration

	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Position is a point in a generation's log: a client that has seen every
// event up to offset After resumes from there.
type Position struct {
	Generation string
	After      int64
}

// Hub holds the viewers of one session and its current and recent
// generation logs. Every viewer of the hub gets every Broadcast message and
// the live events of every running generation of the hub, whoever started
// it; Resume and AddViewer's resume position add a backlog.
//
// Fan-out encodes each event once; each viewer gets one append to its
// queue and at most one writer wake-up per flush interval.
//
// A Hub is safe for concurrent use. The caller must Close it when the
// session goes away.
type Hub struct {
	retention time.Duration
	logger    *slog.Logger

	mu      sync.Mutex
	closed  bool
	viewers map[*Viewer]struct{}
	logs    map[string]*Log
}

// NewHub returns an empty hub.
func NewHub(opts *HubOptions) *Hub {
	if opts == nil {
		opts = &HubOptions{}
	}
	h := &Hub{
		retention: opts.Retention,
		logger:    opts.Logger,
		viewers:   make(map[*Viewer]struct{}),
		logs:      make(map[string]*Log),
	}
	if h.logger == nil {
		h.logger = slog.Default()
	}
	return h
}

// AddViewer adds v to the hub: from now on it gets every Broadcast and the
// live events of every running and future generation.
//
// With a non-nil resume, v first gets the events of resume.Generation after
// resume.After, then that generation's live events, exactly once and in
// order: adding and positioning happen atomically, so no live event can
// slip in before the backlog. If that resume is impossible the viewer is
// still added and AddViewer returns an error matching
// ErrGenerationNotFound (not held, or no longer retained: send the
// committed turn instead; v follows the live events only) or
// ErrOffsetOutOfRange (resume.After is past the generation's last event:
// the position is wrong, so v does not follow that generation at all,
// only broadcasts and the other generations).
//
// AddViewer returns ErrHubClosed or ErrViewerClosed, without adding v, if
// the hub or the viewer has stopped.
func (h *Hub) AddViewer(v *Viewer, resume *Position) error {
	return h.AddViewerFrom(v, resume, "")
}

// AddViewerFrom is AddViewer, but v gets the events of the running
// generation fromStart from its first on (the backlog, then its live
// events), not from the next one: a viewer that resumes one generation
// while another one runs, which it has not seen start, gets all of the
// other's text. fromStart "", or that of resume, is AddViewer.
func (h *Hub) AddViewerFrom(v *Viewer, resume *Position, fromStart string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return fmt.Errorf("add viewer: %w", ErrHubClosed)
	}
	if !v.open() {
		return fmt.Errorf("add viewer: %w", ErrViewerClosed)
	}
	h.viewers[v] = struct{}{}
	var err error
	skip := ""
	if resume != nil {
		err = h.resumeLocked(v, resume.Generation, resume.After)
		if errors.Is(err, ErrOffsetOutOfRange) {
			skip = resume.Generation
		}
	}
	for id, l := range h.logs {
		switch {
		case id == skip:
		case id == fromStart && (resume == nil || id != resume.Generation):
			if serr := l.Subscribe(v, 0); serr != nil && !errors.Is(serr, ErrReleased) && err == nil {
				err = fmt.Errorf("follow %s from its start: %w", id, serr)
			}
		default:
			l.subscribeLive(v)
		}
	}
	return err
}

// RemoveViewer stops everything the hub sends to v: broadcasts and live
// events. It does not close v, and frames already queued to v are still
// written.
func (h *Hub) RemoveViewer(v *Viewer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.viewers, v)
	for _, l := range h.logs {
		l.Unsubscribe(v)
	}
}

// Viewers returns the number of viewers in the hub.
func (h *Hub) Viewers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.viewers)
}

// CloseIfIdle closes the hub if it holds no viewer (viewers that have
// stopped are forgotten first) and no log (a running generation's, or an
// ended one still retained), and reports whether it did. The check and the
// close are one step under the hub's lock, so that a caller dropping idle
// hubs (a janitor) never closes one under a generation that has just
// started or a viewer that has just been added. It never blocks: an idle
// hub has nothing to close but itself.
func (h *Hub) CloseIfIdle() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return true
	}
	for v := range h.viewers {
		if !v.open() {
			delete(h.viewers, v)
		}
	}
	if len(h.viewers) > 0 || len(h.logs) > 0 {
		return false
	}
	h.closed = true
	h.viewers, h.logs = nil, nil
	return true
}

// Broadcast queues msg to every viewer (e.g. a committed turn) and returns
// how many accepted it. It never blocks; msg must not be modified
// afterwards. Viewers that have stopped are forgotten.
func (h *Hub) Broadcast(msg []byte) int {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for v := range h.viewers {
		if v.send(msg, now) == nil {
			n++
		} else {
			delete(h.viewers, v)
		}
	}
	return n
}

// StartGeneration creates the log of a new generation, follows it with
// every viewer of the hub, and returns it to the producer. It returns
// ErrGenerationExists if a retained log has that id.
func (h *Hub) StartGeneration(id string) (*Log, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("start generation %s: %w", id, ErrHubClosed)
	}
	if l, ok := h.logs[id]; ok && l.Retained() {
		return nil, fmt.Errorf("start generation %s: %w", id, ErrGenerationExists)
	}
	l := NewLog(id, &LogOptions{Retention: h.retention, Logger: h.logger})
	l.onRelease = h.forget
	for v := range h.viewers {
		if !v.open() {
			delete(h.viewers, v)
			continue
		}
		l.subscribeLive(v)
	}
	h.logs[id] = l
	return l, nil
}

// forget removes a released log from the hub.
func (h *Hub) forget(l *Log) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.logs[l.generation] == l {
		delete(h.logs, l.generation)
	}
}

// Log returns the log of a generation, if the hub still retains it.
func (h *Hub) Log(id string) (*Log, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.logs[id]
	if !ok || !l.Retained() {
		return nil, false
	}
	return l, true
}

// Retained reports whether the events of generation id can still be
// resumed by offset. When they cannot, the caller sends the committed turn.
func (h *Hub) Retained(id string) bool {
	_, ok := h.Log(id)
	return ok
}

// Resume gives v the events of generation after offset after, then its live
// events, exactly once and in order (see Log.Subscribe, including what
// happens when v already follows the generation). v need not be in the hub
// (e.g. an SSE stream of one generation). It returns ErrGenerationNotFound
// when the hub does not retain the generation, ErrOffsetOutOfRange, or
// ErrViewerClosed.
func (h *Hub) Resume(v *Viewer, generation string, after int64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return fmt.Errorf("resume %s: %w", generation, ErrHubClosed)
	}
	return h.resumeLocked(v, generation, after)
}

func (h *Hub) resumeLocked(v *Viewer, generation string, after int64) error {
	l, ok := h.logs[generation]
	if !ok {
		return fmt.Errorf("resume %s: %w", generation, ErrGenerationNotFound)
	}
	err := l.Subscribe(v, after)
	if errors.Is(err, ErrReleased) {
		return fmt.Errorf("resume %s: %w", generation, ErrGenerationNotFound)
	}
	return err
}

// Close closes every viewer of the hub (with CloseGoingAway, concurrently,
// waiting for all) once it has written what is queued to it, within its
// CloseTimeout (see Viewer.CloseWith: a generation's final event, sent
// as the server stops, reaches its viewers before they close), and
// releases every log; a producer still appending then gets ErrReleased.
// It returns the viewers' sink errors, joined.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	viewers := make([]*Viewer, 0, len(h.viewers))
	for v := range h.viewers {
		viewers = append(viewers, v)
	}
	logs := make([]*Log, 0, len(h.logs))
	for _, l := range h.logs {
		logs = append(logs, l)
	}
	h.viewers, h.logs = nil, nil
	h.mu.Unlock()

	errs := make([]error, len(viewers))
	var wg sync.WaitGroup
	for i, v := range viewers {
		wg.Go(func() { errs[i] = v.CloseWith(CloseGoingAway, "going away") })
	}
	wg.Wait()
	for _, l := range logs {
		l.Release()
	}
	return errors.Join(errs...)
}

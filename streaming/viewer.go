package streaming

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Defaults of ViewerOptions.
const (
	// DefaultMaxBuffered bounds the bytes queued to one viewer.
	DefaultMaxBuffered = 1 << 20
	// DefaultFlushBytes is the queued size that is written without waiting
	// for the flush interval.
	DefaultFlushBytes = 16 << 10
	// DefaultFlushInterval is the least time between two writes to one
	// viewer while events keep coming.
	DefaultFlushInterval = 15 * time.Millisecond
	// DefaultWriteTimeout bounds one WriteFrame call.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultDropTimeout is how long a dropped viewer's last write and its
	// resume_required message may take before the connection is cut.
	DefaultDropTimeout = time.Second
	// DefaultCloseTimeout bounds CloseWith's flushing of queued frames.
	DefaultCloseTimeout = time.Second
)

// MaxBurst times ViewerOptions.MaxBuffered bounds the bytes queued to a
// viewer in a burst, before its writer has been seen to fall behind (see
// MaxBuffered): 16 MiB with the default.
const MaxBurst = 16

// Close codes passed to Sink.Close. They are WebSocket close codes; the SSE
// sink ignores them.
const (
	// CloseNormal: the viewer is done (CloseOnFinal, or CloseWith).
	CloseNormal = 1000
	// CloseGoingAway: Viewer.Close and Hub.Close (server or session going
	// away).
	CloseGoingAway = 1001
	// ClosePolicyViolation is for callers refusing a client (bad messages).
	ClosePolicyViolation = 1008
	// CloseInternalError: a write to the client failed.
	CloseInternalError = 1011
	// CloseResumeRequired: the viewer was too slow and was dropped. It was
	// sent resume_required with the offset to resume after, if it could be
	// reached; it should reconnect and resume from there.
	CloseResumeRequired = 4000
)

// Sink writes frames to one client. Write may block on a slow client; it is
// only ever called from the viewer's writer goroutine, never concurrently
// with itself or with Close.
//
// WriteFrame must return soon after ctx is done: that is how a dropped or
// closed viewer stops a write stuck on a client that does not read.
type Sink interface {
	// WriteFrame writes one or more JSON messages; the sink decides how (one
	// WebSocket message each, or SSE events with one flush).
	WriteFrame(ctx context.Context, frames [][]byte) error
	// Close ends the connection with a close code (see the Close*
	// constants) and a short reason. It is called exactly once.
	Close(code int, reason string) error
}

// ViewerOptions configures a Viewer. A nil *ViewerOptions means all
// defaults; in a non-nil one, zero fields take their default except
// FlushInterval, where zero means no time coalescing.
type ViewerOptions struct {
	// MaxBuffered is the most bytes of live events and messages queued
	// behind a write that has taken FlushInterval or longer; one more and
	// the viewer is dropped. Only such a write shows that the client does
	// not keep up: bytes queued while no write is under way (the writer
	// has yet to come for them, or waits out FlushInterval) or within
	// FlushInterval of a write's start are a burst, sent back to back
	// faster than any client reads, and may queue up to MaxBurst times
	// MaxBuffered, and the message that passes it, before they count
	// against the viewer. A single message,
	// or the messages of one Send, are always accepted into an empty
	// queue, whatever their size; and a backlog asked for by Subscribe or
	// Resume does not count (it is shared with the log, and what of it
	// was compacted is rebuilt FlushBytes at a time as it is written).
	// Default DefaultMaxBuffered (1 MiB).
	MaxBuffered int

	// FlushBytes: once this many bytes are queued, they are written
	// without waiting for FlushInterval. It also bounds one write of a
	// backlog's compacted events, rebuilt as they are written (at least
	// one event, at most 1,024). Default DefaultFlushBytes (16 KiB).
	FlushBytes int

	// FlushInterval is the least time between the starts of two writes
	// while events keep coming; what arrives in between is handed to the
	// sink in one WriteFrame. An event arriving after a quiet interval is
	// written at once, so coalescing only delays bursts, by at most the
	// interval. Zero writes every event as soon as the writer is free
	// (lowest latency, most wake-ups and syscalls). With nil options,
	// DefaultFlushInterval (15 ms).
	FlushInterval time.Duration

	// WriteTimeout bounds one WriteFrame call; when it expires the write
	// is cancelled, and the viewer fails (Err matches ErrWriteTimeout) and
	// is closed. Zero means DefaultWriteTimeout (10 s); negative
	// means no timeout.
	WriteTimeout time.Duration

	// DropTimeout is how long a dropped viewer's in-flight write plus its
	// resume_required message may take before they are cancelled. Zero
	// means DefaultDropTimeout (1 s).
	DropTimeout time.Duration

	// CloseTimeout bounds CloseWith's flushing of queued frames. Zero
	// means DefaultCloseTimeout (1 s).
	CloseTimeout time.Duration

	// CloseOnFinal closes the viewer with CloseNormal once it has written
	// the done or error event of a generation: an SSE stream of one
	// generation ends there.
	CloseOnFinal bool

	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

type viewerState uint8

const (
	stateOpen      viewerState = iota
	stateDraining              // CloseWith: write what is queued, then close
	stateDropped               // overflowed: resume_required, then close
	stateFailed                // a write failed: close
	stateClosing               // Close: the writer stops, Close closes the sink
	stateFinishing             // someone is closing the sink
	stateClosed                // sink closed, done closed
)

// item is one entry of a viewer's queue: a message, consecutive events of
// one log sharing the log's storage, or consecutive compacted events of
// one log, offsets from to to of a snapshot of its compacted storage, that
// the writer rebuilds a batch at a time (see takeLocked).
type item struct {
	log       *Log    // nil for a message
	events    []Event // consecutive events of log; a window of log.events
	compacted *compactedEvents
	from, to  int64 // with compacted
	msg       []byte
	live      bool // counts toward MaxBuffered
	// Bytes of msg or events. Compacted events count for nothing while
	// queued (they are not built yet); in a batch, size is the bytes that
	// write rebuilds for them (see compactedEvents.span).
	size int
}

// last returns the offset of the last event of it, an item of a log, and
// whether it is the log's final event.
func (it *item) last() (off int64, final bool) {
	if it.compacted != nil {
		return it.to, false // compacted events are deltas
	}
	e := it.events[len(it.events)-1]
	return e.Offset, e.Final()
}

// backlog is what Log.Subscribe hands a viewer: the compacted events from
// to to of a snapshot of the log's compacted storage (none if compacted is
// nil), then the encoded events after them.
type backlog struct {
	compacted *compactedEvents
	from, to  int64
	events    []Event
}

// maxRebuilt bounds the compacted events the writer rebuilds for one
// write, besides ViewerOptions.FlushBytes.
const maxRebuilt = 1024

// sub is a viewer's position in one generation: the last offset handed to
// its sink (or the offset it joined or resumed at).
type sub struct {
	log *Log
	pos int64
}

// Log keys.
const (
	logKeyErr        = "err"
	logKeyResumes    = "resume_required"
	logKeyGeneration = "generation"
	logKeyEvents     = "events"
)

// Keep per-viewer buffers between writes only while they are small, so that
// an idle viewer costs little.
const keepBuffers = 16

// Viewer is one connected client (WebSocket or SSE). Events and messages
// reach it through Log.Subscribe, Hub and Send; it queues them and writes
// them to its Sink from a writer goroutine.
//
// Sending to a viewer never blocks: it appends to a bounded queue. A viewer
// whose queue overflows (ViewerOptions.MaxBuffered) is dropped: its queue is
// discarded, it is sent {"type":"resume_required","generation":…,"after":N}
// for each generation it was following, N being the last offset handed to
// its sink, and its sink is closed with CloseResumeRequired.
//
// The writer goroutine exists only while there is something to write: it
// is started on demand and exits when the queue is empty, so an idle viewer
// costs memory but no goroutine. It is owned by the viewer: Close stops it
// and waits for it.
//
// All methods are safe for concurrent use. The caller calls Close (or
// CloseWith) when the connection ends; once Done is closed, Close returns
// at once.
type Viewer struct {
	sink          Sink
	maxBuffered   int
	flushBytes    int
	flushInterval time.Duration
	writeTimeout  time.Duration
	dropTimeout   time.Duration
	closeTimeout  time.Duration
	closeOnFinal  bool
	logger        *slog.Logger

	ctx    context.Context // cancelled to abort a write: close, drop deadline
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // 1 while the writer runs or is scheduled
	done   chan struct{}

	mu          sync.Mutex
	state       viewerState
	err         error
	queue       []item
	spare       []item
	queued      int // bytes in queue
	live        int // bytes in queue counting toward maxBuffered
	backlogs    int // backlog items (events or messages) in queue: written without waiting
	subs        map[string]sub
	running     bool        // writer goroutine running, or timer armed
	writing     bool        // the writer has taken a batch (at lastFlush) and is writing it
	timer       *time.Timer // armed when the writer waits for the interval
	lastFlush   time.Time
	writeFailed bool
	stopTimer   *time.Timer // drop or drain deadline
	drainCode   int
	drainReason string
	closeErr    error

	frames   [][]byte    // writer goroutine only, and finish
	watchdog *time.Timer // writer goroutine only: WriteTimeout
}

// NewViewer returns an open viewer writing to sink. No goroutine starts
// until there is something to write.
func NewViewer(sink Sink, opts *ViewerOptions) *Viewer {
	v := &Viewer{
		sink:          sink,
		maxBuffered:   DefaultMaxBuffered,
		flushBytes:    DefaultFlushBytes,
		flushInterval: DefaultFlushInterval,
		writeTimeout:  DefaultWriteTimeout,
		dropTimeout:   DefaultDropTimeout,
		closeTimeout:  DefaultCloseTimeout,
		logger:        slog.Default(),
		done:          make(chan struct{}),
	}
	if opts != nil {
		v.flushInterval = max(opts.FlushInterval, 0)
		v.closeOnFinal = opts.CloseOnFinal
		if opts.MaxBuffered > 0 {
			v.maxBuffered = opts.MaxBuffered
		}
		if opts.FlushBytes > 0 {
			v.flushBytes = opts.FlushBytes
		}
		if opts.WriteTimeout != 0 {
			v.writeTimeout = opts.WriteTimeout
		}
		if opts.DropTimeout > 0 {
			v.dropTimeout = opts.DropTimeout
		}
		if opts.CloseTimeout > 0 {
			v.closeTimeout = opts.CloseTimeout
		}
		if opts.Logger != nil {
			v.logger = opts.Logger
		}
	}
	v.ctx, v.cancel = context.WithCancelCause(context.Background())
	return v
}

// Send queues messages that are not generation events (e.g. ready, turn,
// pong), in order. It never blocks. The messages must not be modified
// afterwards; the same message may be sent to many viewers. The messages of
// one Send are judged together, as one message is: they are accepted into
// an empty queue whatever their size, so queue a burst (the turns posted
// by one request, say) in one call. Send returns ErrViewerClosed if the
// viewer has stopped and ErrSlowViewer if these messages overflowed it.
func (v *Viewer) Send(msgs ...[]byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.sendLocked(msgs, time.Now())
}

func (v *Viewer) send(msg []byte, now time.Time) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.sendLocked([][]byte{msg}, now)
}

func (v *Viewer) sendLocked(msgs [][]byte, now time.Time) error {
	if v.state != stateOpen {
		return v.stoppedErrLocked()
	}
	size := 0
	for _, m := range msgs {
		v.queue = append(v.queue, item{msg: m, live: true, size: len(m)})
		size += len(m)
	}
	v.addLocked(size, true, now)
	if v.state == stateDropped {
		return ErrSlowViewer
	}
	return nil
}

// SendBacklog queues messages the client asked to be replayed (the turns
// it missed, say) like Send, except that they do not count toward
// MaxBuffered, as a backlog asked for by Subscribe does not: the caller
// bounds them. They are written without waiting for FlushInterval.
//
// A replay replaces the messages of an earlier one still queued, not yet
// handed to the sink (with no messages, it only drops those): a viewer
// holds at most one replay queued, however often a client that does not
// read asks for one, so the caller's bound on a replay bounds the viewer.
func (v *Viewer) SendBacklog(msgs ...[]byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.state != stateOpen {
		return v.stoppedErrLocked()
	}
	v.removeLocked(func(it item) bool { return it.log == nil && !it.live })
	now := time.Now()
	for _, m := range msgs {
		v.queue = append(v.queue, item{msg: m, size: len(m)})
		v.backlogs++
		v.addLocked(len(m), false, now)
	}
	return nil
}

// Done is closed once the viewer has stopped and its sink is closed:
// after Close, after a drop, after a failed write, or after its final event
// with CloseOnFinal. Err then says why.
func (v *Viewer) Done() <-chan struct{} { return v.done }

// Err returns nil while the viewer is open; then ErrSlowViewer if it was
// dropped, the wrapped write error if its sink failed, or ErrViewerClosed.
func (v *Viewer) Err() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

// Position returns the last offset of generation handed to the sink (or
// the offset the viewer joined at), while the viewer follows it.
func (v *Viewer) Position(generation string) (int64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s, ok := v.subs[generation]
	return s.pos, ok
}

func (v *Viewer) stoppedErrLocked() error {
	if v.err != nil && v.state != stateDraining {
		return v.err
	}
	return ErrViewerClosed
}

func (v *Viewer) open() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.state == stateOpen
}

// deliver queues the last event of events, a live event of l; events are
// l's after offset base. It is called with l.mu held.
func (v *Viewer) deliver(l *Log, events []Event, base int64, now time.Time) {
	i := len(events) - 1
	e := events[i]
	size := len(e.Data)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.state != stateOpen {
		return
	}
	if n := len(v.queue); n > 0 {
		// Consecutive live events of one log share one item, a window on the
		// log's own storage: fan-out allocates nothing per viewer.
		last := &v.queue[n-1]
		// The window must start in events: a log compacting its oldest
		// events (Log.moveLocked) moves its storage on.
		if last.log == l && last.live && last.events[len(last.events)-1].Offset == e.Offset-1 &&
			last.events[0].Offset-1 >= base {
			start := last.events[0].Offset - 1 - base
			last.events = events[start : i+1 : i+1]
			last.size += size
			v.addLocked(size, true, now)
			return
		}
	}
	v.queue = append(v.queue, item{log: l, events: events[i : i+1 : i+1], live: true, size: size})
	v.addLocked(size, true, now)
}

// attach positions v in l's generation at after and queues b (the events
// after it), replacing any earlier position. Called with l.mu held.
func (v *Viewer) attach(l *Log, b backlog, after int64, live bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.state != stateOpen {
		return v.stoppedErrLocked()
	}
	v.purgeLocked(l)
	if b.compacted == nil && len(b.events) == 0 && !live {
		delete(v.subs, l.generation)
		if v.closeOnFinal {
			// Positioned at or past the final event, which an earlier
			// connection saw: no final event will come to end this
			// viewer, so it ends once what is queued is written.
			v.drainLocked(CloseNormal, "generation finished")
		}
		return nil
	}
	v.setSubLocked(l, after)
	now := time.Now()
	if b.compacted != nil {
		v.queue = append(v.queue, item{log: l, compacted: b.compacted, from: b.from, to: b.to})
		v.backlogs++
		v.addLocked(0, false, now)
	}
	if len(b.events) > 0 {
		size := 0
		for _, e := range b.events {
			size += len(e.Data)
		}
		v.queue = append(v.queue, item{log: l, events: b.events, size: size})
		v.backlogs++
		v.addLocked(size, false, now)
	}
	return nil
}

// join positions v at after in l's generation unless it already follows
// it. Called with l.mu held.
func (v *Viewer) join(l *Log, after int64) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.state != stateOpen {
		return v.stoppedErrLocked()
	}
	if s, ok := v.subs[l.generation]; !ok || s.log != l {
		v.setSubLocked(l, after)
	}
	return nil
}

// detach forgets v's position in l's generation. Called with l.mu held.
func (v *Viewer) detach(l *Log) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s, ok := v.subs[l.generation]; ok && s.log == l {
		delete(v.subs, l.generation)
	}
}

func (v *Viewer) setSubLocked(l *Log, pos int64) {
	if v.subs == nil {
		v.subs = make(map[string]sub)
	}
	v.subs[l.generation] = sub{log: l, pos: pos}
}

// purgeLocked removes the queued, not yet written, events of l.
func (v *Viewer) purgeLocked(l *Log) {
	v.removeLocked(func(it item) bool { return it.log == l })
}

// removeLocked removes the queued, not yet written, items that match.
func (v *Viewer) removeLocked(match func(item) bool) {
	if !slices.ContainsFunc(v.queue, match) {
		return
	}
	v.queue = slices.DeleteFunc(v.queue, match)
	v.queued, v.live, v.backlogs = 0, 0, 0
	for _, it := range v.queue {
		v.queued += it.size
		if it.live {
			v.live += it.size
		} else {
			v.backlogs++
		}
	}
}

// addLocked accounts for size bytes just queued, drops the viewer if they
// overflow it, and makes sure the writer will run.
func (v *Viewer) addLocked(size int, live bool, now time.Time) {
	v.queued += size
	if live {
		prev := v.live
		v.live += size
		if prev > 0 && v.overflowLocked(now, size) {
			v.dropLocked()
			return
		}
	}
	v.scheduleLocked(now)
}

// overflowLocked reports whether the live bytes queued, the last message
// of size bytes included, show that the client does not keep up (see
// ViewerOptions.MaxBuffered): more than MaxBuffered behind a write under
// way for FlushInterval or longer, or, whatever the writer does, more than
// a burst may hold before that last message (a message larger than a
// burst, which a model or a client may send, passes the first time).
func (v *Viewer) overflowLocked(now time.Time, size int) bool {
	if v.live-size > MaxBurst*v.maxBuffered {
		return true
	}
	// lastFlush is when the write under way began; with no interval it
	// is not kept, and every write is old enough.
	return v.live > v.maxBuffered && v.writing && (v.flushInterval <= 0 || now.Sub(v.lastFlush) >= v.flushInterval)
}

func (v *Viewer) dropLocked() {
	v.state = stateDropped
	v.err = ErrSlowViewer
	v.discardLocked()
	// Give the write in flight, then resume_required, DropTimeout to get
	// through; then abort them so that the writer can close the sink.
	v.stopTimer = time.AfterFunc(v.dropTimeout, func() { v.cancel(ErrSlowViewer) })
	v.kickLocked()
}

func (v *Viewer) discardLocked() {
	clear(v.queue)
	v.queue = v.queue[:0]
	v.queued, v.live, v.backlogs = 0, 0, 0
}

// waitLocked returns how long the writer should wait before writing what is
// queued: until FlushInterval after the previous write began, unless enough
// is queued or a backlog waits.
func (v *Viewer) waitLocked(now time.Time) time.Duration {
	if v.flushInterval <= 0 || v.queued >= v.flushBytes || v.backlogs > 0 {
		return 0
	}
	return v.lastFlush.Add(v.flushInterval).Sub(now)
}

// scheduleLocked starts the writer, now or when the interval allows, unless
// it is already running.
func (v *Viewer) scheduleLocked(now time.Time) {
	if v.running {
		if v.timer != nil && v.waitLocked(now) <= 0 && v.timer.Stop() {
			v.timer = nil
			go v.run()
		}
		return
	}
	v.running = true
	v.wg.Add(1)
	if w := v.waitLocked(now); w > 0 {
		v.timer = time.AfterFunc(w, v.run)
		return
	}
	go v.run()
}

// kickLocked makes the writer run now, to notice a state change.
func (v *Viewer) kickLocked() {
	if !v.running {
		v.running = true
		v.wg.Add(1)
		go v.run()
		return
	}
	if v.timer != nil && v.timer.Stop() {
		v.timer = nil
		go v.run()
	}
}

// run is the writer goroutine. It holds one count of v.wg, which it
// releases when it exits or hands over to a timer that will run it again.
func (v *Viewer) run() {
	var prev []item
	for {
		v.mu.Lock()
		v.timer = nil
		v.writing = false
		if prev != nil && v.spare == nil {
			v.spare = prev[:0]
		}
		prev = nil
		switch v.state {
		case stateOpen, stateDraining:
			if len(v.queue) == 0 {
				if v.state == stateDraining {
					v.state = stateFinishing
					code, reason := v.drainCode, v.drainReason
					v.mu.Unlock()
					v.finish(code, reason)
					v.wg.Done()
					return
				}
				v.running = false
				v.trimBuffersLocked()
				v.mu.Unlock()
				v.wg.Done()
				return
			}
			var now time.Time // lastFlush only matters with an interval
			if v.flushInterval > 0 {
				now = time.Now()
			}
			if v.state == stateOpen {
				if w := v.waitLocked(now); w > 0 {
					v.timer = time.AfterFunc(w, v.run)
					v.mu.Unlock()
					return
				}
			}
			batch, final := v.takeLocked(now)
			v.writing = true
			v.mu.Unlock()
			err := v.write(batch)
			clear(batch)
			if cap(batch) <= keepBuffers {
				prev = batch
			}
			if err != nil {
				v.mu.Lock()
				v.writeFailed = true
				if v.state == stateOpen || v.state == stateDraining {
					v.state = stateFailed
					v.err = err
				}
				v.mu.Unlock()
				continue
			}
			if final && v.closeOnFinal {
				v.mu.Lock()
				if v.state == stateOpen || v.state == stateDraining {
					v.state = stateFinishing
					v.err = ErrViewerClosed
					v.discardLocked()
					v.mu.Unlock()
					v.finish(CloseNormal, "generation finished")
					v.wg.Done()
					return
				}
				v.mu.Unlock()
			}
		case stateDropped:
			v.state = stateFinishing
			var msgs [][]byte
			if !v.writeFailed {
				msgs = v.resumeMessagesLocked()
			}
			v.mu.Unlock()
			v.logger.Debug("streaming: dropping slow viewer", logKeyResumes, len(msgs))
			if len(msgs) > 0 {
				// v.ctx is cancelled at the drop deadline.
				_ = v.sink.WriteFrame(v.ctx, msgs)
			}
			v.finish(CloseResumeRequired, "resume_required")
			v.wg.Done()
			return
		case stateFailed:
			v.state = stateFinishing
			err := v.err
			v.mu.Unlock()
			v.logger.Debug("streaming: viewer write failed", logKeyErr, err)
			v.finish(CloseInternalError, "write failed")
			v.wg.Done()
			return
		default: // closing: Close closes the sink once we are gone
			v.running = false
			v.mu.Unlock()
			v.wg.Done()
			return
		}
	}
}

// takeLocked takes a batch for the sink from the queue and moves each
// generation's position to the last offset handed over. final reports
// whether the batch ends a generation.
//
// The batch is the whole queue, unless it holds compacted events: then it
// ends with the first FlushBytes or so of the first such item, which
// write rebuilds, and the rest stays queued. So a viewer never holds more
// than a batch of a backlog rebuilt, and a position only ever counts
// events that were.
func (v *Viewer) takeLocked(now time.Time) (batch []item, final bool) {
	v.lastFlush = now
	if i := slices.IndexFunc(v.queue, func(it item) bool { return it.compacted != nil }); i < 0 {
		batch = v.queue
		v.queue, v.spare = v.spare, nil
		v.queued, v.live, v.backlogs = 0, 0, 0
	} else {
		batch = append(v.spare[:0], v.queue[:i+1]...)
		v.spare = nil
		rest, chunk := &v.queue[i], &batch[i]
		chunk.to, chunk.size = rest.compacted.span(rest.from, rest.to, v.flushBytes, maxRebuilt)
		taken := i + 1
		if chunk.to < rest.to {
			rest.from = chunk.to + 1
			taken = i
		}
		for _, it := range v.queue[:taken] {
			v.queued -= it.size
			if it.live {
				v.live -= it.size
			} else {
				v.backlogs--
			}
		}
		n := copy(v.queue, v.queue[taken:])
		clear(v.queue[n:])
		v.queue = v.queue[:n]
	}
	for i := range batch {
		it := &batch[i]
		if it.log == nil {
			continue
		}
		off, fin := it.last()
		if fin {
			final = true
		}
		gen := it.log.generation
		s, ok := v.subs[gen]
		if !ok || s.log != it.log {
			continue
		}
		if fin {
			delete(v.subs, gen)
			if len(v.subs) == 0 {
				v.subs = nil // an idle viewer keeps no empty map
			}
			continue
		}
		s.pos = off
		v.subs[gen] = s
	}
	return batch, final
}

func (v *Viewer) write(batch []item) error {
	frames := v.frames[:0]
	for _, it := range batch {
		if it.log == nil {
			frames = append(frames, it.msg)
			continue
		}
		if it.compacted != nil {
			frames = it.compacted.appendFrames(frames, it.from, it.to, it.size)
			continue
		}
		for _, e := range it.events {
			frames = append(frames, []byte(e.Data))
		}
	}
	// One watchdog timer per viewer, reset for each write, instead of a
	// context.WithTimeout per write: with 1,000 viewers per event the
	// latter's allocations and stack growth were most of the fan-out cost.
	// A write that times out kills the viewer anyway, so cancelling the
	// viewer's own context is the right scope.
	if v.writeTimeout > 0 {
		if v.watchdog == nil {
			v.watchdog = time.AfterFunc(v.writeTimeout, func() { v.cancel(ErrWriteTimeout) })
		} else {
			v.watchdog.Reset(v.writeTimeout)
		}
	}
	err := v.sink.WriteFrame(v.ctx, frames)
	if v.watchdog != nil {
		v.watchdog.Stop()
	}
	if err != nil {
		if cause := context.Cause(v.ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w: %w", cause, err)
		}
		err = fmt.Errorf("write frame: %w", err)
	}
	clear(frames)
	// Kept while the writer runs, for the next batch of a backlog; trimmed
	// when it exits.
	if cap(frames) <= maxRebuilt {
		v.frames = frames[:0]
	} else {
		v.frames = nil
	}
	return err
}

// trimBuffersLocked is called by the writer goroutine as it exits.
func (v *Viewer) trimBuffersLocked() {
	if cap(v.frames) > keepBuffers {
		v.frames = nil
	}
	if cap(v.queue) > keepBuffers {
		v.queue = nil
	}
	if cap(v.spare) > keepBuffers {
		v.spare = nil
	}
}

// resumeMessagesLocked returns a resume_required message for each
// generation the viewer follows, in a stable order.
func (v *Viewer) resumeMessagesLocked() [][]byte {
	gens := make([]string, 0, len(v.subs))
	for g := range v.subs {
		gens = append(gens, g)
	}
	slices.Sort(gens)
	msgs := make([][]byte, len(gens))
	for i, g := range gens {
		msgs[i] = EncodeResumeRequired(g, v.subs[g].pos)
	}
	return msgs
}

// finish closes the sink and stops the viewer. It is called once, by
// whoever moved the state to stateFinishing or stateClosing, with no
// writer running.
func (v *Viewer) finish(code int, reason string) error {
	err := v.sink.Close(code, reason)
	v.cancel(ErrViewerClosed)
	v.mu.Lock()
	v.state = stateClosed
	v.closeErr = err
	if v.stopTimer != nil {
		v.stopTimer.Stop()
	}
	logs := make([]*Log, 0, len(v.subs))
	for _, s := range v.subs {
		logs = append(logs, s.log)
	}
	v.subs = nil
	v.discardLocked()
	v.queue, v.spare, v.frames = nil, nil, nil
	if v.watchdog != nil {
		v.watchdog.Stop()
	}
	v.mu.Unlock()
	for _, l := range logs {
		l.Unsubscribe(v)
	}
	close(v.done)
	return err
}

// Close stops the viewer at once: queued frames are discarded, a write in
// progress is cancelled, the writer goroutine is waited for and the sink is
// closed with CloseGoingAway. It returns the sink's Close error, if it was
// the call that closed it. Close is idempotent.
func (v *Viewer) Close() error {
	return v.close(CloseGoingAway, "going away")
}

func (v *Viewer) close(code int, reason string) error {
	v.mu.Lock()
	switch v.state {
	case stateOpen, stateDraining:
		v.state = stateClosing
		if v.err == nil {
			v.err = ErrViewerClosed
		}
		v.discardLocked()
		v.cancel(ErrViewerClosed)
		if v.timer != nil && v.timer.Stop() {
			v.timer = nil
			v.running = false
			v.wg.Done()
		}
		v.mu.Unlock()
		v.wg.Wait()
		return v.finish(code, reason)
	default:
		// Someone else closes the sink: abort what it still writes and wait.
		v.cancel(ErrViewerClosed)
		v.mu.Unlock()
		<-v.done
		v.wg.Wait()
		return nil
	}
}

// CloseWith writes what is already queued, for at most
// ViewerOptions.CloseTimeout, then closes the sink with code and reason
// and waits for the writer goroutine. Nothing can be queued meanwhile. Use
// it to send a last message (e.g. an error) before closing; use Close to
// stop at once.
func (v *Viewer) CloseWith(code int, reason string) error {
	v.mu.Lock()
	if v.state != stateOpen {
		v.mu.Unlock()
		return v.close(code, reason)
	}
	v.err = ErrViewerClosed
	if !v.running {
		v.state = stateClosing
		v.mu.Unlock()
		return v.finish(code, reason)
	}
	v.drainLocked(code, reason)
	v.mu.Unlock()
	<-v.done
	v.wg.Wait()
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.closeErr
}

// drainLocked has the writer write what is queued, then close the sink
// with code and reason (within the close timeout). v is open.
func (v *Viewer) drainLocked(code int, reason string) {
	v.err = ErrViewerClosed
	v.state = stateDraining
	v.drainCode, v.drainReason = code, reason
	v.stopTimer = time.AfterFunc(v.closeTimeout, func() { v.cancel(ErrViewerClosed) })
	v.kickLocked()
}

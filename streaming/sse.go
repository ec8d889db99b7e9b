package streaming

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"sessiond/streaming/jsonscan"
)

// DefaultHeartbeat is the idle time after which an SSE stream gets a
// comment, so that proxies do not time it out and dead clients are found.
const DefaultHeartbeat = 15 * time.Second

// SSEOptions configures an SSE sink. A nil *SSEOptions means all defaults.
type SSEOptions struct {
	// Heartbeat is how long the stream may stay silent before a ": ping"
	// comment is written. Zero means DefaultHeartbeat (15 s); negative
	// disables heartbeats.
	Heartbeat time.Duration

	// OnBroken, if not nil, is called once, from the heartbeat's
	// goroutine, when a heartbeat cannot be written (within a heartbeat
	// period): the client stopped reading, or the connection is gone
	// without the server seeing it (on HTTP/1.1 a request's context ends
	// only when a read fails). Nothing else would notice while no event
	// is written, so the handler ends the stream there, typically by
	// cancelling the context it waits on. It must not block. From then
	// on WriteFrame fails at once.
	OnBroken func(err error)
}

// SSE is a Sink writing Server-Sent Events to an HTTP response:
//
//	event: <type>
//	id: <offset>
//	data: <json>
//
// with the id line only for generation events (those with an offset), so a
// client's Last-Event-ID is always the offset to resume after. Each
// WriteFrame is written and flushed once.
//
// An SSE is used by one viewer's writer goroutine; its heartbeat timer is
// its own and stops in Close. The HTTP handler must not return before Close
// has returned (the response writer is not usable after that), and must not
// write to the response itself meanwhile.
type SSE struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	heartbeat time.Duration

	// wsem serialises writes to w (frames and heartbeats): a buffered
	// channel of one, so that a frame waiting for a heartbeat's write
	// gives up when its ctx ends.
	wsem   chan struct{}
	buf    []byte
	pieces []ssePiece // of the WriteFrame under way

	onBroken func(error)

	mu        sync.Mutex
	closed    bool
	broken    error // a heartbeat's write failed: the stream is unusable
	lastWrite time.Time
	timer     *time.Timer
	beatStop  context.CancelFunc // ends the heartbeat's write under way
	wg        sync.WaitGroup     // 1 while a heartbeat is scheduled or running
}

// NewSSE starts an event stream on w: it sets the SSE headers, writes the
// 200 status and flushes it. It returns ErrNoFlusher (having written
// nothing) if w cannot flush.
func NewSSE(w http.ResponseWriter, opts *SSEOptions) (*SSE, error) {
	if !canFlush(w) {
		return nil, fmt.Errorf("new sse: %w", ErrNoFlusher)
	}
	s := &SSE{w: w, rc: http.NewResponseController(w), heartbeat: DefaultHeartbeat, wsem: make(chan struct{}, 1)}
	if opts != nil && opts.Heartbeat != 0 {
		s.heartbeat = opts.Heartbeat
	}
	if opts != nil {
		s.onBroken = opts.OnBroken
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if err := s.rc.Flush(); err != nil {
		return nil, fmt.Errorf("new sse: flush: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastWrite = time.Now()
	if s.heartbeat > 0 {
		s.wg.Add(1)
		s.timer = time.AfterFunc(s.heartbeat, s.beat)
	}
	return s, nil
}

// canFlush reports whether w, or a writer it wraps (the Unwrap convention
// of http.ResponseController), is an http.Flusher.
func canFlush(w http.ResponseWriter) bool {
	for {
		if _, ok := w.(http.Flusher); ok {
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}

// WriteFrame writes frames as SSE events and flushes once. A deadline or
// cancellation of ctx becomes a write deadline on the connection. After a
// heartbeat failed to be written (see SSEOptions.OnBroken) it fails at
// once.
func (s *SSE) WriteFrame(ctx context.Context, frames [][]byte) error {
	s.mu.Lock()
	closed, broken := s.closed, s.broken
	s.mu.Unlock()
	if closed {
		return ErrSinkClosed
	}
	if broken != nil {
		return fmt.Errorf("write sse: %w", broken)
	}
	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("write sse: %w", context.Cause(ctx))
	}
	defer func() { <-s.wsem }()
	// Frames are copied into buf as SSE, but a large one with no line
	// break goes to the connection as it is, between its head and its
	// end: a 32 MiB turn written to many viewers is not copied for each.
	buf := s.buf[:0]
	s.pieces = s.pieces[:0]
	for _, f := range frames {
		if len(f) < sseDirectBytes || bytes.ContainsAny(f, "\r\n") {
			buf = AppendSSE(buf, f)
			continue
		}
		buf = append(appendSSEHead(buf, f), "data: "...)
		s.pieces = append(s.pieces, ssePiece{to: len(buf)}, ssePiece{frame: f})
		buf = append(buf, "\n\n"...)
	}
	var err error
	if len(s.pieces) == 0 {
		err = s.writeLocked(ctx, buf)
	} else {
		err = s.writePiecesLocked(ctx, buf)
	}
	clear(s.pieces) // no frame stays referenced
	if cap(buf) <= 64<<10 {
		s.buf = buf[:0]
	} else {
		s.buf = nil
	}
	s.mu.Lock()
	s.lastWrite = time.Now()
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("write sse: %w", err)
	}
	return nil
}

// sseDirectBytes is the size from which a frame with no line break is
// written as it is rather than copied (see WriteFrame).
const sseDirectBytes = 64 << 10

// ssePiece is a part of one WriteFrame: a frame written as it is, or the
// end of what of buf goes before the next one.
type ssePiece struct {
	to    int
	frame []byte
}

// writePiecesLocked writes buf with the frames of s.pieces in their places
// and flushes once.
func (s *SSE) writePiecesLocked(ctx context.Context, buf []byte) error {
	var parts [][]byte
	at := 0
	for _, p := range s.pieces {
		if p.frame != nil {
			parts = append(parts, p.frame)
			continue
		}
		parts = append(parts, buf[at:p.to])
		at = p.to
	}
	if at < len(buf) {
		parts = append(parts, buf[at:])
	}
	return s.writeLocked(ctx, parts...)
}

func (s *SSE) writeLocked(ctx context.Context, bs ...[]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// Deadlines are best effort: a writer without them (e.g. a recorder)
	// just cannot be interrupted.
	dl, hasDeadline := ctx.Deadline()
	if hasDeadline {
		_ = s.rc.SetWriteDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() {
		_ = s.rc.SetWriteDeadline(time.Unix(1, 0))
	})
	var err error
	for _, b := range bs {
		if _, err = s.w.Write(b); err != nil {
			break
		}
	}
	if err == nil {
		err = s.rc.Flush()
	}
	if stop() && hasDeadline {
		_ = s.rc.SetWriteDeadline(time.Time{})
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", context.Cause(ctx), err)
	}
	return err
}

// beat writes a heartbeat if the stream has been idle for a whole period,
// and schedules the next check. A heartbeat that cannot be written marks
// the stream broken and is reported to OnBroken (unless Close came
// meanwhile: the failure may be Close ending the write).
func (s *SSE) beat() {
	defer s.wg.Done()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	idle := time.Since(s.lastWrite)
	s.mu.Unlock()
	next := s.heartbeat - idle
	var err error
	if next <= 0 {
		next = s.heartbeat
		ctx, cancel := context.WithTimeout(context.Background(), s.heartbeat)
		s.mu.Lock()
		if s.closed { // Close came since the check above, and found no write to end
			s.mu.Unlock()
			cancel()
			return
		}
		s.beatStop = cancel // Close ends a write stuck on a client that stopped reading
		s.mu.Unlock()
		select {
		case s.wsem <- struct{}{}:
			err = s.writeLocked(ctx, []byte(": ping\n\n"))
			<-s.wsem
		case <-ctx.Done():
			// A frame's write held the stream for the whole period: the
			// viewer's write timeout judges the client by that write.
		}
		s.mu.Lock()
		s.beatStop = nil
		s.mu.Unlock()
		cancel()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if err == nil {
		s.wg.Add(1)
		s.timer = time.AfterFunc(next, s.beat)
		s.mu.Unlock()
		return
	}
	broken := fmt.Errorf("heartbeat: %w", err)
	s.broken = broken
	s.mu.Unlock()
	if s.onBroken != nil {
		s.onBroken(broken)
	}
}

// Close stops the heartbeats and waits for one in progress. The code and
// reason are ignored: SSE has no close frame; the handler ends the
// response by returning.
func (s *SSE) Close(code int, reason string) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.timer != nil && s.timer.Stop() {
		s.wg.Done()
	}
	if s.beatStop != nil {
		s.beatStop()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// AppendSSE appends frame, one JSON message, to b as one SSE event: an
// "event:" line with its type, an "id:" line with its offset if it has one,
// and its data, split on line breaks so that no line of the JSON can end
// the event early.
func AppendSSE(b []byte, frame []byte) []byte {
	b = appendSSEHead(b, frame)
	for {
		line, rest, more := bytes.Cut(frame, []byte{'\n'})
		b = append(b, "data: "...)
		// A raw CR can only be whitespace between JSON tokens (inside
		// strings it is escaped), so dropping it is safe; SSE would read it
		// as a line break.
		for len(line) > 0 {
			i := bytes.IndexByte(line, '\r')
			if i < 0 {
				b = append(b, line...)
				break
			}
			b = append(b, line[:i]...)
			line = line[i+1:]
		}
		b = append(b, '\n')
		if !more {
			break
		}
		frame = rest
	}
	return append(b, '\n')
}

// appendSSEHead appends the "event:" and "id:" lines of frame (see
// AppendSSE).
func appendSSEHead(b []byte, frame []byte) []byte {
	typ, off, hasOff := frameMeta(frame)
	if typ != "" && !strings.ContainsAny(typ, "\r\n") {
		b = append(b, "event: "...)
		b = append(b, typ...)
		b = append(b, '\n')
	}
	if hasOff {
		b = append(b, "id: "...)
		b = strconv.AppendInt(b, off, 10)
		b = append(b, '\n')
	}
	return b
}

// frameMeta returns the "type" and "offset" of a JSON message. Events built
// by this package start with {"type":…,"generation":…,"offset":…, which is
// read without decoding; anything else is decoded.
func frameMeta(b []byte) (typ string, off int64, hasOff bool) {
	if typ, off, ok := fastMeta(b); ok {
		return typ, off, true
	}
	// One pass over the message, decoding only the two members: a turn
	// message may be 32 MiB, written to every viewer.
	var rawType, rawOffset []byte
	if err := jsonscan.Object(b, func(k string, v []byte) error {
		switch k {
		case "type":
			rawType = v
		case "offset":
			rawOffset = v
		}
		return nil
	}); err != nil && !errors.Is(err, jsonscan.ErrInvalidUTF8) {
		// Invalid UTF-8 is let by: a turn stored before requests were
		// held to UTF-8 keeps its event name (its "type" comes first,
		// before the content the scan stops at).
		return "", 0, false
	}
	if rawType != nil && json.Unmarshal(rawType, &typ) != nil {
		return "", 0, false
	}
	if len(rawOffset) > 0 {
		if n, err := strconv.ParseInt(string(rawOffset), 10, 64); err == nil && n >= 0 {
			return typ, n, true
		}
	}
	return typ, 0, false
}

func fastMeta(b []byte) (typ string, off int64, ok bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{"type":"`))
	if !ok {
		return "", 0, false
	}
	t, rest, ok := cutString(rest)
	if !ok {
		return "", 0, false
	}
	switch string(t) { // no allocation for the known types
	case TypeDelta:
		typ = TypeDelta
	case TypeDone:
		typ = TypeDone
	case TypeError:
		typ = TypeError
	default:
		return "", 0, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"generation":"`)); !ok {
		return "", 0, false
	}
	if _, rest, ok = cutString(rest); !ok {
		return "", 0, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"offset":`)); !ok {
		return "", 0, false
	}
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		if n == 18 { // more than any offset; let the decoder judge
			return "", 0, false
		}
		off = off*10 + int64(rest[n]-'0')
		n++
	}
	if n == 0 || n == len(rest) || (rest[n] != ',' && rest[n] != '}') {
		return "", 0, false
	}
	return typ, off, true
}

// cutString cuts a JSON string body without escapes up to its closing quote.
func cutString(b []byte) (s, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '"')
	if i < 0 || bytes.IndexByte(b[:i], '\\') >= 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

// ParseLastEventID parses the Last-Event-ID header of a resuming SSE
// client: the offset it has seen. An empty header means 0 (from the
// start). Anything but a non-negative decimal integer is ErrBadLastEventID.
func ParseLastEventID(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("parse %q: %w", s, ErrBadLastEventID)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %q: %w", s, ErrBadLastEventID)
	}
	return n, nil
}

var _ Sink = (*SSE)(nil)

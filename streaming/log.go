package streaming

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"sessiond/streaming/jsonenc"
)

// DefaultRetention is how long a log keeps its events after it ends, so
// that viewers can still resume by offset (API.md promises at least 10
// minutes).
const DefaultRetention = 10 * time.Minute

// LogOptions configures a Log. A nil *LogOptions means all defaults.
type LogOptions struct {
	// Retention is how long the events stay resumable after the done or
	// error event. Zero means DefaultRetention; negative keeps them until
	// Release. Retention costs memory: the generation's text (as its
	// messages escape it), 4 bytes per delta and its done or error event;
	// the encoded messages themselves are dropped when it ends (and, but
	// for the newest ones, while it runs).
	Retention time.Duration

	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Log is the chunk log of one generation: its events with offsets 1, 2, 3 …
// with no gaps, ending with one done or error event.
//
// A Log has one producer, which calls Append any number of times and then
// Finish or Fail once; they must not be called concurrently with each other.
// Everything else (Events, Subscribe, Unsubscribe, Release, …) is safe for
// concurrent use, with each other and with the producer.
//
// Append never blocks on viewers: it hands each subscribed viewer the event
// without waiting (see Viewer), so a slow viewer costs the producer nothing
// but one short lock per viewer.
type Log struct {
	generation string
	retention  time.Duration
	logger     *slog.Logger
	onRelease  func(*Log) // set by Hub before the log is published

	mu sync.Mutex
	// The events after offset base: events[i].Offset == base+i+1, never
	// modified once appended. Events up to base are kept compacted in c
	// (see moveLocked). A running log keeps its last runningKeep events or
	// more as they are; an ended one keeps only final (compacted, events
	// nil).
	events    []Event
	base      int64
	n         int64 // the offset of the last event
	c         compactedEvents
	final     Event
	compacted bool
	ended     bool
	released  bool
	subs      []*Viewer // live subscribers, in subscription order
	subIdx    map[*Viewer]int
	expiry    *time.Timer
}

// NewLog returns an empty, running log for the generation with the given
// id (e.g. "g_…").
func NewLog(generation string, opts *LogOptions) *Log {
	if opts == nil {
		opts = &LogOptions{}
	}
	l := &Log{
		generation: generation,
		retention:  opts.Retention,
		logger:     opts.Logger,
	}
	if l.retention == 0 {
		l.retention = DefaultRetention
	}
	if l.logger == nil {
		l.logger = slog.Default()
	}
	return l
}

// Generation returns the id of the log's generation.
func (l *Log) Generation() string { return l.generation }

// Append appends a delta event with the next offset, hands it to every
// subscribed viewer and returns it. It returns ErrLogEnded after Finish or
// Fail, and ErrReleased after Release.
func (l *Log) Append(d Delta) (Event, error) {
	return l.append(TypeDelta, func(off int64) ([]byte, error) {
		return EncodeDelta(l.generation, off, d)
	})
}

// AppendText is Append(Delta{Text: text}).
func (l *Log) AppendText(text string) (Event, error) {
	return l.Append(Delta{Text: text})
}

// Finish appends the done event, with the offset after the last delta, and
// ends the log: it stays resumable for its retention, then is released.
func (l *Log) Finish(d Done) (Event, error) {
	return l.append(TypeDone, func(off int64) ([]byte, error) {
		return EncodeDone(l.generation, off, d)
	})
}

// Fail appends an error event with the given error code and human message,
// and ends the log like Finish.
func (l *Log) Fail(code, message string) (Event, error) {
	return l.append(TypeError, func(off int64) ([]byte, error) {
		return EncodeError(l.generation, off, code, message)
	})
}

func (l *Log) append(typ string, encode func(off int64) ([]byte, error)) (Event, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return Event{}, fmt.Errorf("append %s to %s: %w", typ, l.generation, ErrReleased)
	}
	if l.ended {
		return Event{}, fmt.Errorf("append %s to %s: %w", typ, l.generation, ErrLogEnded)
	}
	off := l.n + 1
	data, err := encode(off)
	if err != nil {
		return Event{}, fmt.Errorf("append %s to %s: %w", typ, l.generation, err)
	}
	e := Event{Generation: l.generation, Offset: off, Type: typ, Data: data}
	l.events = append(l.events, e)
	l.n = off
	// Delivering under l.mu is what makes Subscribe exact: a subscriber is
	// either registered before this event (and gets it here) or after (and
	// finds it in the backlog), never both, never neither.
	for _, v := range l.subs {
		v.deliver(l, l.events, l.base, now)
	}
	if e.Final() {
		l.ended = true
		l.subs, l.subIdx = nil, nil
		l.final = e
		if l.moveLocked(len(l.events) - 1) {
			l.c.text, l.c.ends = slices.Clip(l.c.text), slices.Clip(l.c.ends)
			l.base, l.events, l.compacted = l.n-1, nil, true
		}
		if l.retention > 0 {
			l.expiry = time.AfterFunc(l.retention, l.Release)
		}
	} else if k := len(l.events) - runningKeep; k >= runningKeep && l.moveLocked(k) {
		// Viewers' queues keep windows on the old array; live delivery
		// goes on in the new one.
		l.events = append(make([]Event, 0, 2*runningKeep), l.events[k:]...)
		l.base += int64(k)
	}
	return e, nil
}

// Events returns a copy of the events after offset after (after+1 to the
// last), sharing their Data. It returns ErrReleased once the events are no
// longer retained and ErrOffsetOutOfRange if after is negative or beyond
// the last offset.
func (l *Log) Events(after int64) ([]Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkAfterLocked(after); err != nil {
		return nil, fmt.Errorf("events of %s: %w", l.generation, err)
	}
	out := make([]Event, 0, l.n-after)
	if after < l.base {
		out = l.c.appendEvents(out, l.generation, after+1, l.base)
	}
	return append(out, l.encodedLocked(max(after, l.base))...), nil
}

// runningKeep is how many of its newest events a running log keeps
// encoded, at least: live viewers are handed those; older ones are
// compacted (moveLocked) in batches of runningKeep. A variable for tests.
var runningKeep = 1024

// moveLocked compacts the first k events (all deltas) into l.c and reports
// whether it did: a retained log then costs a few bytes per delta instead
// of an encoded message each (~180 bytes for a one-word token). A text
// delta's message is a prefix fixed by the generation and the offset, the
// text as JSON escapes it, and `"}`: the escaped text is kept and the
// message rebuilt byte for byte when it is read or a viewer resumes (see
// compactedEvents). Messages of another shape (tool-call parts) are kept whole.
// Viewers already holding events keep them. The caller drops the events
// moved.
func (l *Log) moveLocked(k int) bool {
	if k <= 0 {
		return false
	}
	size := 0
	for _, e := range l.events[:k] {
		size += len(e.Data)
	}
	c := &l.c
	if len(c.text)+size > math.MaxUint32 {
		return false
	}
	if c.head == nil {
		c.head = deltaHead(nil, l.generation)
	}
	for _, e := range l.events[:k] {
		if frag, ok := deltaText(e.Data, c.head, e.Offset); ok {
			c.text = append(c.text, frag...)
		} else {
			c.wholeOffs = append(c.wholeOffs, e.Offset)
			c.wholeData = append(c.wholeData, e.Data)
		}
		c.ends = append(c.ends, uint32(len(c.text)))
	}
	return true
}

// compactedEvents holds the compacted events of a log, offsets 1 to
// len(ends), all deltas. A text delta's escaped text is
// text[ends[off-2]:ends[off-1]] (from 0 for offset 1), its message head,
// the offset, deltaTextKey, the text and `"}`; the messages of other deltas
// are kept whole, wholeData[i] for offset wholeOffs[i] (ascending).
//
// The log only ever appends to these slices and never modifies what it has
// appended (head is set once, before anything is compacted). So a copy of
// a log's compactedEvents, taken under its lock, is a snapshot that stays
// valid, and may be read without the lock, whatever the log does next:
// compacting more appends beyond the copy's lengths, and Release only
// drops the log's own references. This is how a viewer resuming from an
// old offset rebuilds its backlog a batch at a time (Viewer.takeLocked)
// instead of holding a copy of all of it.
type compactedEvents struct {
	head      []byte // deltaHead of the generation
	text      []byte
	ends      []uint32
	wholeOffs []int64
	wholeData [][]byte
}

// wholeFrom returns the index in wholeOffs of the first whole message at
// or after offset off.
func (c *compactedEvents) wholeFrom(off int64) int {
	i, _ := slices.BinarySearch(c.wholeOffs, off)
	return i
}

// frag returns the escaped text of the text delta at offset off.
func (c *compactedEvents) frag(off int64) []byte {
	start := uint32(0)
	if off > 1 {
		start = c.ends[off-2]
	}
	return c.text[start:c.ends[off-1]]
}

// textSize returns the length of the message of the text delta at offset
// off.
func (c *compactedEvents) textSize(off int64) int {
	var num [20]byte
	return len(c.head) + len(strconv.AppendInt(num[:0], off, 10)) + len(deltaTextKey) + len(c.frag(off)) + len(`"}`)
}

// appendText appends the message of the text delta at offset off to b.
func (c *compactedEvents) appendText(b []byte, off int64) []byte {
	b = append(b, c.head...)
	b = strconv.AppendInt(b, off, 10)
	b = append(b, deltaTextKey...)
	b = append(b, c.frag(off)...)
	return append(b, `"}`...)
}

// span returns the last offset of the messages from offset from on, to at
// most to, that come to at most maxBytes (one at least, maxEvents at most),
// and the bytes of those rebuilt from their text (whole ones are shared,
// not rebuilt).
func (c *compactedEvents) span(from, to int64, maxBytes, maxEvents int) (last int64, textBytes int) {
	j := c.wholeFrom(from)
	total := 0
	last = from - 1
	for off := from; off <= to && off-from < int64(maxEvents); off++ {
		size, whole := 0, j < len(c.wholeOffs) && c.wholeOffs[j] == off
		if whole {
			size = len(c.wholeData[j])
		} else {
			size = c.textSize(off)
		}
		if off > from && total+size > maxBytes {
			break
		}
		if whole {
			j++
		} else {
			textBytes += size
		}
		total += size
		last = off
	}
	return last, textBytes
}

// appendFrames appends the messages of offsets from to to to frames: whole
// ones as they are, the others rebuilt into one new buffer of textBytes
// bytes (see span). The buffer is not reused: a sink may keep the frames.
func (c *compactedEvents) appendFrames(frames [][]byte, from, to int64, textBytes int) [][]byte {
	buf := make([]byte, 0, textBytes)
	frames = slices.Grow(frames, int(to-from+1))
	j := c.wholeFrom(from)
	for off := from; off <= to; off++ {
		if j < len(c.wholeOffs) && c.wholeOffs[j] == off {
			frames = append(frames, c.wholeData[j])
			j++
			continue
		}
		start := len(buf)
		buf = c.appendText(buf, off)
		frames = append(frames, buf[start:len(buf):len(buf)])
	}
	return frames
}

// appendEvents appends the events of generation at offsets from to to to
// out, each text delta's message rebuilt in its own buffer.
func (c *compactedEvents) appendEvents(out []Event, generation string, from, to int64) []Event {
	j := c.wholeFrom(from)
	for off := from; off <= to; off++ {
		var data []byte
		if j < len(c.wholeOffs) && c.wholeOffs[j] == off {
			data = c.wholeData[j]
			j++
		} else {
			data = c.appendText(make([]byte, 0, c.textSize(off)), off)
		}
		out = append(out, Event{Generation: generation, Offset: off, Type: TypeDelta, Data: data})
	}
	return out
}

// deltaHead appends the start of a text delta's message of generation, up
// to its offset.
func deltaHead(b []byte, generation string) []byte {
	b = append(b, `{"type":"delta","generation":`...)
	b = jsonenc.String(b, generation)
	return append(b, `,"offset":`...)
}

const deltaTextKey = `,"text":"`

// deltaText returns the escaped text of data if it is the message of a
// text delta at offset off that starts with head (see EncodeDelta).
func deltaText(data, head []byte, off int64) ([]byte, bool) {
	if !bytes.HasPrefix(data, head) {
		return nil, false
	}
	rest := data[len(head):]
	var num [20]byte
	n := strconv.AppendInt(num[:0], off, 10)
	if !bytes.HasPrefix(rest, n) || !bytes.HasPrefix(rest[len(n):], []byte(deltaTextKey)) {
		return nil, false
	}
	rest = rest[len(n)+len(deltaTextKey):]
	if !bytes.HasSuffix(rest, []byte(`"}`)) {
		return nil, false
	}
	return rest[:len(rest)-2], true
}

// encodedLocked returns the events after offset from, which must be at
// least base (none of them compacted): a window of the log's own storage,
// or a new slice holding the final event of a compacted log.
func (l *Log) encodedLocked(from int64) []Event {
	if l.compacted {
		if from < l.n {
			return []Event{l.final}
		}
		return nil
	}
	return l.events[from-l.base : l.n-l.base : l.n-l.base]
}

func (l *Log) checkAfterLocked(after int64) error {
	if l.released {
		return ErrReleased
	}
	if last := l.n; after < 0 || after > last {
		return fmt.Errorf("after %d, last offset %d: %w", after, last, ErrOffsetOutOfRange)
	}
	return nil
}

// Last returns the offset of the last event (0 if none yet).
func (l *Log) Last() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// Ended reports whether the done or error event has been appended.
func (l *Log) Ended() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ended
}

// Retained reports whether the events can still be read and subscribed to:
// true until Release, or until the retention after the end has elapsed.
func (l *Log) Retained() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.released
}

// Subscribers returns the number of viewers receiving the log's live events.
func (l *Log) Subscribers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.subs)
}

// Release drops the events and the subscribers. Viewers keep what was
// already queued to them; later calls on the log return ErrReleased.
// Release is idempotent and is called by the retention timer.
func (l *Log) Release() {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return
	}
	l.released = true
	l.logger.Debug("streaming: generation log released", logKeyGeneration, l.generation, logKeyEvents, l.n)
	l.events = nil
	l.c, l.final = compactedEvents{}, Event{}
	l.subs, l.subIdx = nil, nil
	if l.expiry != nil {
		l.expiry.Stop()
	}
	hook := l.onRelease
	l.mu.Unlock()
	if hook != nil {
		hook(l)
	}
}

// Subscribe gives v the events after offset after (the backlog), then every
// live event until the log ends, each exactly once and in order whatever
// the race with Append and Finish: the backlog is taken and v registered
// under the one lock that Append holds while delivering.
//
// The backlog is not copied: v shares the encoded events, and the
// compacted ones (all but the newest thousand or so of a long generation,
// all of an ended one) are rebuilt a batch at a time as v writes them, so
// a resuming viewer holds about ViewerOptions.FlushBytes of them, however
// long the backlog and however slow its client.
//
// If v was already subscribed to this generation, Subscribe restarts it:
// events of the generation queued to v but not yet handed to its sink are
// discarded and delivery resumes at after+1. (Events already handed to the
// sink are not recalled.)
//
// Subscribing to an ended log only delivers the backlog. Subscribe returns
// ErrReleased, ErrOffsetOutOfRange, or ErrViewerClosed if v has stopped.
func (l *Log) Subscribe(v *Viewer, after int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkAfterLocked(after); err != nil {
		return fmt.Errorf("subscribe to %s: %w", l.generation, err)
	}
	b := backlog{events: l.encodedLocked(max(after, l.base))}
	if after < l.base {
		c := l.c
		b.compacted, b.from, b.to = &c, after+1, l.base
	}
	live := !l.ended
	if err := v.attach(l, b, after, live); err != nil {
		return fmt.Errorf("subscribe to %s: %w", l.generation, err)
	}
	if live {
		l.addSubLocked(v)
	}
	return nil
}

// subscribeLive registers v for the live events from now on, without
// backlog, unless it is already subscribed: this is how a hub's viewers
// follow every running generation.
func (l *Log) subscribeLive(v *Viewer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released || l.ended {
		return
	}
	if _, ok := l.subIdx[v]; ok {
		return
	}
	if v.join(l, l.n) != nil {
		return
	}
	l.addSubLocked(v)
}

func (l *Log) addSubLocked(v *Viewer) {
	if _, ok := l.subIdx[v]; ok {
		return
	}
	if l.subIdx == nil {
		l.subIdx = make(map[*Viewer]int)
	}
	l.subIdx[v] = len(l.subs)
	l.subs = append(l.subs, v)
}

// Unsubscribe stops the live events to v. Events already queued to v are
// still written.
func (l *Log) Unsubscribe(v *Viewer) {
	l.mu.Lock()
	i, ok := l.subIdx[v]
	if ok {
		last := len(l.subs) - 1
		l.subs[i] = l.subs[last]
		l.subIdx[l.subs[i]] = i
		l.subs[last] = nil
		l.subs = l.subs[:last]
		delete(l.subIdx, v)
	}
	// Under l.mu, so that a concurrent Subscribe cannot slip in between.
	v.detach(l)
	l.mu.Unlock()
}

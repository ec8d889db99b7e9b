package openai

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

const (
	// maxLineBytes bounds one line of an event stream: go-openai reads each
	// line whole into memory (and copies it twice to decode it). A chunk
	// larger than the largest turn a session keeps (32 MiB) has no use.
	maxLineBytes = 32 << 20
	// maxOtherBytes bounds the lines of a stream that are neither data
	// nor event-stream fields, in all: go-openai keeps every one of them
	// to the end of the stream, to decode an error from.
	maxOtherBytes = maxErrorRead
	// sseReadBuffer is the filter's read buffer, and the length of a
	// line's segment handed on at a time.
	sseReadBuffer = 64 << 10
)

// errStreamLine is the error of a stream that broke the filter's bounds.
var errStreamLine = errors.New("event stream")

var (
	nl         = []byte{'\n'}
	bom        = []byte("\xEF\xBB\xBF")
	dataField  = []byte("data:")
	doneMarker = []byte("[DONE]")
	errorStart = []byte(`{"error":`) // as go-openai recognises an error event
)

// sseFilter reads a 200 answer's event stream for go-openai, passing on
// only the lines it uses and bounding what the others may cost:
//   - comments (":" lines, an upstream's keep-alive), the "event:",
//     "id:" and "retry:" fields and fields of other names (isFieldLine)
//     are dropped: go-openai would keep each of
//     them until the stream ends, in the buffer it decodes an error from
//     (where they also spoil a JSON error sent after them), and count
//     them towards its limit of 300 empty lines between two chunks;
//   - a blank line passes as one "\n" when a line passed since the last
//     one: it ends an event, and go-openai returns an error event's error
//     at the next line (so a line dropped right after an error event
//     passes as "\n" too). The blank lines of events that were all
//     dropped (keep-alives) are dropped with them, as go-openai would
//     count them towards its limit;
//   - "data:" lines pass, at most maxLineBytes each;
//   - any other line passes (a server answering 200 with a JSON error),
//     at most maxOtherBytes of them in all;
//   - a "data: [DONE]" line sets *done;
//   - a last line without a newline that is an error (any other line,
//     or an error event) gets one, as go-openai drops a line without one:
//     a JSON error body that does not end with a newline was lost. A
//     data line stays as it is, dropped: the event stream format drops
//     an event the stream ends in, and it may be a chunk cut short;
//   - a byte order mark at the start of the stream is dropped, as the
//     event stream format says (left in, the first line was not known
//     for a data line, and its chunk was lost);
//   - every line ending, "\r\n", "\n" or a lone "\r" (the event stream
//     format allows all three), is read as "\n" (see crlfReader):
//     go-openai knows only "\n", and read a stream with lone "\r"
//     endings as one line.
//
// A line is classified by its first segment (sseReadBuffer bytes): one
// that starts with 64 KiB of white space is taken as blank.
//
// A stream that breaks a bound ends with an error wrapping errStreamLine,
// once the filter has read past the bound: a line is handed on in segments
// of up to sseReadBuffer bytes, each one whole or at a newline.
// Like any body, it is read by one goroutine at a time (go-openai's Recv).
type sseFilter struct {
	io.Closer
	br   *bufio.Reader
	done *bool

	started    bool   // the start of the stream was read (see bom)
	pend       []byte // what is left to hand on of the current segment
	inLine     bool   // the current line's kind is known: keep, data
	keep       bool   // the current line is passed on
	data       bool   // the current line is a "data:" line
	blank      bool   // the current line is blank (white space)
	errLine    bool   // the current line is an error event (`data: {"error":`)
	afterError bool   // the line before the current one was
	passed     bool   // a line was passed since the last blank line passed
	lineLen    int    // bytes of the current line so far
	other      int    // bytes of other lines passed on
	err        error  // returned once pend is handed on
}

func newSSEFilter(body io.ReadCloser, done *bool) *sseFilter {
	return &sseFilter{Closer: body, br: bufio.NewReaderSize(&crlfReader{r: body}, sseReadBuffer), done: done}
}

// crlfReader turns every line ending of an event stream, "\r\n", "\n"
// or a lone "\r", into "\n". A "\r" is turned as soon as it is read, not
// held back to see what follows (a stream that pauses after a line must
// not keep it waiting for the next byte): the "\n" right after it, in the
// same read or the next, is dropped, so a "\r\n" split across two reads
// is one line ending.
type crlfReader struct {
	r       io.Reader
	afterCR bool // the last byte read was a "\r"
}

// Read implements io.Reader.
func (c *crlfReader) Read(p []byte) (int, error) {
	for {
		n, err := c.r.Read(p)
		w := 0
		for _, b := range p[:n] {
			afterCR := c.afterCR
			c.afterCR = b == '\r'
			switch {
			case b == '\n' && afterCR:
				continue
			case b == '\r':
				b = '\n'
			}
			p[w] = b
			w++
		}
		// A read that was only the "\n" of a split "\r\n" hands on
		// nothing: read on rather than return 0 bytes.
		if w > 0 || n == 0 || err != nil {
			return w, err
		}
	}
}

// Read implements io.Reader.
func (f *sseFilter) Read(p []byte) (int, error) {
	if !f.started {
		f.started = true
		if b, err := f.br.Peek(len(bom)); err == nil && bytes.Equal(b, bom) {
			f.br.Discard(len(bom))
		}
	}
	for len(f.pend) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		seg, err := f.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			err = nil // a segment of a long line
		}
		f.err = err
		if len(seg) == 0 {
			continue
		}
		if !f.inLine {
			f.classify(seg)
			f.inLine, f.lineLen = true, 0
		}
		f.lineLen += len(seg)
		if f.lineLen > maxLineBytes {
			f.err = fmt.Errorf("%w: a line over %d MiB", errStreamLine, maxLineBytes>>20)
			return 0, f.err
		}
		ended := seg[len(seg)-1] == '\n'
		if ended {
			f.inLine = false
		}
		switch {
		case f.keep && !f.data:
			if f.other += len(seg); f.other > maxOtherBytes {
				f.err = fmt.Errorf("%w: over %d KiB of lines without data", errStreamLine, maxOtherBytes>>10)
				return 0, f.err
			}
			f.pend, f.passed = seg, true
		case f.keep:
			f.pend, f.passed = seg, true
		case ended && f.blank && f.passed:
			f.pend, f.passed = nl, false
		case ended && f.afterError:
			// go-openai returns an error event's error when it reads the
			// next line: a dropped one must still release it.
			f.pend, f.passed = nl, false
		}
		if f.err == io.EOF && !ended && f.keep && (!f.data || f.errLine) {
			// go-openai drops a last line without a newline: it would
			// lose the closing brace of a JSON error, or all of it.
			f.pend = append(f.pend[:len(f.pend):len(f.pend)], '\n') // a copy: seg is br's
		}
	}
	n := copy(p, f.pend)
	f.pend = f.pend[n:]
	return n, nil
}

// classify sets the kind of the line that starts with seg.
func (f *sseFilter) classify(seg []byte) {
	line := bytes.TrimLeft(seg, " \t")
	f.afterError, f.errLine = f.errLine, false
	f.keep, f.data, f.blank = false, false, false
	switch {
	case len(bytes.TrimSpace(line)) == 0:
		f.blank = true
	case line[0] == ':':
	case bytes.HasPrefix(line, dataField):
		f.keep, f.data = true, true
		payload := bytes.TrimLeft(line[len(dataField):], " \t\r\n")
		if bytes.Equal(bytes.TrimSpace(payload), doneMarker) {
			*f.done = true
		}
		f.errLine = bytes.HasPrefix(payload, errorStart)
	default:
		f.keep = !isFieldLine(line)
	}
}

// isFieldLine reports whether line is a field of the event stream format
// other than data: a name of letters, digits, "-" and "_", then ":" —
// "event:", "id:" and "retry:", which go-openai has no use for, and the
// fields the format says to ignore. go-openai would keep them as it keeps
// any line that is not data.
func isFieldLine(line []byte) bool {
	name, _, ok := bytes.Cut(line, []byte(":"))
	if !ok || len(name) == 0 {
		return false
	}
	for _, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

package web

import (
	"io"
	"net/http"
	"sync"
	"time"
)

// A request body must arrive, and a large answer be taken, at
// minTransferRate or faster after a grace of transferGrace: the server has
// no read or write timeout (event streams and WebSockets live for hours),
// so without these a client that sends a body a byte a minute, or stops
// reading a 16 MiB page, would hold its goroutine and buffers for ever.
// (Variables for tests.)
var (
	minTransferRate int64 = 64 << 10 // bytes a second
	transferGrace         = 30 * time.Second
)

// deadlineFrom is the answer size from which writes get a deadline: a
// smaller one fits in the socket's send buffer, whoever reads it.
const deadlineFrom = 16 << 10

// transferDeadline is when n bytes must have gone through, from now.
func transferDeadline(now time.Time, n int64) time.Time {
	return now.Add(transferGrace + time.Duration(n/minTransferRate)*time.Second)
}

// errSlowBody is the answer to a body that arrived too slowly.
func errSlowBody() error {
	return errorf(http.StatusRequestTimeout, "request_timeout",
		"the body arrived slower than %d KiB/s; send it again", minTransferRate>>10)
}

// requestBody is a request's body as handlers read it: cut at its
// route's limit (http.MaxBytesReader), under a read deadline, and counted
// against the server's budget of bodies held at once (bodyBudget) as its
// bytes arrive. release gives its part of the budget back; call it once
// the body's bytes are no longer used (it may be called more than once).
type requestBody struct {
	r      io.Reader
	budget *bodyBudget
	read   int64 // bytes read so far
	held   int64 // bytes of the budget held
	err    error // a refusal of the budget, returned from then on
}

// openBody opens r's body, at most limit bytes, under a read deadline: the
// body's length (or limit, when unknown) at minTransferRate, after
// transferGrace. A read past it fails with an error that decodeError maps
// to errSlowBody. net/http lifts the deadline when the body has been read
// to its end (its background read for a client that goes away starts
// there), so it does not cut an event stream that answers the request.
func (a *api) openBody(w http.ResponseWriter, r *http.Request, limit int64) *requestBody {
	n := limit
	if r.ContentLength >= 0 && r.ContentLength < limit {
		n = r.ContentLength
	}
	// Not without a body: net/http has started its background read already,
	// which would take the deadline for the client leaving and cancel the
	// request. An error means a writer without deadlines (a test recorder).
	if r.Body != nil && r.Body != http.NoBody {
		_ = http.NewResponseController(w).SetReadDeadline(transferDeadline(time.Now(), n))
	}
	return &requestBody{r: http.MaxBytesReader(w, r.Body, limit), budget: &a.bodies}
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	if b.read >= budgetFrom && 2*b.read > b.held {
		want := 2*b.read + budgetFrom // the next MiB's worth in one step
		if !b.budget.grow(b.held, want-b.held) {
			b.err = errOverBudget
			return n, b.err
		}
		b.held = want
	}
	return n, err
}

func (b *requestBody) release() {
	if b.held > 0 {
		b.budget.put(b.held)
		b.held = 0
	}
}

// writeBody writes an answer's body. One of deadlineFrom bytes or more is
// written and flushed under a write deadline (its length at
// minTransferRate, after transferGrace), then the deadline is lifted for
// the connection's next request: a client that stops reading loses its
// connection instead of holding the answer.
func writeBody(w http.ResponseWriter, b []byte) {
	if len(b) < deadlineFrom {
		w.Write(b)
		return
	}
	rc := http.NewResponseController(w)
	if rc.SetWriteDeadline(transferDeadline(time.Now(), int64(len(b)))) != nil {
		w.Write(b)
		return
	}
	if _, err := w.Write(b); err == nil {
		rc.Flush()
	}
	rc.SetWriteDeadline(time.Time{})
}

// deadlineWriter gives each write to an answer of unknown length (an
// export) its own write deadline, as writeBody gives a whole answer.
// lift ends the last one, after a flush.
type deadlineWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	written int64 // bytes written so far
}

func newDeadlineWriter(w http.ResponseWriter) *deadlineWriter {
	return &deadlineWriter{w: w, rc: http.NewResponseController(w)}
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.rc.SetWriteDeadline(transferDeadline(time.Now(), int64(len(p))))
	n, err := d.w.Write(p)
	d.written += int64(n)
	return n, err
}

func (d *deadlineWriter) lift() {
	d.rc.SetWriteDeadline(transferDeadline(time.Now(), 4<<10)) // the buffered rest
	if d.rc.Flush() == nil {
		d.rc.SetWriteDeadline(time.Time{})
	}
}

// bodyBudget bounds the request bodies the server holds at once (see
// Config.MaxBodyMemory): a body counts twice the bytes of it that have
// arrived (the bytes, and what decoding them keeps) once they pass
// budgetFrom, until its handler releases it.
type bodyBudget struct {
	max int64

	mu   sync.Mutex
	used int64
}

// budgetFrom is the body size from which a request counts toward the
// budget: smaller ones cost less than their connection.
const budgetFrom = 1 << 20

// errOverBudget refuses a body past the budget.
var errOverBudget = errorf(http.StatusServiceUnavailable, "overloaded",
	"the server holds its most request bodies at once; send this one again shortly")

// budgetHook, when set (by tests), is told the bytes held after each change.
var budgetHook func(used int64)

// grow adds n to what a body holding own bytes holds, unless that passes
// the budget while other bodies hold some: a body alone always grows.
func (b *bodyBudget) grow(own, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used-own > 0 && b.used+n > b.max {
		return false
	}
	b.used += n
	if budgetHook != nil {
		budgetHook(b.used)
	}
	return true
}

// put gives back n bytes.
func (b *bodyBudget) put(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if budgetHook != nil {
		budgetHook(b.used)
	}
}

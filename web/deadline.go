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

// bodyReader returns r's body cut at limit (http.MaxBytesReader) under a
// read deadline: the body's length (or limit, when unknown) at
// minTransferRate, after transferGrace. A read past it fails with an error
// that decodeError maps to errSlowBody. net/http lifts the deadline when
// the body has been read to its end (its background read for a client
// that goes away starts there), so it does not cut an event stream that
// answers the request.
func bodyReader(w http.ResponseWriter, r *http.Request, limit int64) io.Reader {
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
	return http.MaxBytesReader(w, r.Body, limit)
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
	w  http.ResponseWriter
	rc *http.ResponseController
}

func newDeadlineWriter(w http.ResponseWriter) *deadlineWriter {
	return &deadlineWriter{w: w, rc: http.NewResponseController(w)}
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.rc.SetWriteDeadline(transferDeadline(time.Now(), int64(len(p))))
	return d.w.Write(p)
}

func (d *deadlineWriter) lift() {
	if d.rc.Flush() == nil {
		d.rc.SetWriteDeadline(time.Time{})
	}
}

// bodyBudget bounds the request bodies the server holds at once (see
// Config.MaxBodyMemory): each body of budgetFrom bytes or more reserves
// twice its length (the bytes read, and what decoding them keeps) until
// its request ends.
type bodyBudget struct {
	max int64

	mu   sync.Mutex
	used int64
}

// budgetFrom is the body size from which a request counts toward the
// budget: smaller ones cost less than their connection.
const budgetFrom = 1 << 20

// reserve reserves the cost of r's body, at most limit bytes, or returns a
// 503 overloaded when the budget is spent. One request always gets its
// reservation, however large, when nothing else holds one.
func (b *bodyBudget) reserve(r *http.Request, limit int64) (release func(), err error) {
	n := limit
	switch {
	case r.Body == nil || r.Body == http.NoBody:
		n = 0
	case r.ContentLength >= 0 && r.ContentLength < limit:
		n = r.ContentLength
	}
	if n < budgetFrom {
		return func() {}, nil
	}
	n *= 2
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used > 0 && b.used+n > b.max {
		return nil, errorf(http.StatusServiceUnavailable, "overloaded",
			"the server holds %d MiB of request bodies, its most; send this one again shortly", b.used>>20)
	}
	b.used += n
	return func() {
		b.mu.Lock()
		b.used -= n
		b.mu.Unlock()
	}, nil
}

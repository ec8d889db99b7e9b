package streaming

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// WebSocket is a Sink writing each frame as one text message of a
// coder/websocket connection, as API.md says: one JSON object per message.
//
// It only writes. The caller owns the connection's reading side (client
// messages, pings) and must keep reading, or call CloseRead, so that the
// close handshake in Close can complete.
//
// On a connection from NewWebSocket each message goes through
// coder/websocket, which flushes every message: a WriteFrame of n frames
// costs n writes to the socket. On one from Accept, WriteFrame frames the
// messages itself and hands the socket all of them in one write(2) (see
// batchConn): coalescing saves system calls, not only writer wake-ups, and
// a message skips coder/websocket's per-message locking and buffering. The
// messages on the wire are the same.
type WebSocket struct {
	conn  *websocket.Conn
	batch *batchConn // nil: every message is its own write

	// bound is the context whose end already closes conn (a Viewer passes
	// the same one to every write): writes under it pass none to
	// coder/websocket, which would otherwise register and unregister a
	// context.AfterFunc per message (4 % of the server's CPU with 1,000
	// generations streaming).
	mu    sync.Mutex // guards bound, stop and writing: Close may come from another goroutine
	bound context.Context
	stop  func() bool
	// writing: a WriteFrame is under way. bound's end closes the
	// connection only to abort a write that blocks (see abort); closing it
	// otherwise would race the close handshake of a Close that follows (a
	// viewer ends its context first), and the client would get no close
	// frame. A write begun after the end fails at once instead.
	writing bool
	closing bool       // Close has begun: abort leaves the connection to it
	ended   *sync.Cond // on mu, made by abort: a write ended, or Close began
}

// abortGrace is how long the end of a sink's bound context lets a write
// under way finish before it closes the connection under it: enough for
// one that is merely being returned from, nothing for a client that stopped
// reading.
const abortGrace = 100 * time.Millisecond

// NewWebSocket returns a sink writing to conn, one write to the socket per
// message.
func NewWebSocket(conn *websocket.Conn) *WebSocket {
	return &WebSocket{conn: conn}
}

// Accept accepts a WebSocket handshake as websocket.Accept does (it has
// answered the client when it fails) and returns a sink for the connection
// whose WriteFrame hands the socket all its messages in one write.
func Accept(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions) (*WebSocket, error) {
	hw := &hijackWriter{ResponseWriter: w}
	conn, err := websocket.Accept(hw, r, opts)
	if err != nil {
		return nil, err
	}
	return &WebSocket{conn: conn, batch: hw.conn}, nil
}

// Conn returns the sink's connection, for reading it or handing it over.
// Messages written to it directly are written at once, in order with
// WriteFrame's.
func (s *WebSocket) Conn() *websocket.Conn { return s.conn }

// WriteFrame writes each frame as one text message. When ctx ends during a
// write, the connection is closed. WriteFrame is not safe for concurrent use.
func (s *WebSocket) WriteFrame(ctx context.Context, frames [][]byte) error {
	s.mu.Lock()
	if ctx.Done() != nil && s.bound == nil {
		s.bound, s.stop = ctx, context.AfterFunc(ctx, s.abort)
	}
	bound := ctx == s.bound
	s.writing = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.writing = false
		if s.ended != nil {
			s.ended.Broadcast()
		}
		s.mu.Unlock()
	}()
	// After writing is set: if bound has ended, either abort saw the write
	// under way, or this sees the end.
	if ctx.Err() != nil {
		return fmt.Errorf("write websocket message: %w", context.Cause(ctx))
	}
	if s.batch != nil {
		if !bound && ctx.Done() != nil {
			// Not the context the connection is bound to: its end must
			// still stop a write that blocks.
			stop := context.AfterFunc(ctx, func() { s.conn.CloseNow() })
			defer stop()
		}
		if err := s.batch.writeMessages(frames); err != nil {
			if ctx.Err() != nil {
				err = context.Cause(ctx)
			}
			return fmt.Errorf("write websocket messages: %w", err)
		}
		return nil
	}
	wctx := ctx
	if bound {
		wctx = context.Background()
	}
	for _, f := range frames {
		if err := s.conn.Write(wctx, websocket.MessageText, f); err != nil {
			return fmt.Errorf("write websocket message: %w", err)
		}
	}
	return nil
}

// abort runs when the bound context ends: it closes the connection under
// a write that is still under way after abortGrace (see writing).
func (s *WebSocket) abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.writing || s.closing {
		return
	}
	if s.ended == nil {
		s.ended = sync.NewCond(&s.mu)
	}
	expired := false
	t := time.AfterFunc(abortGrace, func() {
		s.mu.Lock()
		expired = true
		s.ended.Broadcast()
		s.mu.Unlock()
	})
	defer t.Stop()
	for s.writing && !s.closing && !expired {
		s.ended.Wait()
	}
	if s.writing && !s.closing {
		s.conn.CloseNow()
	}
}

// closeAnswerWait is how long Close waits for the client to answer its
// close frame before it drops the connection. A var for tests.
var closeAnswerWait = time.Second

// Close performs the close handshake with code (see the Close* constants)
// and reason (cut to the 123 bytes a close frame allows). A client that
// has not answered within closeAnswerWait (one that does not read: a phone
// gone offline) has its connection dropped, rather than hold the caller (a
// session's deletion, a shutdown) for coder/websocket's 5 s handshake
// timeouts; a sink from NewWebSocket, which cannot reach its connection,
// may take those. A connection already broken closes at once.
func (s *WebSocket) Close(code int, reason string) error {
	s.mu.Lock()
	s.closing = true
	if s.stop != nil {
		s.stop()
	}
	if s.ended != nil {
		s.ended.Broadcast()
	}
	s.mu.Unlock()
	if len(reason) > 123 {
		reason = reason[:123]
	}
	closed := make(chan error, 1)
	go func() { closed <- s.conn.Close(websocket.StatusCode(code), reason) }()
	var err error
	if s.batch == nil {
		err = <-closed
	} else {
		t := time.NewTimer(closeAnswerWait)
		select {
		case err = <-closed:
		case <-t.C:
			// The handshake's read (or its write, to a client that does
			// not read) fails with the connection: Close returns.
			s.batch.Conn.Close()
			err = <-closed
		}
		t.Stop()
	}
	if err != nil {
		return fmt.Errorf("close websocket %d: %w", code, err)
	}
	return nil
}

// AfterClose arranges for f to be called once the connection under the
// sink is closed, whoever closes it (the sink's Close, coder/websocket on
// a failed read or write, a runtime holding the socket), or at once if it
// already is; it reports whether it will. f is called from the goroutine
// that closes the connection, with coder/websocket's locks held: it must
// not block nor use the connection (hand the work to a goroutine). A sink
// from NewWebSocket cannot watch its connection: AfterClose returns false
// and never calls f.
//
// It lets an owner of per-connection state (a stream slot, a viewer)
// release it when the connection ends, without depending on anyone
// reading the connection, or delivering its end, to tell.
func (s *WebSocket) AfterClose(f func()) bool {
	if s.batch == nil {
		return false
	}
	s.batch.afterClose(f)
	return true
}

// KeepAlive has the sink ping its client every interval and drop the
// connection (no close handshake: the peer is gone or stuck) when nothing
// has come from the client since a ping for twice the interval (its pong,
// or anything else), the caller's reader is waiting for the client (see
// below) and no WriteFrame is under way: a client late to
// answer because it is still reading a long message is left to the
// viewer's judgement of slow clients, not judged here. Pings keep proxies
// from closing a quiet connection, and find a client that vanished
// without closing, which would otherwise hold its place (a stream slot, a
// viewer) until TCP gave up on it.
//
// The ping is written between two messages with no deadline of its own
// (coder/websocket's Ping would close a connection whose send buffer is
// full for 5 s); the client's bytes are counted as the caller's reader
// takes them. A reader that stops reading for a while (it waits for room in a busy
// object's queue, say) may leave the pong unread: the client is judged
// only once the reader has waited in a read with nothing to read for half
// an interval (at most a second), so a busy server never drops a live
// client. Pinging stops when the connection closes; it runs in a timer's
// goroutine, one a tick. Only a sink from Accept can ping: KeepAlive
// reports whether it will, and does nothing when interval is not positive.
func (s *WebSocket) KeepAlive(interval time.Duration) bool {
	if s.batch == nil || interval <= 0 {
		return false
	}
	k := &keepAlive{s: s, interval: interval}
	k.mu.Lock()
	k.timer = time.AfterFunc(interval, k.tick)
	k.mu.Unlock()
	s.batch.afterClose(k.stop)
	return true
}

// keepAlive is one sink's pinger (see KeepAlive).
type keepAlive struct {
	s        *WebSocket
	interval time.Duration

	mu      sync.Mutex // guards the fields below; held neither writing to the socket nor taking the sink's mu
	timer   *time.Timer
	sentAt  time.Time // when the unanswered ping was written; zero when none is
	read    int64     // the bytes read from the client before it was written
	sending bool      // a ping is being written
	stopped bool
}

// tick runs every interval: it sends a ping when none is unanswered, or
// drops the connection when one has waited twice the interval.
func (k *keepAlive) tick() {
	now := time.Now()
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	if !k.sentAt.IsZero() && k.s.batch.readBytes.Load() > k.read {
		k.sentAt = time.Time{} // answered: its pong, or other bytes, came
	}
	// Late: nothing from the client, with the reader there to see it
	// (see KeepAlive).
	late := !k.sentAt.IsZero() && now.Sub(k.sentAt) >= 2*k.interval &&
		k.s.batch.readerWaited(now, min(k.interval/2, time.Second))
	send := k.sentAt.IsZero() && !k.sending
	if send {
		// Before the write: a pong can come as soon as the ping is out.
		k.read, k.sending = k.s.batch.readBytes.Load(), true
	}
	k.timer.Reset(k.interval)
	k.mu.Unlock()

	if late && !k.s.writeUnderWay() {
		k.s.conn.CloseNow() // its AfterClose hooks run stop
		return
	}
	if send {
		// Blocks behind a WriteFrame under way, or while the socket's
		// buffer is full; the connection's close ends it. The wait for
		// the pong starts once the ping is written, not while it waits
		// behind a long message the client is still reading.
		err := k.s.batch.writePing()
		k.mu.Lock()
		k.sending = false
		if err == nil {
			k.sentAt = time.Now()
		}
		k.mu.Unlock()
	}
}

// stop ends pinging: the connection has closed.
func (k *keepAlive) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	k.timer.Stop()
}

// writeUnderWay reports whether a WriteFrame is writing.
func (s *WebSocket) writeUnderWay() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writing
}

var _ Sink = (*WebSocket)(nil)

// hijackWriter hands websocket.Accept the connection as a batchConn.
type hijackWriter struct {
	http.ResponseWriter
	conn *batchConn
}

func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The handshake's answer has been flushed (net/http flushes before
	// hijacking); flush again in case a wrapper buffered.
	if err := brw.Writer.Flush(); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("flush handshake: %w", err)
	}
	h.conn = newBatchConn(c)
	brw.Writer.Reset(h.conn)
	return h.conn, brw, nil
}

// maxCopied is the largest message WriteFrame copies into its write
// buffer; a larger one is handed to writev(2) as it is.
const maxCopied = 64 << 10

// writeBuffers recycles WriteFrame's buffers, so that a quiet connection
// keeps none.
var writeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// batchConn is the socket under a WebSocket from Accept. coder/websocket
// writes its frames (pongs, close frames, messages sent through Conn)
// through Write; writeMessages writes WriteFrame's text messages, framed
// here, in one write. Write follows coder/websocket's frames as they pass
// (their headers give their lengths), so that writeMessages puts its frames
// between two of them, never inside one written in several pieces nor
// between the frames of a fragmented message, and none after a close
// frame.
type batchConn struct {
	net.Conn
	mu       sync.Mutex // serialises writes to the socket
	boundary sync.Cond  // signalled when Write ends a frame, or the socket fails
	hdr      [14]byte   // a frame header being written, the longest a server writes
	nhdr     int        // bytes of it so far
	left     int64      // payload bytes of the current frame still to be written
	midMsg   bool       // a data frame without FIN was written: its message goes on
	closing  bool       // a close frame has been written: no message may follow
	broken   error      // a write failed: the stream may end inside a frame
	closed   bool       // Close has run
	onClose  []func()   // AfterClose's, called by Close

	// The reading side, for KeepAlive: when the reader went into a Read
	// that has not returned (UnixNano; 0 while no Read is under way), and
	// the bytes read so far.
	readSince atomic.Int64
	readBytes atomic.Int64
}

// Read passes the socket's bytes to coder/websocket's reader, noting when
// it waits for them (see KeepAlive).
func (c *batchConn) Read(p []byte) (int, error) {
	c.readSince.Store(time.Now().UnixNano())
	n, err := c.Conn.Read(p)
	c.readSince.Store(0)
	c.readBytes.Add(int64(n))
	return n, err
}

// readerWaited reports whether the reader has been waiting in one Read,
// with nothing to read, for at least d.
func (c *batchConn) readerWaited(now time.Time, d time.Duration) bool {
	since := c.readSince.Load()
	return since != 0 && now.UnixNano()-since >= int64(d)
}

// afterClose has f called by Close, or now if Close has run.
func (c *batchConn) afterClose(f func()) {
	c.mu.Lock()
	if !c.closed {
		c.onClose = append(c.onClose, f)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	f()
}

func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c}
	b.boundary.L = &b.mu
	return b
}

// Write passes coder/websocket's bytes to the socket, following its frames.
func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return 0, c.broken
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.broken = err
		c.boundary.Broadcast()
		return n, err
	}
	if c.follow(p) {
		c.boundary.Broadcast()
	}
	return n, nil
}

// Close closes the socket, then wakes a writeMessages waiting for a frame
// that will not be finished. It does not wait for a write in progress:
// closing is what ends it.
func (c *batchConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	if c.broken == nil {
		c.broken = net.ErrClosed
	}
	c.boundary.Broadcast()
	var onClose []func()
	if !c.closed {
		c.closed = true
		onClose, c.onClose = c.onClose, nil
	}
	c.mu.Unlock()
	for _, f := range onClose {
		f()
	}
	return err
}

// follow reads the frames in p, written after those already followed, and
// reports whether p ends where a message may be written.
func (c *batchConn) follow(p []byte) bool {
	for len(p) > 0 {
		if c.left > 0 {
			n := min(int64(len(p)), c.left)
			c.left -= n
			p = p[n:]
			continue
		}
		need := 2
		if c.nhdr >= 2 {
			need = frameHeaderLen(c.hdr[1])
		}
		k := copy(c.hdr[c.nhdr:need], p)
		c.nhdr += k
		p = p[k:]
		if c.nhdr < need {
			continue
		}
		if need == 2 {
			if full := frameHeaderLen(c.hdr[1]); full > 2 {
				continue // the extended length or the mask key follows
			}
		}
		switch op := c.hdr[0] & 0x0f; {
		case op == 0x8:
			c.closing = true
		case op < 0x8: // a data frame: continuation, text or binary
			c.midMsg = c.hdr[0]&0x80 == 0
		}
		c.left = framePayloadLen(c.hdr[:c.nhdr])
		c.nhdr = 0
	}
	return c.atBoundary()
}

// atBoundary says whether a message may be written now.
func (c *batchConn) atBoundary() bool {
	return c.left == 0 && c.nhdr == 0 && !c.midMsg
}

// frameHeaderLen is the length of a frame header whose second byte is b1.
func frameHeaderLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4 // mask key
	}
	return n
}

// framePayloadLen is the payload length a whole frame header gives.
func framePayloadLen(h []byte) int64 {
	switch l := h[1] & 0x7f; l {
	case 126:
		return int64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		return int64(binary.BigEndian.Uint64(h[2:10]) & (1<<63 - 1))
	default:
		return int64(l)
	}
}

// appendTextHeader appends the header of an unmasked, final text frame of
// n bytes (RFC 6455, section 5.2).
func appendTextHeader(b []byte, n int) []byte {
	switch {
	case n < 126:
		return append(b, 0x81, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 0x81, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0x81, 127), uint64(n))
	}
}

// writeMessages writes each frame as a text message, all in one write
// (a writev(2) when large ones are not copied), between two of
// coder/websocket's frames.
func (c *batchConn) writeMessages(frames [][]byte) error {
	if len(frames) == 0 {
		return nil
	}
	buf := writeBuffers.Get().(*[]byte)
	b := (*buf)[:0]
	var vec net.Buffers
	for _, f := range frames {
		b = appendTextHeader(b, len(f))
		if len(f) <= maxCopied {
			b = append(b, f...)
			continue
		}
		vec = append(vec, b, f)
		b = b[len(b):] // what follows goes on in the same buffer
	}
	c.mu.Lock()
	for c.broken == nil && !c.atBoundary() {
		c.boundary.Wait()
	}
	var err error
	switch {
	case c.broken != nil:
		err = c.broken
	case c.closing:
		err = net.ErrClosed
	case vec == nil:
		_, err = c.Conn.Write(b)
	default:
		if len(b) > 0 {
			vec = append(vec, b)
		}
		_, err = vec.WriteTo(c.Conn)
	}
	if err != nil && c.broken == nil {
		c.broken = err
		c.boundary.Broadcast()
	}
	c.mu.Unlock()
	if vec == nil && cap(b) <= 4*maxCopied {
		*buf = b[:0] // keep what append grew
		writeBuffers.Put(buf)
	}
	return err
}

// writePing writes an empty ping frame between two of the other frames,
// as writeMessages writes its messages.
func (c *batchConn) writePing() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.broken == nil && !c.atBoundary() {
		c.boundary.Wait()
	}
	switch {
	case c.broken != nil:
		return c.broken
	case c.closing:
		return net.ErrClosed
	}
	_, err := c.Conn.Write([]byte{0x89, 0}) // FIN, ping; unmasked, no payload
	if err != nil {
		c.broken = err
		c.boundary.Broadcast()
	}
	return err
}

package streaming

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/coder/websocket"
)

// WebSocket is a Sink writing each frame as one text message of a
// coder/websocket connection, as API.md says: one JSON object per message.
//
// It only writes. The caller owns the connection's reading side (client
// messages, pings) and must keep reading, or call CloseRead, so that the
// close handshake in Close can complete.
//
// coder/websocket flushes every message: on a connection from NewWebSocket
// a WriteFrame of n frames costs n writes to the socket. On one from Accept
// the n messages go to the socket in one write(2) (see batchConn), so that
// coalescing saves system calls, not only writer wake-ups; the messages on
// the wire are the same.
type WebSocket struct {
	conn  *websocket.Conn
	batch *batchConn // nil: every message is its own write

	// bound is the context whose end already closes conn (a Viewer passes
	// the same one to every write): writes under it pass none to
	// coder/websocket, which would otherwise register and unregister a
	// context.AfterFunc per message (4 % of the server's CPU with 1,000
	// generations streaming).
	mu    sync.Mutex // guards bound and stop: Close may come from another goroutine
	bound context.Context
	stop  func() bool
}

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
		conn := s.conn
		s.bound, s.stop = ctx, context.AfterFunc(ctx, func() { conn.CloseNow() })
	}
	bound := ctx == s.bound
	s.mu.Unlock()
	wctx := ctx
	if bound {
		if ctx.Err() != nil {
			return fmt.Errorf("write websocket message: %w", context.Cause(ctx))
		}
		wctx = context.Background()
	}
	batch := s.batch != nil && len(frames) > 1
	if batch {
		s.batch.hold()
	}
	for _, f := range frames {
		if err := s.conn.Write(wctx, websocket.MessageText, f); err != nil {
			if batch {
				// What is held is whole frames, perhaps another
				// goroutine's close frame: it still goes out.
				s.batch.release()
			}
			return fmt.Errorf("write websocket message: %w", err)
		}
	}
	if batch {
		if err := s.batch.release(); err != nil {
			return fmt.Errorf("write websocket messages: %w", err)
		}
	}
	return nil
}

// Close performs the close handshake with code (see the Close* constants)
// and reason (cut to the 123 bytes a close frame allows). It may take up to
// coder/websocket's handshake timeouts (5 s to write, 5 s to wait) with a
// client that does not read; a connection already broken closes at once.
func (s *WebSocket) Close(code int, reason string) error {
	s.mu.Lock()
	if s.stop != nil {
		s.stop()
	}
	s.mu.Unlock()
	if len(reason) > 123 {
		reason = reason[:123]
	}
	if err := s.conn.Close(websocket.StatusCode(code), reason); err != nil {
		return fmt.Errorf("close websocket %d: %w", code, err)
	}
	return nil
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
	h.conn = &batchConn{Conn: c}
	brw.Writer.Reset(h.conn)
	return h.conn, brw, nil
}

// maxHeld is the most a batchConn holds before writing: a batch larger
// than this goes out in several writes of about this size.
const maxHeld = 256 << 10

// heldBuffers recycles the buffers of held writes, so that a quiet
// connection keeps none.
var heldBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// batchConn is the socket under a WebSocket from Accept. Between hold and
// release its writes collect in a buffer and release writes them at once.
// Writes from other goroutines meanwhile (coder/websocket's pongs and close
// frames) are held too, and keep their order; outside a batch, writes pass
// straight through. coder/websocket writes whole frames under its own lock
// and a held write cannot fail, so what is held is always whole frames.
type batchConn struct {
	net.Conn
	mu   sync.Mutex // serialises writes to the socket, the held ones with the others
	held *[]byte    // non-nil between hold and release
}

func (c *batchConn) hold() {
	c.mu.Lock()
	c.held = heldBuffers.Get().(*[]byte)
	c.mu.Unlock()
}

// release ends a batch: it writes what is held.
func (c *batchConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.held
	c.held = nil
	var err error
	if len(*b) > 0 {
		_, err = c.Conn.Write(*b)
	}
	*b = (*b)[:0]
	if cap(*b) <= maxHeld {
		heldBuffers.Put(b)
	}
	return err
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held == nil {
		return c.Conn.Write(p)
	}
	b := c.held
	if len(*b)+len(p) <= maxHeld {
		*b = append(*b, p...)
		return len(p), nil
	}
	// Too much to hold: what is held and p go out in one writev(2).
	bufs := net.Buffers{*b, p}
	if _, err := bufs.WriteTo(c.Conn); err != nil {
		return 0, err
	}
	*b = (*b)[:0]
	return len(p), nil
}

package objects

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Socket limits.
const (
	// DefaultSocketReadLimit is the largest message a held socket accepts.
	DefaultSocketReadLimit = 32 << 20
	// DefaultSocketReadMemory is Runtime.SocketReadMemory's default.
	DefaultSocketReadMemory = 1 << 30
	// socketCountFrom is the part of a message that is not counted
	// against SocketReadMemory: small messages cost less than their
	// socket.
	socketCountFrom = 1 << 20
	// MaxSocketTags is how many tags a socket may carry.
	MaxSocketTags = 10
	// MaxSocketAttachment is the largest attachment, in bytes.
	MaxSocketAttachment = 16 << 10
	// maxTagLen is the longest tag, in bytes.
	maxTagLen = 256
)

// Close codes the runtime uses.
const (
	StatusNormalClosure = websocket.StatusNormalClosure
	StatusGoingAway     = websocket.StatusGoingAway
	StatusInternalError = websocket.StatusInternalError
	StatusTryAgainLater = websocket.StatusTryAgainLater
)

// ReasonDeleted is the close reason of an object's sockets when the object
// is deleted (with StatusNormalClosure).
const ReasonDeleted = "object deleted"

// SocketHandler is implemented by objects that accept WebSocket messages.
// Each delivery runs like a call: serially with the object's other calls,
// waking the object if it hibernated. Messages of one socket are delivered
// in order, one at a time.
type SocketHandler interface {
	WebSocketMessage(ctx context.Context, tx *Tx, s *Socket, typ websocket.MessageType, data []byte) error
	// WebSocketClose is told that the socket closed: code is the peer's close
	// status, or -1 when the connection broke without one.
	WebSocketClose(ctx context.Context, tx *Tx, s *Socket, code websocket.StatusCode, reason string) error
}

// SocketOptions are the options of Stub.AcceptWebSocket. Nil means none.
type SocketOptions struct {
	// Tags (up to MaxSocketTags, each up to 256 bytes) let the object find
	// sockets by role, e.g. "viewer".
	Tags []string
	// Attachment is up to MaxSocketAttachment bytes the object keeps with
	// the socket; it survives hibernation.
	Attachment []byte
	// Value is an in-memory value kept with the socket (Socket.Value), set
	// before the first message can be delivered: for example the writer
	// the caller built around the connection. Like the socket it survives
	// hibernation, not a restart.
	Value any
}

// Socket is a WebSocket held by the runtime on behalf of an object. The
// runtime reads it and delivers messages to the object's SocketHandler; the
// socket stays open while the object hibernates. Safe for concurrent use.
type Socket struct {
	e    *entry
	conn *websocket.Conn
	tags []string

	value any // SocketOptions.Value; immutable

	mu         sync.Mutex
	attachment []byte
	closed     bool
	silent     bool // closed by Delete: do not deliver the close (it would recreate the object)
}

// AcceptWebSocket hands conn to the runtime on behalf of the object. The
// runtime sets its read limit (Runtime.SocketReadLimit), answers pings,
// reads it, and delivers messages and close to the object. The caller must
// not read from conn afterwards; writing (Socket.Send, or conn directly) is
// allowed from any goroutine.
func (s *Stub) AcceptWebSocket(ctx context.Context, conn *websocket.Conn, opts *SocketOptions) (*Socket, error) {
	if opts == nil {
		opts = &SocketOptions{}
	}
	if len(opts.Tags) > MaxSocketTags {
		return nil, fmt.Errorf("%d tags, the limit is %d: %w", len(opts.Tags), MaxSocketTags, ErrTooLarge)
	}
	for _, t := range opts.Tags {
		if len(t) > maxTagLen || t == "" {
			return nil, fmt.Errorf("tag of %d bytes: %w", len(t), ErrTooLarge)
		}
	}
	if len(opts.Attachment) > MaxSocketAttachment {
		return nil, fmt.Errorf("attachment of %d bytes, the limit is %d: %w", len(opts.Attachment), MaxSocketAttachment, ErrTooLarge)
	}
	rt := s.ns.rt
	conn.SetReadLimit(rt.SocketReadLimit)
	for {
		rt.mu.Lock()
		if rt.state != stateOpen {
			rt.mu.Unlock()
			return nil, ErrClosed
		}
		e := rt.entryLocked(s.ns, s.name)
		e.mu.Lock()
		if e.dead {
			e.mu.Unlock()
			rt.mu.Unlock()
			continue
		}
		sock := &Socket{e: e, conn: conn, value: opts.Value, tags: append([]string(nil), opts.Tags...),
			attachment: append([]byte(nil), opts.Attachment...)}
		if e.sockets == nil {
			e.sockets = make(map[*Socket]struct{})
		}
		e.sockets[sock] = struct{}{}
		e.mu.Unlock()
		rt.wg.Add(1)
		rt.mu.Unlock()
		go sock.read()
		return sock, nil
	}
}

// Sockets returns the object's open sockets carrying tag ("" for all).
func (h *Handle) Sockets(tag string) []*Socket {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*Socket
	for s := range e.sockets {
		if tag == "" || s.hasTag(tag) {
			out = append(out, s)
		}
	}
	return out
}

func (s *Socket) hasTag(tag string) bool {
	for _, t := range s.tags {
		if t == tag {
			return true
		}
	}
	return false
}

// Tags returns the socket's tags.
func (s *Socket) Tags() []string { return append([]string(nil), s.tags...) }

// Value returns SocketOptions.Value.
func (s *Socket) Value() any { return s.value }

// Conn returns the underlying connection, for writing (for example by a
// streaming sink). Do not read from it.
func (s *Socket) Conn() *websocket.Conn { return s.conn }

// Attachment returns a copy of the socket's attachment.
func (s *Socket) Attachment() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.attachment...)
}

// SetAttachment replaces the attachment (at most MaxSocketAttachment bytes).
func (s *Socket) SetAttachment(b []byte) error {
	if len(b) > MaxSocketAttachment {
		return fmt.Errorf("attachment of %d bytes, the limit is %d: %w", len(b), MaxSocketAttachment, ErrTooLarge)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attachment = append([]byte(nil), b...)
	return nil
}

// Send writes one message. It blocks until written or ctx ends. It writes
// at once: from inside a call, send from tx.OnCommit, so that nothing
// reports a write before its commit; and mind that a slow client then holds
// up the object (the session package queues to a bounded viewer instead).
func (s *Socket) Send(ctx context.Context, typ websocket.MessageType, data []byte) error {
	return s.conn.Write(ctx, typ, data)
}

// Close closes the socket with code and reason.
func (s *Socket) Close(code websocket.StatusCode, reason string) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return s.conn.Close(code, reason)
}

// read is the socket's reader goroutine: it delivers each message as a call
// (waiting for it, which keeps a socket's messages in order and pushes back
// on a client that sends faster than the object handles), and the close.
func (s *Socket) read() {
	e := s.e
	rt := e.rt
	defer rt.wg.Done()
	stub := &Stub{ns: e.ns, name: e.name}
	for {
		typ, data, held, err := s.readMessage()
		if err != nil {
			s.finish(stub, err)
			return
		}
		if typ == websocket.MessageText && s.autoRespond(data) {
			rt.socketBytes.Add(-held)
			continue
		}
		// Back-pressure: this client is not read while the queue is full.
		err = rt.untilRoom(func() error {
			_, err := stub.callFromSocket(context.Background(), s, func(ctx context.Context, obj any, tx *Tx) (any, error) {
				h, ok := obj.(SocketHandler)
				if !ok {
					return nil, fmt.Errorf("%s/%q takes no socket messages: %w", e.ns.name, e.name, ErrNotSupported)
				}
				return nil, h.WebSocketMessage(ctx, tx, s, typ, data)
			})
			return err
		})
		rt.socketBytes.Add(-held) // handled: the handler keeps no reference
		switch {
		case err == nil, errors.Is(err, ErrDeclined):
		case errors.Is(err, ErrNotFound): // deleted since it was read: dropped with the object
		case errors.Is(err, ErrClosed):
			s.conn.CloseNow()
		case errors.Is(err, ErrNotSupported):
			s.conn.Close(StatusInternalError, "this object does not accept messages")
		case errors.Is(err, ErrDiskFailed):
			// Answered nothing, the client would wait for ever on a socket
			// that still answers pings; a reconnect is refused plainly.
			s.conn.Close(StatusTryAgainLater, "a write to the server's disk failed: it refuses requests until it is restarted")
		default:
			rt.logger().Warn("objects: socket message handler failed", "namespace", e.ns.name, "object", e.name, "err", err)
		}
	}
}

// errSocketMemory closes a socket whose message would pass
// Runtime.SocketReadMemory.
var errSocketMemory = errors.New("objects: the server holds its most message bytes at once")

// readMessage reads the next message whole, as conn.Read does, counting
// its bytes past socketCountFrom against the runtime's SocketReadMemory as
// they arrive; held is what it counted, for the caller to give back once
// the message is handled. A message that would pass the bound closes the
// socket with 1013 (try again later), and is an error.
func (s *Socket) readMessage() (typ websocket.MessageType, data []byte, held int64, err error) {
	typ, r, err := s.conn.Reader(context.Background())
	if err != nil {
		return 0, nil, 0, err
	}
	cr := &countedReader{r: r, rt: s.e.rt}
	data, err = io.ReadAll(cr) // its growth, not our own: a 32 MiB message is read with fewer copies
	if err != nil {
		s.e.rt.socketBytes.Add(-cr.held)
		if errors.Is(err, errSocketMemory) {
			s.conn.Close(StatusTryAgainLater, "the server holds its most message bytes at once: send it again shortly")
		}
		return 0, nil, 0, err
	}
	return typ, data, cr.held, nil
}

// countedReader counts what passes it beyond socketCountFrom against the
// runtime's SocketReadMemory, and fails with errSocketMemory past it.
type countedReader struct {
	r    io.Reader
	rt   *Runtime
	read int64 // bytes read
	held int64 // of them, counted
}

func (c *countedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += int64(n)
	if over := c.read - socketCountFrom; over > c.held {
		add := over - c.held
		c.held = over
		if c.rt.socketBytes.Add(add) > c.rt.SocketReadMemory {
			return n, errSocketMemory // the caller gives back held
		}
	}
	return n, err
}

// deleted reports whether Delete closed the socket (see silent).
func (s *Socket) deleted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.silent
}

func (s *Socket) autoRespond(data []byte) bool {
	ns := s.e.ns
	ns.autoMu.RLock()
	req, resp := ns.autoReq, ns.autoResp
	ns.autoMu.RUnlock()
	if req == nil || !bytes.Equal(data, req) {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.conn.Write(ctx, websocket.MessageText, resp)
	return true
}

// finish removes the socket from its object and tells the object.
func (s *Socket) finish(stub *Stub, readErr error) {
	e := s.e
	e.mu.Lock()
	delete(e.sockets, s)
	e.mu.Unlock()
	s.conn.CloseNow()
	s.mu.Lock()
	silent := s.silent
	s.mu.Unlock()
	if silent {
		e.rt.maybeDrop(e)
		return
	}
	code := websocket.CloseStatus(readErr)
	reason := ""
	var ce websocket.CloseError
	if errors.As(readErr, &ce) {
		reason = ce.Reason
	}
	// The close must reach the object, which may hold state for the socket
	// (a count, a viewer): a full queue is waited out, as a message's is,
	// until the runtime closes. Not a deleted object (ErrNotFound): the
	// socket left e.sockets, so Delete could not make it silent, and a
	// plain call would create the object anew.
	var err error
	err = e.rt.untilRoom(func() error {
		_, err := stub.callExistingOnWorker(context.Background(), func(ctx context.Context, obj any, tx *Tx) (any, error) {
			if h, ok := obj.(SocketHandler); ok {
				return nil, h.WebSocketClose(ctx, tx, s, code, reason)
			}
			return nil, nil
		})
		return err
	})
	if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrNotFound) {
		e.rt.logger().Warn("objects: socket close handler failed", "namespace", e.ns.name, "object", e.name, "err", err)
	}
	e.rt.maybeDrop(e)
}

// socketsOf lists the sockets of entries.
func socketsOf(entries ...*entry) []*Socket {
	var socks []*Socket
	for _, e := range entries {
		e.mu.Lock()
		for s := range e.sockets {
			socks = append(socks, s)
		}
		e.mu.Unlock()
	}
	return socks
}

// closeSockets closes sockets in parallel (a close handshake can take a
// round trip per socket). silent sockets do not tell their object.
func closeSockets(socks []*Socket, code websocket.StatusCode, reason string, silent bool) {
	if silent {
		for _, s := range socks {
			s.mu.Lock()
			s.silent = true
			s.mu.Unlock()
		}
	}
	var wg sync.WaitGroup
	for _, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Close(code, reason)
		}()
	}
	wg.Wait()
}

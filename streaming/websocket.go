package streaming

import (
	"context"
	"fmt"
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
// coder/websocket flushes every message, so a coalesced WriteFrame of n
// frames still costs n writes to the socket; coalescing saves writer
// wake-ups, and lets frames queued during a slow write go out back to back.
type WebSocket struct {
	conn *websocket.Conn

	// bound is the context whose end already closes conn (a Viewer passes
	// the same one to every write): writes under it pass none to
	// coder/websocket, which would otherwise register and unregister a
	// context.AfterFunc per message (4 % of the server's CPU with 1,000
	// generations streaming).
	mu    sync.Mutex // guards bound and stop: Close may come from another goroutine
	bound context.Context
	stop  func() bool
}

// NewWebSocket returns a sink writing to conn.
func NewWebSocket(conn *websocket.Conn) *WebSocket {
	return &WebSocket{conn: conn}
}

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
	for _, f := range frames {
		if err := s.conn.Write(wctx, websocket.MessageText, f); err != nil {
			return fmt.Errorf("write websocket message: %w", err)
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

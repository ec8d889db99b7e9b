package streaming

import (
	"context"
	"fmt"

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
}

// NewWebSocket returns a sink writing to conn.
func NewWebSocket(conn *websocket.Conn) *WebSocket {
	return &WebSocket{conn: conn}
}

// WriteFrame writes each frame as one text message. When ctx ends during a
// write, coder/websocket closes the connection.
func (s *WebSocket) WriteFrame(ctx context.Context, frames [][]byte) error {
	for _, f := range frames {
		if err := s.conn.Write(ctx, websocket.MessageText, f); err != nil {
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
	if len(reason) > 123 {
		reason = reason[:123]
	}
	if err := s.conn.Close(websocket.StatusCode(code), reason); err != nil {
		return fmt.Errorf("close websocket %d: %w", code, err)
	}
	return nil
}

var _ Sink = (*WebSocket)(nil)

package natsbus

import "errors"

var (
	// ErrClosed is returned by Publish and Consume after Bus.Close, and by
	// Embedded.Connect after Embedded.Close.
	ErrClosed = errors.New("natsbus: closed")

	// ErrNotOpen is returned by Publish and Consume before Bus.Open has
	// succeeded.
	ErrNotOpen = errors.New("natsbus: not open")

	// ErrNoMsgID is returned by Publish when msgID is empty: every event needs
	// an ID, for JetStream de-duplication and for the consumer's own.
	ErrNoMsgID = errors.New("natsbus: empty message id")

	// ErrInvalidOptions is wrapped by New, StartEmbedded, ConnectExternal and
	// Consume when their options are inconsistent; the message says which
	// field is wrong.
	ErrInvalidOptions = errors.New("natsbus: invalid options")

	// ErrNotReady is wrapped by StartEmbedded when the server did not come up
	// (before ctx ended, or JetStream could not start on the store dir).
	ErrNotReady = errors.New("natsbus: embedded server not ready")
)

//go:build tools

// Package deps pins the project's direct dependencies while the packages
// that use them are being written; it is removed once each one is imported.
package deps

import (
	_ "github.com/coder/websocket"
	_ "github.com/go-chi/chi/v5"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/sashabaranov/go-openai"
	_ "modernc.org/sqlite"
)

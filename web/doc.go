// Package web is sessiond's HTTP face: the versioned JSON API under /v1
// (sessions, turns, generations, streams, tickets), its WebSocket and SSE
// endpoints, API-key authentication, the OpenAPI document, and the mount
// point of the browser UI.
//
// NewHandler builds the whole router from a session.Service and a Config;
// read handler_test.go for a tour of the API.
//
// # Errors
//
// Every error answer is {"error": {"code": "…", "message": "…"}} with a
// stable snake_case code (API.md); writeError maps the errors of package
// session to codes and statuses in one place.
//
// # Concurrency
//
// The handler is safe for concurrent use. Streams (SSE) and sockets hold no
// goroutine of their own here: SSE responses are written by a streaming
// viewer, and WebSockets are handed to the session's runtime.
package web

// Package session runs conversations: each session is a durable object
// (package objects) holding its metadata, its turns (with parent links, so
// edits and regenerations make branches), its generations and the
// idempotency keys it was posted with; each owner's sessions are listed by
// a directory object.
//
// Service is the entry point (read service_test.go first): NewService
// registers both classes on a runtime, and its methods — Create, Post,
// Turns, Cancel, Fork, Export, Accept for WebSockets, Follow for SSE,
// OpenStream to count an owner's streams — are what package web calls. Models come from a Registry: the built-in
// OfflineModel and any Model, such as the OpenAI-compatible adapter in
// session/openai.
//
// # Generations
//
// A generation belongs to its session, not to the request that started
// it: a goroutine owned by the Service streams the model's deltas into the
// session's hub (package streaming) and the node's journal of partial
// output, which saves every running generation's new output in one commit
// every PersistInterval, and commits the final turn before its done event
// leaves. A new instance marks a generation a crash left running as
// interrupted, with the output the journal saved; start-up wakes the
// sessions the journal names (each generation is named in it before the
// commit that starts it, output or not) so that none waits for a client
// to look.
// While one runs, a new user turn queues, is refused or interrupts it, by
// the session's busy policy.
//
// # Lifecycle
//
// NewService before the runtime opens, Start after; Close before the
// runtime closes (running generations then commit what they have, marked
// interrupted).
//
// # Concurrency
//
// Service is safe for concurrent use. A session's state is touched only
// inside its object's calls, which run one at a time.
//
// # Errors
//
// ErrNotFound, ErrInvalid, ErrTooLarge, ErrConflict, ErrGenerationRunning
// and ErrTooManyStreams (errors.go) wrap every refusal; ErrorCode maps them,
// and model failures (*ModelError), to the API's stable codes.
package session

// Package streaming carries a generation's output to any number of viewers:
// chunk logs with offsets, viewers with bounded buffers, resume from an
// offset, fan-out, and the SSE and WebSocket framing of API.md.
//
// It knows nothing of sessions, HTTP routes or databases, and imports no
// other package of this project. Read ExampleHub first, then ExampleNewSSE
// for an HTTP handler.
//
// # Parts
//
//   - Log: one generation's events (delta…, then done or error) with
//     offsets 1, 2, 3 … and no gaps, each encoded once (Event.Data) and
//     shared by every viewer it is queued to. Retained for
//     LogOptions.Retention (10 minutes) after it ends. Events older than
//     the newest thousand or so, and all of them once the generation ends,
//     are compacted to their text: a viewer resuming there gets the same
//     bytes, rebuilt a write (FlushBytes) at a time as it sends them.
//   - Viewer: one connected client, writing to a Sink. Its queue is
//     bounded; a viewer that falls behind is dropped and told where to
//     resume, and the producer never waits for it.
//   - Hub: the viewers of one session and its recent logs. Every viewer
//     follows every running generation; Broadcast reaches all of them.
//   - SSE and WebSocket: the two Sinks. DecodeClientMessage reads the
//     client → server WebSocket messages.
//
// # Lifecycle
//
// The session creates a Hub and closes it when it goes away. For each
// connection the web layer creates a sink and a Viewer, adds the viewer to
// the hub (AddViewer, with the position a hello asked to resume from) or
// subscribes it to one log (an SSE stream of one generation), and calls
// Viewer.Close when the connection ends; Viewer.Done tells it when the
// viewer stopped on its own (dropped, write failed, CloseOnFinal). The
// producer of a generation gets its Log from Hub.StartGeneration, calls
// Append for each chunk, then Finish or Fail once. The log stays resumable
// by offset for its retention and is then released; Hub.Retained says
// whether it still is (if not, send the committed turn instead).
//
// # Concurrency
//
// Log, Viewer and Hub are safe for concurrent use; a Log has one producer.
// Subscribing is exact: a subscriber gets the backlog after its offset
// then every live event, each once and in order, whatever the race with
// Append and Finish, because the backlog is taken (shared, not copied) and
// the subscriber registered under the lock that Append holds while it
// hands the event to each subscriber.
// Handing over is an append to the viewer's queue under the viewer's lock;
// nothing in it can block on a client.
//
// Each viewer writes from its own goroutine, started when something is
// queued and exiting when the queue is empty: an idle viewer costs memory,
// not a goroutine. The viewer owns that goroutine; Close cancels what it is
// writing and waits for it. The SSE heartbeat and the retention and
// coalescing delays are timers (time.AfterFunc), stopped by Close or
// Release, never parked goroutines.
//
// Coalescing: a viewer writes at most once per FlushInterval (15 ms) while
// events keep coming, and hands the sink everything queued meanwhile in one
// WriteFrame; an event after a quiet interval, or FlushBytes (16 KiB) of
// them, is written at once. So a model slower than one chunk per interval
// pays no latency for it, and a fast one pays at most the interval, in
// exchange for one writer wake-up (and, for SSE, one flush) per interval
// instead of one per chunk for each viewer. FlushInterval 0 writes as soon
// as the writer is free. The wire format does not change: one JSON object
// per WebSocket message or SSE event. What is handed over together goes to
// the socket in one write: an SSE flush, or, for a WebSocket from Accept,
// the messages of one WriteFrame framed by the sink and written at once
// (between the frames coder/websocket writes itself, never inside one).
//
// Slow viewers: when more than MaxBuffered (1 MiB) is queued behind a
// write that has been under way for FlushInterval or longer (a burst sent
// back to back may queue up to MaxBurst times as much, and the message
// that passes it, before the writer has been seen to fall behind), the
// viewer is dropped: its queue is
// discarded, the write in progress gets DropTimeout (1 s) to finish, then
// it is sent
// {"type":"resume_required","generation":…,"after":N} for each generation
// it follows (N: the last offset handed to its sink) and closed with
// CloseResumeRequired (WebSocket close code 4000). The client reconnects
// and resumes after N.
//
// # Errors
//
// Sentinels are in errors.go, matched with errors.Is: ErrLogEnded,
// ErrReleased, ErrOffsetOutOfRange, ErrGenerationNotFound, ErrViewerClosed,
// ErrSlowViewer and others. DecodeClientMessage returns a *ProtocolError
// whose Code (invalid_json, invalid_request, unknown_type) is the stable
// error code to send to the client.
package streaming

package streaming_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"sessiond/streaming"
)

// TestMain runs the package's tests with running logs that compact all but
// their 3 newest events (1,024 by default), so that every test of resumes,
// reconnects and fan-out also crosses compactions. Benchmarks keep the
// default.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		streaming.SetRunningKeep(3)
	}
	os.Exit(m.Run())
}

// checkFor polls cond until it holds, failing the test after a generous
// deadline. It never asserts a timing: the deadline only stops a hung test.
func checkFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recSink is an in-memory Sink that records what it is given. write, if
// set, runs first and may block or fail the write.
type recSink struct {
	write func(ctx context.Context, frames [][]byte) error

	mu     sync.Mutex
	frames [][]byte
	calls  int
	closed bool
	code   int
	reason string
}

func (s *recSink) WriteFrame(ctx context.Context, frames [][]byte) error {
	if s.write != nil {
		if err := s.write(ctx, frames); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		panic("WriteFrame after Close")
	}
	s.frames = append(s.frames, frames...)
	s.calls++
	return nil
}

func (s *recSink) Close(code int, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		panic("sink closed twice")
	}
	s.closed, s.code, s.reason = true, code, reason
	return nil
}

func (s *recSink) snapshot() (frames [][]byte, calls int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.frames...), s.calls
}

func (s *recSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.frames)
}

func (s *recSink) closeCode() (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code, s.closed
}

// msg is the union of the fields of the server → client messages.
type msg struct {
	Type       string          `json:"type"`
	Generation string          `json:"generation"`
	Offset     int64           `json:"offset"`
	Text       string          `json:"text"`
	After      int64           `json:"after"`
	Turn       json.RawMessage `json:"turn"`
	Code       string          `json:"code"`
}

func decode(tb testing.TB, frame []byte) msg {
	tb.Helper()
	var m msg
	if err := json.Unmarshal(frame, &m); err != nil {
		tb.Fatalf("decode %s: %v", frame, err)
	}
	return m
}

var testDone = streaming.Done{
	Turn:         json.RawMessage(`{"id":2,"role":"assistant","content":"hi"}`),
	Usage:        json.RawMessage(`{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}`),
	FinishReason: "stop",
}

func mustAppend(tb testing.TB, l *streaming.Log, text string) streaming.Event {
	tb.Helper()
	e, err := l.AppendText(text)
	if err != nil {
		tb.Fatalf("AppendText: %v", err)
	}
	return e
}

func mustFinish(tb testing.TB, l *streaming.Log) streaming.Event {
	tb.Helper()
	e, err := l.Finish(testDone)
	if err != nil {
		tb.Fatalf("Finish: %v", err)
	}
	return e
}

func decodeMsg(frame []byte) (msg, error) {
	var m msg
	if err := json.Unmarshal(frame, &m); err != nil {
		return m, fmt.Errorf("decode %s: %w", frame, err)
	}
	return m, nil
}

func hasFinalRaw(frames [][]byte) bool {
	for _, f := range frames {
		if m, err := decodeMsg(f); err == nil && (m.Type == streaming.TypeDone || m.Type == streaming.TypeError) {
			return true
		}
	}
	return false
}

package streaming

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// writeLog is a net.Conn that records each Write it is given.
type writeLog struct {
	net.Conn // nil: only Write and Close are called
	mu       sync.Mutex
	writes   []string
	closed   bool
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, net.ErrClosed
	}
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func (w *writeLog) Close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	return nil
}

// take returns the writes so far and forgets them.
func (w *writeLog) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	got := w.writes
	w.writes = nil
	return got
}

// frame is a server frame as coder/websocket writes it: header, then payload.
func frame(opcode byte, payload string) []byte {
	h := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		h = append(h, byte(n))
	case n <= 0xffff:
		h = binary.BigEndian.AppendUint16(append(h, 126), uint16(n))
	default:
		h = binary.BigEndian.AppendUint64(append(h, 127), uint64(n))
	}
	return append(h, payload...)
}

// writeMessages frames each message as one unmasked final text frame, of
// every length encoding, and hands the socket the lot in one write; a
// message too large to copy goes as its own buffer of a writev(2).
func TestBatchConnFramesMessages(t *testing.T) {
	log := &writeLog{}
	c := newBatchConn(log)
	mid, big := strings.Repeat("m", 200), strings.Repeat("b", maxCopied+1)
	small := [][]byte{[]byte("hi"), []byte(mid), nil}
	if err := c.writeMessages(small); err != nil {
		t.Fatal(err)
	}
	want := string(bytes.Join([][]byte{frame(1, "hi"), frame(1, mid), frame(1, "")}, nil))
	if got := log.take(); len(got) != 1 || got[0] != want {
		t.Fatalf("wrote %.60q, want one write %.60q", got, want)
	}
	if err := c.writeMessages([][]byte{[]byte("a"), []byte(big), []byte("z")}); err != nil {
		t.Fatal(err)
	}
	// writeLog has no writev: net.Buffers writes its three buffers in turn.
	got := log.take()
	want3 := []string{string(frame(1, "a")) + string(frame(1, big)[:10]), big, string(frame(1, "z"))}
	if strings.Join(got, "|") != strings.Join(want3, "|") {
		t.Fatalf("wrote %d pieces %.40q, want %.40q", len(got), got, want3)
	}
	if err := c.writeMessages(nil); err != nil || len(log.take()) != 0 {
		t.Fatalf("no frames: %v", err)
	}
}

// Write follows coder/websocket's frames however they are cut, so that
// messages go between two frames only, and none after a close frame.
func TestBatchConnFollowsFrames(t *testing.T) {
	long := strings.Repeat("x", 300)
	huge := strings.Repeat("y", 70000)
	masked := append([]byte{0x81, 0x80 | 3, 1, 2, 3, 4}, "abc"...)
	stream := bytes.Join([][]byte{frame(9, "ping"), frame(1, long), masked, frame(10, ""), frame(2, huge)}, nil)
	ends := map[int]bool{} // offsets in stream where a frame ends
	off := 0
	for _, f := range [][]byte{frame(9, "ping"), frame(1, long), masked, frame(10, ""), frame(2, huge)} {
		off += len(f)
		ends[off] = true
	}
	for _, cut := range []int{1, 2, 3, 7, 4096} {
		c := newBatchConn(&writeLog{})
		for i := 0; i < len(stream); i += cut {
			j := min(i+cut, len(stream))
			if _, err := c.Write(stream[i:j]); err != nil {
				t.Fatal(err)
			}
			if at := c.atBoundary(); at != ends[j] {
				t.Fatalf("cut %d: after byte %d between frames = %v, want %v", cut, j, at, ends[j])
			}
		}
		if c.closing {
			t.Fatalf("cut %d: no close frame was written", cut)
		}
		if _, err := c.Write(frame(8, "\x03\xe8bye")); err != nil {
			t.Fatal(err)
		}
		if err := c.writeMessages([][]byte{[]byte("late")}); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("cut %d: a message after the close frame: %v", cut, err)
		}
	}
}

// Between the frames of a fragmented message (a data frame without FIN,
// control frames, continuations) no message may go; after its last
// continuation one may.
func TestBatchConnFragmentedMessage(t *testing.T) {
	c := newBatchConn(&writeLog{})
	first := []byte{0x01, 3, 'a', 'b', 'c'} // text, no FIN
	cont := []byte{0x00, 2, 'd', 'e'}       // continuation, no FIN
	last := []byte{0x80, 1, 'f'}            // continuation, FIN
	for i, f := range [][]byte{first, frame(9, "p"), cont, frame(10, ""), last} {
		c.Write(f)
		if want := i == 4; c.atBoundary() != want {
			t.Fatalf("after frame %d: a message may go = %v, want %v", i, !want, want)
		}
	}
}

// A message waits for a frame written in pieces to end; Close wakes a
// message waiting for a frame that will not end.
func TestBatchConnWaitsForFrameEnd(t *testing.T) {
	log := &writeLog{}
	c := newBatchConn(log)
	f := frame(1, strings.Repeat("z", 1000))
	c.Write(f[:500])
	done := make(chan error, 1)
	go func() { done <- c.writeMessages([][]byte{[]byte("mine")}) }()
	select {
	case err := <-done:
		t.Fatalf("the message went inside a frame: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	c.Write(f[500:])
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []string{string(f[:500]), string(f[500:]), string(frame(1, "mine"))}
	if got := log.take(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("writes %.30q, want %.30q", got, want)
	}

	c.Write(f[:10])
	go func() { done <- c.writeMessages([][]byte{[]byte("never")}) }()
	time.Sleep(10 * time.Millisecond)
	c.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if got := log.take(); len(got) != 1 {
		t.Fatalf("writes after the cut frame: %.30q", got)
	}
}

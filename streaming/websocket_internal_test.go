package streaming

import (
	"net"
	"strings"
	"testing"
)

// writeLog is a net.Conn that records each Write it is given.
type writeLog struct {
	net.Conn // nil: only Write is called
	writes   []string
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

// A batchConn passes writes straight through outside a batch, hands the
// socket a whole batch in one write, and writes what it holds before a
// write that would overflow it, in order.
func TestBatchConnWrites(t *testing.T) {
	log := &writeLog{}
	c := &batchConn{Conn: log}
	write := func(s string) {
		t.Helper()
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%.10q) = %d, %v", s, n, err)
		}
	}
	expect := func(want ...string) {
		t.Helper()
		if strings.Join(log.writes, "|") != strings.Join(want, "|") {
			t.Fatalf("socket writes %.60q, want %.60q", log.writes, want)
		}
		log.writes = nil
	}

	write("a")
	write("b")
	expect("a", "b")

	c.hold()
	write("c")
	write("d")
	write("e")
	expect() // held
	if err := c.release(); err != nil {
		t.Fatal(err)
	}
	expect("cde")
	write("f")
	expect("f")

	big := strings.Repeat("x", maxHeld)
	c.hold()
	write("g")
	write(big) // g and big do not fit together: both go now, g first
	write("h")
	if err := c.release(); err != nil {
		t.Fatal(err)
	}
	expect("g", big, "h") // to a socket, g and big are one writev(2)
}

// An empty batch writes nothing.
func TestBatchConnEmptyBatch(t *testing.T) {
	log := &writeLog{}
	c := &batchConn{Conn: log}
	c.hold()
	if err := c.release(); err != nil {
		t.Fatal(err)
	}
	if len(log.writes) != 0 {
		t.Fatalf("writes %q", log.writes)
	}
}

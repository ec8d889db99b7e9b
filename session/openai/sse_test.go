package openai

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

// FuzzSSEFilter reads any input through the filter, a byte at a time from
// the body and in small reads from it, and checks what it hands on against
// the rules of its type doc applied line by line.
func FuzzSSEFilter(f *testing.F) {
	for _, s := range []string{
		"data: {}\n\ndata: [DONE]\n\n",
		": keep-alive\n\nevent: x\nid: 1\nretry: 5\ndata:{\"a\":1}\n",
		"  \t\r\n{\"error\":{\"message\":\"boom\"}}\ndata:[DONE]",
		"data: partial",
		"\n\n\n:\n:x\n  data: y\r\n",
		"data: {\"error\":{\"message\":\"x\"}}\n: ping\nid: 2\n",
		"\xEF\xBB\xBFdata: {}\n\n",
		"\xEF\xBB\xBF\xEF\xBB\xBFdata: {}\n\n",
		"{\"error\":{\"message\":\"boom\"}}",
		"data: {}\n\ndata: {\"error\":{\"message\":\"x\"}}",
		"data: {\"choices\":[]",
		"data: {}\r\rdata: {\"error\":{}}\r: x\r\n\r\n\r\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var done bool
		r := newSSEFilter(io.NopCloser(iotest.OneByteReader(bytes.NewReader(in))), &done)
		var got []byte
		buf := make([]byte, 3)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
		}
		want, wantDone := referenceFilter(in)
		if !bytes.Equal(got, want) || done != wantDone {
			t.Fatalf("filter(%q) = %q, done %v; want %q, done %v", in, got, done, want, wantDone)
		}
	})
}

// referenceFilter applies the filter's rules to in, whole lines at a time.
func referenceFilter(in []byte) (out []byte, done bool) {
	in = bytes.TrimPrefix(in, []byte("\xEF\xBB\xBF")) // one, at the start
	in = bytes.ReplaceAll(in, []byte("\r\n"), []byte("\n"))
	in = bytes.ReplaceAll(in, []byte("\r"), []byte("\n"))
	afterError, passed := false, false
	for len(in) > 0 {
		i := bytes.IndexByte(in, '\n') + 1
		if i == 0 {
			i = len(in)
		}
		line := in[:i]
		in = in[i:]
		ended := line[len(line)-1] == '\n'
		rest := bytes.TrimLeft(line, " \t")
		wasError := afterError
		afterError = false
		switch {
		case len(bytes.TrimSpace(rest)) == 0:
			if ended && passed { // it ends an event that passed
				out = append(out, '\n')
				passed = false
			}
		case rest[0] == ':', bytes.HasPrefix(rest, []byte("event:")),
			bytes.HasPrefix(rest, []byte("id:")), bytes.HasPrefix(rest, []byte("retry:")):
			if ended && wasError { // it releases the error event's error
				out = append(out, '\n')
				passed = false
			}
		default:
			passed = true
			payload, data := bytes.CutPrefix(rest, []byte("data:"))
			if data {
				payload = bytes.TrimLeft(payload, " \t\r\n")
				done = done || string(bytes.TrimSpace(payload)) == "[DONE]"
				afterError = bytes.HasPrefix(payload, []byte(`{"error":`))
			}
			out = append(out, line...)
			if !ended && (!data || afterError) { // the last line, an error
				out = append(out, '\n')
			}
		}
	}
	return out, done
}

// A stream that starts with a byte order mark keeps its first line: the
// mark is dropped, as the event stream format says. It used to make the
// first line unreadable, and its chunk was lost.
func TestSSEFilterDropsByteOrderMark(t *testing.T) {
	var done bool
	r := newSSEFilter(io.NopCloser(bytes.NewReader([]byte("\xEF\xBB\xBFdata: {\"a\":1}\n\ndata: [DONE]\n\n"))), &done)
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := "data: {\"a\":1}\n\ndata: [DONE]\n\n"; string(got) != want || !done {
		t.Fatalf("filter handed on %q (done %v), want %q", got, done, want)
	}
}

// Every line ending of the event stream format, "\r\n", "\n" or a lone
// "\r", is handed on as "\n"; a "\r\n" split across two reads (here every
// one is: the body gives a byte a time) is one line ending, not two.
func TestSSEFilterLineEndings(t *testing.T) {
	in := "data: {\"a\":1}\r\ndata: {\"b\":2}\r\n\r\ndata: {\"c\":3}\r\r: ping\r\revent: x\r\ndata: {\"d\":4}\n\r\n{\"error\":{}}\r"
	var done bool
	r := newSSEFilter(io.NopCloser(iotest.OneByteReader(bytes.NewReader([]byte(in)))), &done)
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := "data: {\"a\":1}\ndata: {\"b\":2}\n\ndata: {\"c\":3}\n\ndata: {\"d\":4}\n\n{\"error\":{}}\n"; string(got) != want {
		t.Fatalf("filter handed on %q, want %q", got, want)
	}
}

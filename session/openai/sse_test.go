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
	for len(in) > 0 {
		i := bytes.IndexByte(in, '\n') + 1
		if i == 0 {
			i = len(in)
		}
		line := in[:i]
		in = in[i:]
		rest := bytes.TrimLeft(line, " \t")
		switch {
		case len(bytes.TrimSpace(rest)) == 0:
			if line[len(line)-1] == '\n' {
				out = append(out, '\n')
			}
		case rest[0] == ':', bytes.HasPrefix(rest, []byte("event:")),
			bytes.HasPrefix(rest, []byte("id:")), bytes.HasPrefix(rest, []byte("retry:")):
		default:
			if bytes.HasPrefix(rest, []byte("data:")) && string(bytes.TrimSpace(rest[5:])) == "[DONE]" {
				done = true
			}
			out = append(out, line...)
		}
	}
	return out, done
}

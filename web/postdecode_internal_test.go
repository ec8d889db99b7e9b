package web

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"sessiond/session"
)

// FuzzPostRequestDecoders holds parsePostRequest to decodeStrict (the
// encoding/json decoder every other body goes through): the same request,
// or the same status and error code.
func FuzzPostRequestDecoders(f *testing.F) {
	for _, s := range []string{
		`{"turns":[{"role":"user","content":"hi"}]}`,
		`{"turns":[{"role":"tool","tool_call_id":"c1","content":[{"type":"text","text":"x"}]}],"generate":true,"model":"m","parent_id":7}`,
		`{"Turns":[{"ROLE":"user","Content":"x"}],"GENERATE":false}`, `{"turnſ":[]}`,
		`{"turns":null,"generate":null,"model":null,"parent_id":null}`, `{"turns":[null,{"role":null,"content":null}]}`,
		`{"turns":[{"role":"user","content":"a"}],"turns":[{"role":"tool","content":"b"}]}`,
		`{"turns":[1]}`, `{"turns":{}}`, `{"turns":[{"x":1}]}`, `{"extra":1}`, `{"generate":"yes"}`, `{"model":5}`,
		`{"parent_id":1.5}`, `{"parent_id":1e2}`, `{"parent_id":-0}`, `{"parent_id":99999999999999999999}`, `{"parent_id":"1"}`,
		`{"turns":[{"role":"user","content":"x"}]} {}`, `{"turns":[]} x`, `{} `, ` null `, `null`, `[]`, `"x"`, `1`,
		``, `  `, "\v", `{`, `{"turns":[`, `{"a":"\x"}`, `{"turns":[{"role":"us\u0065r","content":"\ud800"}]}`,
		`{"turns":[1,{"x":1}]}`, `{"x":1,"turns":[1]}`, `{"turns":[{"role":1,"x":2}]}`,
		`{"turns":[{"role":"user","content":"x"}],"root":true}`, `{"ROOT":false,"root":null}`, `{"root":1}`, `{"root":"true"}`,
		"{\"turns\":[{\"role\":\"user\",\"content\":\"raw \xff\xfe bytes\"}],\"generate\":true}",
		"{\"turns\":[{\"role\":\"user\",\"content\":\"日本\"}],\"model\":\"m\xe6\x97\"}", "{\"turns\":1,\"model\":\"\xc0\xaf\"}",
		"{\"turns\":[]} \xff", "\xff", "{\"t\xffurns\":[]}", "{\"turns\":[{\"role\":\"user\",\"content\":\"\xed\xa0\x80\"}]}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var want, got session.PostRequest
		werr := decodeStrict(bytes.NewReader(body), &want)
		gerr := parsePostRequest(body, &got)
		var wa, ga *apiError
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%q: decodeStrict %v, parsePostRequest %v", body, werr, gerr)
		}
		if werr != nil {
			if !errors.As(werr, &wa) || !errors.As(gerr, &ga) {
				t.Fatalf("%q: errors %v / %v are not answers", body, werr, gerr)
			}
			if wa.Status != ga.Status || wa.Code != ga.Code {
				t.Fatalf("%q: decodeStrict %d %s (%s), parsePostRequest %d %s (%s)", body, wa.Status, wa.Code, wa.Message, ga.Status, ga.Code, ga.Message)
			}
			return
		}
		if !utf8.Valid(body) {
			t.Fatalf("%q is not UTF-8, and both decoders took it", body)
		}
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("%q: decodeStrict %#v, parsePostRequest %#v", body, want, got)
		}
	})
}

// readBody sizes its buffer by what arrives, not by what the client
// announces; it still reads everything, and the limit still holds.
func TestReadBodyGrowsWithTheBytes(t *testing.T) {
	b, err := readBody(bytes.NewReader([]byte(`{"turns":[]}`)), 34<<20, 34<<20)
	if err != nil || string(b) != `{"turns":[]}` {
		t.Fatalf("readBody = %q, %v", b, err)
	}
	if cap(b) > 1<<20+1 {
		t.Fatalf("a 12-byte body announced as 34 MiB took a %d-byte buffer", cap(b))
	}
	big := bytes.Repeat([]byte("x"), 5<<20+3)
	b, err = readBody(bytes.NewReader(big), -1, 34<<20)
	if err != nil || !bytes.Equal(b, big) {
		t.Fatalf("readBody of 5 MiB without Content-Length: %d bytes, %v", len(b), err)
	}
	rec := httptest.NewRecorder()
	limited := http.MaxBytesReader(rec, io.NopCloser(bytes.NewReader(big)), 1<<20)
	if _, err := readBody(limited, int64(len(big)), 1<<20); !errors.As(err, new(*http.MaxBytesError)) {
		t.Fatalf("readBody over the limit: %v, want a MaxBytesError", err)
	}
}

// utf8Reader finds the first byte that is not UTF-8 however the body is
// cut into reads, passes on every byte before it, and nothing is lost of
// a valid body.
func TestUTF8Reader(t *testing.T) {
	for _, in := range []string{
		"", "plain", "é日🙂", "a\xffb", "\xff", "日\xe6\x97", "日\xe6\x97a", "\xe6\x97\xa5\xe6", "🙂\xf0\x9f\x99",
		"x\xc0\xaf", "x\xed\xa0\x80", "\xf4\x90\x80\x80", "ab\xe6", "\xef\xbf\xbd ok", strings.Repeat("日本語", 50) + "\xfe",
	} {
		want := -1
		for i := 0; i < len(in); {
			r, size := utf8.DecodeRuneInString(in[i:])
			if r == utf8.RuneError && size == 1 {
				want = i
				break
			}
			i += size
		}
		for chunk := 1; chunk <= 6; chunk++ {
			var rd io.Reader = &utf8Reader{r: iotest.HalfReader(&chunkReader{s: in, n: chunk})}
			got, err := io.ReadAll(rd)
			var ue *utf8Error
			switch {
			case want < 0 && (err != nil || string(got) != in):
				t.Errorf("%q in reads of %d: %q, %v; want it all", in, chunk, got, err)
			case want >= 0 && (!errors.As(err, &ue) || ue.Offset != int64(want) || !strings.HasPrefix(in, string(got)) || len(got) > want+4):
				t.Errorf("%q in reads of %d: %q, %v; want a utf8Error at %d", in, chunk, got, err, want)
			}
		}
	}
}

// chunkReader reads s n bytes at a time.
type chunkReader struct {
	s string
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.s == "" {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.s)
	c.s = c.s[k:]
	return k, nil
}

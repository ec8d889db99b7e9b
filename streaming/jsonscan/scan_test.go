package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

var seeds = []string{
	`{}`, `[]`, ` {"a":1} `, `{"type":"send","turns":[{"role":"user","content":"hi"}]}`,
	`{"a":"\u00e9\n\"\\\/\b\f\r\t","b":[1,-0.5e+3,true,false,null,{}],"c":{"d":[]}}`,
	`{"a":1,"a":2}`, `{"\u0041":1}`, `{"k\u00e9y":"v"}`, "{\"\xff\":1}", "[\"\xff\xfe\"]",
	`[1,2,3]`, `[ 1 , [ 2 ] ]`, `"str"`, `12`, `null`, `true`,
	`{"a":1,}`, `[1,]`, `{"a" 1}`, `{a:1}`, `{"a":01}`, `{"a":1.}`, `{"a":1e}`, `{"a":-}`,
	`{"a":"\x"}`, `{"a":"\u12g4"}`, "{\"a\":\"\x01\"}", `{"a":tru}`, `{"a":nul}`, `{} {}`,
	`{"a":"unterminated`, `[`, `{`, ``, ` `, `{"a":[1,2}`, `[{"a":1]`,
	`{"a":"` + strings.Repeat("abcdefgh", 40) + `\"` + strings.Repeat("x", 13) + `"}`,
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	// UTF-8: valid runes of each length, then what RFC 8259 refuses and
	// encoding/json lets through: a stray byte, a cut rune, an overlong
	// form, a surrogate, a rune past U+10FFFF; at and across 8-byte
	// boundaries of the fast loop.
	`{"a":"é日🙂","日本":["ü"]}`, `["` + strings.Repeat("日本語", 9) + `"]`,
	"{\"a\":\"\xff\"}", "[\"x\xe2\x82\"]", "[\"\xc0\xaf\"]", "[\"\xed\xa0\x80\"]", "[\"\xf4\x90\x80\x80\"]",
	"[\"1234567\xe6\x97\xa5\xff\"]", "[\"" + strings.Repeat("a", 13) + "\xfe\"]", "[\"\xe6\x97\"]", "{\"a\":\"\xe6\x97",
	"[1,\xff]", "\xef\xbb\xbf{}",
}

// FuzzObject holds Object to encoding/json: it accepts exactly what
// json.Unmarshal into a map of raw messages accepts, with the same members.
func FuzzObject(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want map[string]json.RawMessage
		werr := json.Unmarshal(data, &want)
		got := map[string][]byte{}
		err := Object(data, func(k string, v []byte) error {
			got[k] = v
			return nil
		})
		var se *json.SyntaxError
		switch {
		case json.Valid(data) && !utf8.Valid(data):
			// encoding/json takes raw bytes such as 0xff in a string;
			// RFC 8259 and jsonscan do not.
			if !errors.Is(err, ErrInvalidUTF8) {
				t.Fatalf("invalid UTF-8; Object: %v, want ErrInvalidUTF8", err)
			}
		case werr != nil && (errors.As(werr, &se) || strings.Contains(werr.Error(), "unexpected end")):
			var mine *SyntaxError
			if !errors.As(err, &mine) {
				t.Fatalf("encoding/json: %v; Object: %v, want a SyntaxError", werr, err)
			}
		case werr != nil || want == nil: // valid JSON, not an object
			if !errors.Is(err, ErrNotObject) {
				t.Fatalf("encoding/json: %v (map %v); Object: %v, want ErrNotObject", werr, want, err)
			}
		default:
			if err != nil {
				t.Fatalf("Object: %v; encoding/json accepted it", err)
			}
			if len(got) != len(want) {
				t.Fatalf("Object found %d keys, encoding/json %d", len(got), len(want))
			}
			for k, w := range want {
				if !bytes.Equal(got[k], w) {
					t.Fatalf("key %q: Object %q, encoding/json %q", k, got[k], w)
				}
			}
		}
		if (Valid(data) == nil) != (json.Valid(data) && utf8.Valid(data)) {
			t.Fatalf("Valid: %v, json.Valid: %v, utf8.Valid: %v", Valid(data), json.Valid(data), utf8.Valid(data))
		}
		checkUTF8Offset(t, data, err)
	})
}

// FuzzArray holds Array to json.Unmarshal into a slice of raw messages.
func FuzzArray(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want []json.RawMessage
		werr := json.Unmarshal(data, &want)
		var got [][]byte
		err := Array(data, func(i int, v []byte) error {
			if i != len(got) {
				t.Fatalf("element index %d, want %d", i, len(got))
			}
			got = append(got, v)
			return nil
		})
		switch {
		case json.Valid(data) && !utf8.Valid(data):
			if !errors.Is(err, ErrInvalidUTF8) {
				t.Fatalf("invalid UTF-8; Array: %v, want ErrInvalidUTF8", err)
			}
			checkUTF8Offset(t, data, err)
		case !json.Valid(data):
			var mine *SyntaxError
			if !errors.As(err, &mine) {
				t.Fatalf("invalid JSON; Array: %v, want a SyntaxError", err)
			}
		case werr != nil || want == nil && !bytes.Equal(bytes.TrimSpace(data), []byte("[]")):
			if !errors.Is(err, ErrNotArray) {
				t.Fatalf("encoding/json: %v; Array: %v, want ErrNotArray", werr, err)
			}
		default:
			if err != nil {
				t.Fatalf("Array: %v; encoding/json accepted it", err)
			}
			if len(got) != len(want) {
				t.Fatalf("Array found %d elements, encoding/json %d", len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("element %d: Array %q, encoding/json %q", i, got[i], want[i])
				}
			}
		}
	})
}

// checkUTF8Offset: an ErrInvalidUTF8 of otherwise valid JSON is at the
// first byte that does not decode.
func checkUTF8Offset(t *testing.T, data []byte, err error) {
	t.Helper()
	if !json.Valid(data) || utf8.Valid(data) {
		return
	}
	want := 0
	for {
		r, size := utf8.DecodeRune(data[want:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		want += size
	}
	var se *SyntaxError
	if !errors.As(err, &se) || !errors.Is(err, ErrInvalidUTF8) || se.Offset != want {
		t.Fatalf("%q: %v, want ErrInvalidUTF8 at offset %d", data, err, want)
	}
}

func TestStopsAtCallbackError(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := Object([]byte(`{"a":1,"b":2,"c":`), func(k string, v []byte) error {
		n++
		if k == "b" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Fatalf("err %v after %d members, want stop after 2", err, n)
	}
}

func TestValuesAliasInput(t *testing.T) {
	data := []byte(`{"content":"` + strings.Repeat("a", 1000) + `"}`)
	err := Object(data, func(k string, v []byte) error {
		if &v[0] != &data[len(`{"content":`)] {
			t.Error("the value was copied")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSyntaxErrorOffset(t *testing.T) {
	err := Valid([]byte(`{"a": [1, 2,, 3]}`))
	var se *SyntaxError
	if !errors.As(err, &se) || se.Offset != 12 {
		t.Fatalf("err %v, want a SyntaxError at offset 12", err)
	}
}

// BenchmarkObjectLarge splits a 32 MiB message, against encoding/json.
func BenchmarkObjectLarge(b *testing.B) {
	msg := []byte(`{"type":"send","idempotency_key":"k","turns":[{"role":"user","content":"` +
		strings.Repeat("abcdefghijklmnopqrstuvwxyz", 32<<20/26) + `"}]}`)
	b.Run("jsonscan", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if err := Object(msg, func(string, []byte) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(msg, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestFirst(t *testing.T) {
	for _, c := range []struct {
		in  string
		end int
		ok  bool
	}{{` {"a":1} {"b":2}`, 8, true}, {`[1] x`, 3, true}, {`  7`, 3, true}, {`{"a":`, 0, false}, {``, 0, false}, {`x`, 0, false}} {
		end, err := First([]byte(c.in))
		if (err == nil) != c.ok || (c.ok && end != c.end) {
			t.Errorf("First(%q) = %d, %v; want %d, ok=%v", c.in, end, err, c.end, c.ok)
		}
	}
}

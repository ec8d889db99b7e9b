package web

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"strings"
	"unicode/utf8"

	"sessiond/streaming"
	"sessiond/streaming/jsonscan"
)

// decodeJSON reads exactly one JSON value from r's body, at most limit
// bytes (see openBody), into v, refusing unknown fields, wrong types,
// trailing data and bodies over limit.
func (a *api) decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	body := a.openBody(w, r, limit)
	defer body.release()
	return decodeStrict(body, v)
}

// decodeOptional is decodeJSON where an empty body (or one of white space
// alone) means {}.
func (a *api) decodeOptional(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	rb := a.openBody(w, r, limit)
	defer rb.release()
	body := bufio.NewReader(rb)
	for {
		b, err := body.Peek(1)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil || !jsonscan.IsSpace(b[0]) {
			break
		}
		body.Discard(1)
	}
	return decodeStrict(body, v)
}

func decodeStrict(body io.Reader, v any) error {
	// Read whole (json.Decoder holds the whole value too), so that its
	// members can be checked as sent after the decode.
	var data bytes.Buffer
	dec := json.NewDecoder(io.TeeReader(&utf8Reader{r: body}, &data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var se *json.SyntaxError
		if err == nil || errors.As(err, &se) {
			return errorf(http.StatusBadRequest, "invalid_json", "the body holds more than one JSON value")
		}
		return decodeError(err) // the body's read failed: too large, too slow, over the budget
	}
	return checkMembers(data.Bytes(), v)
}

// checkMembers refuses what encoding/json lets by in an object body
// decoded into v, a pointer to a struct: a member named in another case
// than the field's ("Title": the API's names are exact, as the turns'
// and the WebSocket's decoders hold them), and a member given twice (the
// last would win silently, where a proxy or validator may read the
// first).
func checkMembers(data []byte, v any) error {
	t := reflect.TypeOf(v)
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	names := map[string]bool{}
	for f := range t.Elem().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names[name] = true
	}
	seen := map[string]bool{}
	err := jsonscan.Object(data, func(k string, _ []byte) error {
		if seen[k] {
			return duplicateField(k)
		}
		seen[k] = true
		if !names[k] {
			return unknownField(k)
		}
		return nil
	})
	var ae *apiError
	if errors.As(err, &ae) {
		return err
	}
	return nil // decoded already: not an object (null), nothing to check
}

func decodeError(err error) error {
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var ue *utf8Error
	switch {
	case errors.As(err, &ue):
		return errNotUTF8(ue.Offset)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errSlowBody()
	case errors.Is(err, errOverBudget):
		return errOverBudget
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "the body is over %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		return errorf(http.StatusBadRequest, "invalid_json", "the body is empty; send a JSON object")
	case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(http.StatusBadRequest, "invalid_json", "malformed JSON: %v", err)
	case errors.As(err, &te):
		return typeError(te.Field, streaming.JSONKind(te.Type))
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return errorf(http.StatusBadRequest, "invalid_request", "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return errorf(http.StatusBadRequest, "invalid_json", "malformed JSON: %v", err)
}

// errNotUTF8 is the answer to a body that is not UTF-8 from offset on.
// JSON text must be (RFC 8259); encoding/json would let raw bytes through
// (as they are in a json.RawMessage such as metadata, as U+FFFD in a
// string), to be served back to clients that refuse them.
func errNotUTF8(offset int64) error {
	return errorf(http.StatusBadRequest, "invalid_json", "the body is not valid UTF-8 at byte offset %d", offset)
}

// utf8Error is a body that is not UTF-8 from Offset on.
type utf8Error struct{ Offset int64 }

func (e *utf8Error) Error() string { return fmt.Sprintf("invalid UTF-8 at byte offset %d", e.Offset) }

// utf8Reader passes r's bytes on as they are read, checking that they are
// UTF-8: encoding/json's decoder, which scans them, does not. A read with
// an invalid byte passes on the bytes up to it and returns a *utf8Error
// (the decoder looks at the bytes first, then the error). A rune cut by
// the end of a read is passed on and finished with the next read's bytes:
// its bytes are at or above 0x80, which JSON allows only in a string, so
// the decoder wants more (the string's end) before it has a value.
type utf8Reader struct {
	r     io.Reader
	off   int64   // the bytes passed on
	part  [4]byte // the start of a cut rune, passed on already
	npart int
	err   error // sticky
}

func (u *utf8Reader) Read(p []byte) (int, error) {
	if u.err != nil {
		return 0, u.err
	}
	n, err := u.r.Read(p)
	b := p[:n]
	if u.npart > 0 && n > 0 {
		k := copy(u.part[u.npart:4], b) // up to a whole rune's worth
		tmp := u.part[:u.npart+k]
		if r, size := utf8.DecodeRune(tmp); utf8.FullRune(tmp) {
			if r == utf8.RuneError && size == 1 {
				u.err = &utf8Error{Offset: u.off - int64(u.npart)}
				return 0, u.err // its first byte is passed on already
			}
			b, u.npart = b[size-u.npart:], 0
		} else { // still cut: a read of a byte or two
			b, u.npart = nil, u.npart+k
		}
	}
	if len(b) > 0 {
		bad, cut := checkUTF8(b)
		if bad >= 0 {
			// The bad byte is passed on too: where JSON allows no such
			// byte (after a number: "0\x8d"), the decoder ends the value
			// there, or refuses it, as the byte comes in order; in a
			// string, it reads on, and gets this error.
			done := n - len(b) + bad
			u.err = &utf8Error{Offset: u.off + int64(done)}
			return done + 1, u.err
		}
		u.npart = copy(u.part[:], b[len(b)-cut:])
	}
	u.off += int64(n)
	if errors.Is(err, io.EOF) && u.npart > 0 {
		u.err = &utf8Error{Offset: u.off - int64(u.npart)}
		return n, u.err
	}
	return n, err
}

// checkUTF8 returns the offset of the first byte of b that is not UTF-8
// (bad), or -1 and the length of a rune cut at b's end (cut, 0 to 3).
func checkUTF8(b []byte) (bad, cut int) {
	j := len(b) // where a rune cut at the end starts
	for k := len(b) - 1; k >= 0 && k >= len(b)-3; k-- {
		if utf8.RuneStart(b[k]) {
			if !utf8.FullRune(b[k:]) {
				j = k
			}
			break
		}
	}
	if utf8.Valid(b[:j]) {
		return -1, len(b) - j
	}
	for i := 0; i < j; {
		r, size := utf8.DecodeRune(b[i:j])
		if r == utf8.RuneError && size == 1 {
			return i, 0
		}
		i += size
	}
	return -1, len(b) - j // unreachable: b[:j] was not valid
}

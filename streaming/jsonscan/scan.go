package jsonscan

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// ErrNotObject and ErrNotArray: the input is valid JSON, but not of the
// kind asked for.
var (
	ErrNotObject = errors.New("jsonscan: not a JSON object")
	ErrNotArray  = errors.New("jsonscan: not a JSON array")
)

// ErrInvalidUTF8 is what a *SyntaxError wraps when the input is not
// valid UTF-8 at its offset: errors.Is(err, ErrInvalidUTF8) tells it
// from other malformed JSON.
var ErrInvalidUTF8 = errors.New("jsonscan: invalid UTF-8")

// SyntaxError is malformed JSON: what was wrong, at which byte offset.
type SyntaxError struct {
	Offset int
	msg    string
	err    error // ErrInvalidUTF8, or nil
}

func (e *SyntaxError) Error() string {
	return "jsonscan: " + e.Detail()
}

// Detail says what was wrong and where, without the package's prefix:
// "unexpected end of input at offset 9".
func (e *SyntaxError) Detail() string {
	return fmt.Sprintf("%s at offset %d", e.msg, e.Offset)
}

// Unwrap returns ErrInvalidUTF8 for input that is not UTF-8, else nil.
func (e *SyntaxError) Unwrap() error { return e.err }

func syntaxErr(off int, format string, a ...any) error {
	return &SyntaxError{Offset: off, msg: fmt.Sprintf(format, a...)}
}

// Object validates data as one JSON object (whitespace around it allowed)
// and calls fn with each member in order: its key, decoded, and its value,
// verbatim and without surrounding whitespace. value aliases data. A key
// given twice is passed twice. It returns ErrNotObject for valid JSON
// that is not an object, a *SyntaxError for malformed JSON, or the first
// error of fn (which stops the scan: the rest is not validated).
func Object(data []byte, fn func(key string, value []byte) error) error {
	return container(data, '{', ErrNotObject, func(i int) (int, error) { return scanObject(data, i, 1, fn) })
}

// Array validates data as one JSON array and calls fn with each element,
// verbatim and aliasing data, in order. It returns ErrNotArray for valid
// JSON that is not an array, a *SyntaxError for malformed JSON, or the
// first error of fn.
func Array(data []byte, fn func(i int, elem []byte) error) error {
	return container(data, '[', ErrNotArray, func(i int) (int, error) { return scanArray(data, i, 1, fn) })
}

// container is Object and Array: data must be one value opening with
// open, scanned by scan from its offset; other valid JSON is notKind.
func container(data []byte, open byte, notKind error, scan func(i int) (end int, err error)) error {
	i := skipSpace(data, 0)
	if i == len(data) {
		return syntaxErr(i, "unexpected end of input")
	}
	if data[i] != open {
		if err := Valid(data); err != nil {
			return err
		}
		return notKind
	}
	end, err := scan(i)
	if err != nil {
		return err
	}
	return trailing(data, end)
}

// Valid returns nil if data is one valid JSON value (whitespace around it
// allowed), else a *SyntaxError.
func Valid(data []byte) error {
	i := skipSpace(data, 0)
	end, err := scanValue(data, i, 0)
	if err != nil {
		return err
	}
	return trailing(data, end)
}

// First validates the JSON value at the start of data (after whitespace)
// and returns the offset just past it, or a *SyntaxError; what follows it
// is not looked at (a stream of values, or trailing data to refuse).
func First(data []byte) (end int, err error) {
	return scanValue(data, skipSpace(data, 0), 0)
}

// IsSpace reports whether c is JSON whitespace.
func IsSpace(c byte) bool { return isSpace(c) }

func trailing(data []byte, end int) error {
	if i := skipSpace(data, end); i != len(data) {
		return syntaxErr(i, "invalid character %q after top-level value", data[i])
	}
	return nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// scanValue returns the end of the value starting at b[i]; depth is the
// nesting of its container.
func scanValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return i, syntaxErr(i, "unexpected end of input")
	}
	switch c := b[i]; {
	case c == '"':
		return scanString(b, i)
	case c == '{':
		return scanObject(b, i, depth+1, nil)
	case c == '[':
		return scanArray(b, i, depth+1, nil)
	case c == '-' || ('0' <= c && c <= '9'):
		return scanNumber(b, i)
	case c == 't':
		return scanLiteral(b, i, "true")
	case c == 'f':
		return scanLiteral(b, i, "false")
	case c == 'n':
		return scanLiteral(b, i, "null")
	default:
		return i, syntaxErr(i, "invalid character %q looking for beginning of value", c)
	}
}

func scanLiteral(b []byte, i int, lit string) (int, error) {
	for j := 0; j < len(lit); j++ {
		if i+j >= len(b) {
			return i + j, syntaxErr(i+j, "unexpected end of input")
		}
		if b[i+j] != lit[j] {
			return i + j, syntaxErr(i+j, "invalid character %q in literal %s", b[i+j], lit)
		}
	}
	return i + len(lit), nil
}

func scanObject(b []byte, i, depth int, fn func(string, []byte) error) (int, error) {
	if depth > maxDepth {
		return i, syntaxErr(i, "exceeded max depth")
	}
	i = skipSpace(b, i+1) // past '{'
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) {
			return i, syntaxErr(i, "unexpected end of input")
		}
		if b[i] != '"' {
			return i, syntaxErr(i, "invalid character %q looking for beginning of object key string", b[i])
		}
		kend, err := scanString(b, i)
		if err != nil {
			return kend, err
		}
		key := b[i:kend]
		i = skipSpace(b, kend)
		if i >= len(b) {
			return i, syntaxErr(i, "unexpected end of input")
		}
		if b[i] != ':' {
			return i, syntaxErr(i, "invalid character %q after object key", b[i])
		}
		i = skipSpace(b, i+1)
		vstart := i
		i, err = scanValue(b, i, depth)
		if err != nil {
			return i, err
		}
		if fn != nil {
			if err := fn(decodeKey(key), b[vstart:i]); err != nil {
				return i, err
			}
		}
		var more bool
		if i, more, err = next(b, i, '}', "object key:value pair"); !more {
			return i, err
		}
	}
}

func scanArray(b []byte, i, depth int, fn func(int, []byte) error) (int, error) {
	if depth > maxDepth {
		return i, syntaxErr(i, "exceeded max depth")
	}
	i = skipSpace(b, i+1) // past '['
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for n := 0; ; n++ {
		start := i
		var err error
		i, err = scanValue(b, i, depth)
		if err != nil {
			return i, err
		}
		if fn != nil {
			if err := fn(n, b[start:i]); err != nil {
				return i, err
			}
		}
		var more bool
		if i, more, err = next(b, i, ']', "array element"); !more {
			return i, err
		}
	}
}

// next moves past what follows a member of an object or array (what):
// a comma (more, at the next member) or the closing byte (done, past it).
func next(b []byte, i int, closing byte, what string) (int, bool, error) {
	i = skipSpace(b, i)
	switch {
	case i >= len(b):
		return i, false, syntaxErr(i, "unexpected end of input")
	case b[i] == ',':
		return skipSpace(b, i+1), true, nil
	case b[i] == closing:
		return i + 1, false, nil
	}
	return i, false, syntaxErr(i, "invalid character %q after %s", b[i], what)
}

// Masks for the eight-bytes-at-a-time string scan.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// special reports whether any byte of x is '"', '\\', below 0x20 or
// above 0x7f (the start of a multi-byte rune, to be checked). (The usual
// bit tricks: a byte that becomes zero after XOR, or that borrows when
// 0x20 is subtracted; and the high bit itself.)
func special(x uint64) bool {
	q := x ^ (ones * '"')
	s := x ^ (ones * '\\')
	return ((q-ones)&^q|(s-ones)&^s|(x-ones*0x20)&^x|x)&highs != 0
}

// scanString returns the end of the string starting at b[i] == '"'.
func scanString(b []byte, i int) (int, error) {
	i++
	for {
		// The bulk of a large message is plain string bytes: skip them
		// eight at a time.
		for i+8 <= len(b) && !special(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		if i >= len(b) {
			return i, syntaxErr(i, "unexpected end of input in string")
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			if i+1 >= len(b) {
				return i + 1, syntaxErr(i+1, "unexpected end of input in string escape")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for j := i + 2; j < i+6; j++ {
					if j >= len(b) {
						return j, syntaxErr(j, "unexpected end of input in \\u escape")
					}
					if !isHex(b[j]) {
						return j, syntaxErr(j, "invalid character %q in \\u hexadecimal character escape", b[j])
					}
				}
				i += 6
			default:
				return i + 1, syntaxErr(i+1, "invalid character %q in string escape code", b[i+1])
			}
		case c < 0x20:
			return i, syntaxErr(i, "invalid character %q in string literal", c)
		case c < utf8.RuneSelf:
			i++
		default:
			// Non-ASCII text (CJK, emoji) comes in runs: decode the run
			// here rather than go back to the ASCII loop at each rune.
			for i < len(b) && b[i] >= utf8.RuneSelf {
				r, size := utf8.DecodeRune(b[i:])
				if r == utf8.RuneError && size == 1 {
					return i, &SyntaxError{Offset: i, msg: "invalid UTF-8 in string", err: ErrInvalidUTF8}
				}
				i += size
			}
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// scanNumber returns the end of the number starting at b[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (int, error) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return i, syntaxErr(i, "unexpected end of input in number")
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return i, syntaxErr(i, "invalid character %q in numeric literal", b[i])
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return i, syntaxErr(i, "invalid number: no digit after decimal point")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return i, syntaxErr(i, "invalid number: no digit in exponent")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i, nil
}

// decodeKey returns the value of a valid JSON string. Plain ASCII keys
// (all of sessiond's) are sliced; others go through encoding/json, for its
// exact handling of escapes (a lone surrogate's \ud800 among them).
func decodeKey(raw []byte) string {
	plain := true
	for _, c := range raw[1 : len(raw)-1] {
		if c == '\\' || c >= 0x80 {
			plain = false
			break
		}
	}
	if plain {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return string(raw[1 : len(raw)-1]) // unreachable: raw was validated
	}
	return s
}

package session

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"
)

// crockford is the base32 alphabet of session ids: sortable, no I, L, O, U.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns a new session id: 26 characters, a 48-bit millisecond time
// then 80 random bits, in Crockford base32, so ids sort by creation time.
func NewID() string { return newIDAt(time.Now()) }

func newIDAt(t time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixMilli())<<16)
	rand.Read(b[6:])
	// 128 bits → 26 base32 digits (the first carries 3 bits).
	var out [26]byte
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// ValidateID checks a client-chosen session id: 1 to 128 of A-Z a-z 0-9 _ -,
// so that it is safe in a URL path as it is.
func ValidateID(id string) error {
	if !validID(id) {
		return fmt.Errorf("%w: session id must be 1 to 128 characters of A-Z, a-z, 0-9, _ and -", ErrInvalid)
	}
	return nil
}

// validID reports whether id is 1 to 128 of A-Z a-z 0-9 _ -. Every call
// checks one (a regular expression here was 2 % of a posted turn's CPU).
func validID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// newGenerationID returns "g_" and 20 random base32 characters.
func newGenerationID() string {
	var b [13]byte
	rand.Read(b[:])
	out := make([]byte, 2, 22)
	copy(out, "g_")
	for i := 0; i < 20; i++ {
		bit := i * 5
		v := (uint16(b[bit/8])<<8 | uint16(b[bit/8+1])) >> (11 - bit%8) & 31
		out = append(out, crockford[v])
	}
	return string(out)
}

// nowMillis is the current time in UTC at the millisecond precision the
// database keeps, so that a value read back equals the one returned.
func nowMillis() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

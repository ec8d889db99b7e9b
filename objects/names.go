package objects

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"unicode"
	"unicode/utf8"
)

// MaxNameLen is the longest object or namespace name, in bytes.
const MaxNameLen = 256

// ValidateName reports whether s may name an object or a namespace: 1 to
// MaxNameLen bytes of valid UTF-8 with no control characters (C0, C1, DEL)
// and no Unicode non-characters or replacement characters. Names never reach
// the file system, so '/', '.' and the like are allowed.
func ValidateName(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrInvalidName, len(s), MaxNameLen)
	}
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			return fmt.Errorf("%w: invalid UTF-8 at byte %d", ErrInvalidName, i)
		case unicode.IsControl(r):
			return fmt.Errorf("%w: control character %U at byte %d", ErrInvalidName, r, i)
		case r >= 0xFDD0 && r <= 0xFDEF, r&0xFFFE == 0xFFFE:
			return fmt.Errorf("%w: non-character %U at byte %d", ErrInvalidName, r, i)
		}
	}
	return nil
}

// objectFile derives the relative path of a new object's database from a
// hash of (namespace, name): two levels of 256 folders, then the full hash.
// Nothing of the name itself reaches the path. The node index records the
// path, so objects created from a spare file keep their spare's path.
func objectFile(namespace, name string) string {
	h := sha256.New()
	h.Write([]byte(namespace))
	h.Write([]byte{0})
	h.Write([]byte(name))
	sum := hex.EncodeToString(h.Sum(nil))
	return filepath.Join("objects", sum[0:2], sum[2:4], sum+".db")
}

// spareFile is the relative path of a spare database file with a random id.
func spareFile(id string) string {
	return filepath.Join("objects", id[0:2], id[2:4], id+".db")
}

// randomID is 32 hex digits from crypto/rand.
func randomID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

package objects_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"sessiond/objects"
)

var nameSeeds = []string{
	"a", "session-01JD7ZK3", "日本語", "../../etc/passwd", "/abs", "a/b/c", ".", "..",
	"with space", "", "a\x00b", "\x7f", "\u0085", "\uFFFE", "\uFFFD", "\U0010FFFF",
	string([]byte{0xff, 0xfe}), strings.Repeat("x", objects.MaxNameLen), strings.Repeat("x", objects.MaxNameLen+1),
	strings.Repeat("é", objects.MaxNameLen/2),
}

// FuzzValidateName: ValidateName never panics, and a name it accepts is
// 1..MaxNameLen bytes of valid UTF-8 without control characters (so without
// NUL, which keeps the hash input of ObjectFile unambiguous).
func FuzzValidateName(f *testing.F) {
	for _, s := range nameSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := objects.ValidateName(s)
		if err != nil {
			if !errors.Is(err, objects.ErrInvalidName) {
				t.Fatalf("ValidateName(%q)=%v, not ErrInvalidName", s, err)
			}
			return
		}
		if !utf8.ValidString(s) {
			t.Fatalf("accepted invalid UTF-8 %q", s)
		}
		if len(s) < 1 || len(s) > objects.MaxNameLen {
			t.Fatalf("accepted %d bytes", len(s))
		}
		for _, r := range s {
			if unicode.IsControl(r) {
				t.Fatalf("accepted control character %U in %q", r, s)
			}
		}
	})
}

var objectPath = regexp.MustCompile(`^objects/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})\.db$`)

// FuzzObjectFile: for every valid (namespace, name), the database path is
// objects/xx/yy/<sha256 hex>.db, xx and yy the first bytes of the hash of
// namespace NUL name: nothing of the name reaches the file system.
func FuzzObjectFile(f *testing.F) {
	for _, s := range nameSeeds {
		f.Add("session", s)
		f.Add(s, "x")
	}
	f.Fuzz(func(t *testing.T, ns, name string) {
		if objects.ValidateName(ns) != nil || objects.ValidateName(name) != nil {
			return
		}
		p := filepath.ToSlash(objects.ObjectFile(ns, name))
		m := objectPath.FindStringSubmatch(p)
		if m == nil {
			t.Fatalf("ObjectFile(%q, %q)=%q: not objects/xx/yy/<64 hex>.db", ns, name, p)
		}
		sum := sha256.Sum256([]byte(ns + "\x00" + name))
		want := hex.EncodeToString(sum[:])
		if m[3] != want || m[1] != want[0:2] || m[2] != want[2:4] {
			t.Fatalf("ObjectFile(%q, %q)=%q, want the hash %s fanned out as %s/%s", ns, name, p, want, want[0:2], want[2:4])
		}
		if filepath.IsAbs(p) || filepath.Clean(p) != filepath.FromSlash(p) {
			t.Fatalf("ObjectFile(%q, %q)=%q is not a clean relative path", ns, name, p)
		}
	})
}

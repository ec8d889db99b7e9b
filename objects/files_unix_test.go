//go:build unix

package objects_test

import (
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"sessiond/objects"
)

// TestDataIsPrivate: under a umask that lets others read (022), every
// folder the runtime makes is 0700 and every file 0600: the node index,
// object databases and spares, and the -wal and -shm files beside them.
func TestDataIsPrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "data")
	rt, ns := newRuntime(t, dir, func(rt *objects.Runtime) { rt.Durability = objects.DurabilityFull })
	if err := rt.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	for _, name := range []string{"a", "b"} {
		if _, err := add(context.Background(), stub(t, ns, name), 1); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %#o, want %#o", p, got, want)
		}
		for _, suffix := range []string{"index.db", "index.db-wal", "index.db-shm", ".db", ".db-wal"} {
			if strings.HasSuffix(p, suffix) {
				seen[suffix] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"index.db", "index.db-wal", "index.db-shm", ".db", ".db-wal"} {
		if !seen[suffix] {
			t.Errorf("no file ending in %s was checked", suffix)
		}
	}
}

package objects_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sessiond/objects"
)

// TestMissingFileOfExistingObjectIsAnError: an object the index knows whose
// database file is gone fails its calls with an error saying so; it is not
// made again, empty, in its place.
// loseFile makes the counter "lost" in a runtime on dir, closes it and
// removes the object's database files, as by hand. It returns the file's
// path, relative to dir.
func loseFile(t *testing.T, dir string) string {
	t.Helper()
	ctx := context.Background()
	rt, ns := newRuntime(t, dir, nil)
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := add(ctx, stub(t, ns, "lost"), 7); err != nil {
		t.Fatal(err)
	}
	oi, err := ns.Info(ctx, "lost")
	if err != nil {
		t.Fatal(err)
	}
	rt.Close()
	path := filepath.Join(dir, oi.Path)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	return oi.Path
}

func TestMissingFileOfExistingObjectIsAnError(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, loseFile(t, dir))
	rt, ns := newRuntime(t, dir, nil)
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	n, err := get(ctx, stub(t, ns, "lost"))
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, objects.ErrMissingFile) {
		t.Fatalf("call on an object whose file is missing: n=%d err=%v, want an error wrapping fs.ErrNotExist and ErrMissingFile", n, err)
	}
	t.Logf("error: %v", err)
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the missing file was made again: %v", err)
	}
	// It can be deleted, which is what is left to do with it.
	if err := stub(t, ns, "lost").Delete(ctx); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if ok, err := ns.Exists(ctx, "lost"); ok || err != nil {
		t.Fatalf("exists after the delete: %v %v", ok, err)
	}
}

// An object of a class with RecreateMissing whose file is missing is made
// again, empty, in its place (the class holds nothing it cannot have
// again), and goes on from there, across a restart too.
func TestMissingFileOfRecreatableClassIsMadeAgain(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	lost := loseFile(t, dir)
	open := func() (*objects.Runtime, *objects.Namespace) {
		rt := objects.NewRuntime(dir)
		rt.Durability = objects.DurabilityNormal
		class := counterClass
		class.RecreateMissing = true
		ns, err := rt.Register("counter", class)
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Open(ctx); err != nil {
			t.Fatal(err)
		}
		return rt, ns
	}
	rt, ns := open()
	if n, err := get(ctx, stub(t, ns, "lost")); n != 0 || err != nil {
		t.Fatalf("call on a recreatable object whose file is missing: n=%d err=%v, want 0 (made again, empty)", n, err)
	}
	if n, err := add(ctx, stub(t, ns, "lost"), 2); n != 2 || err != nil {
		t.Fatalf("add: %d %v, want 2", n, err)
	}
	rt.Close()
	rt, ns = open()
	defer rt.Close()
	if n, err := get(ctx, stub(t, ns, "lost")); n != 2 || err != nil {
		t.Fatalf("after a restart: %d %v, want 2", n, err)
	}
	if oi, err := ns.Info(ctx, "lost"); err != nil || oi.Path != lost {
		t.Fatalf("info after: %+v %v, want the same path %s", oi, err, lost)
	}
}

// TestRecreatedNameDoesNotAdoptLeftoverFile: a deleted object's file that
// comes back at its path (a power loss undoing the unlink) is not the
// database of an object created again under the same name: that object
// starts empty.
func TestRecreatedNameDoesNotAdoptLeftoverFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	noSpares := func(rt *objects.Runtime) { rt.Spares = -1 } // new objects take the hashed path
	open := func() (*objects.Runtime, *objects.Namespace) {
		rt, ns := newRuntime(t, dir, noSpares)
		if err := rt.Open(ctx); err != nil {
			t.Fatal(err)
		}
		return rt, ns
	}
	rt, ns := open()
	if _, err := add(ctx, stub(t, ns, "reused"), 5); err != nil {
		t.Fatal(err)
	}
	oi, err := ns.Info(ctx, "reused")
	if err != nil {
		t.Fatal(err)
	}
	rt.Close() // the WAL is folded into the file
	path := filepath.Join(dir, oi.Path)
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rt, ns = open()
	if err := stub(t, ns, "reused").Delete(ctx); err != nil {
		t.Fatal(err)
	}
	rt.Close()
	if err := os.WriteFile(path, old, 0o600); err != nil { // back after a power loss
		t.Fatal(err)
	}
	rt, ns = open()
	defer rt.Close()
	n, err := get(ctx, stub(t, ns, "reused"))
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("the object made again reads %d, the deleted object's data; want 0", n)
	}
}

// A runtime whose data folder is deleted from under it (by hand) refuses
// every call once it notices, rather than answer writes as committed into
// files no one can find again; a runtime whose index is still there goes
// on.
func TestDeletedDataFolderFencesTheRuntime(t *testing.T) {
	defer objects.SetIndexWatchInterval(10 * time.Millisecond)()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	rt, ns := newRuntime(t, dir, nil)
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if _, err := add(ctx, stub(t, ns, "a"), 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // a few checks, with the index in place
	if err := rt.Fault(); err != nil {
		t.Fatalf("fault with the index in place: %v", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, "the runtime to notice", func() bool { return rt.Fault() != nil })
	if err := rt.Fault(); !errors.Is(err, objects.ErrDiskFailed) || !strings.Contains(err.Error(), "index.db") {
		t.Fatalf("fault: %v, want ErrDiskFailed naming index.db", err)
	}
	for _, name := range []string{"a", "b"} {
		if _, err := add(ctx, stub(t, ns, name), 1); !errors.Is(err, objects.ErrDiskFailed) {
			t.Fatalf("write to %s after the folder went: %v, want ErrDiskFailed", name, err)
		}
	}
}

package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sessiond/objects/natsbus"
)

// lockData holds a folder against a second lock in this process too (flock
// locks belong to the open file), until it is released.
func TestLockData(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockData(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockData(dir)
	var le *dataLockedError
	if !errors.As(err, &le) {
		t.Fatalf("second lock: %v, want a *dataLockedError", err)
	}
	if le.PID != strconv.Itoa(os.Getpid()) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second lock: %q (pid %q), want it to name %s and pid %d", err, le.PID, dir, os.Getpid())
	}
	unlock()
	unlock, err = lockData(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock()
}

// A second sessiond on a data folder that one is serving exits with code 2
// and says why, before it opens anything there; the first keeps serving.
func TestBinarySecondOnSameDataExits2(t *testing.T) {
	bin := buildBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	p := startBinary(t, bin, data)

	// The bound is for a second that starts and serves (the bug), which
	// would otherwise run until killed.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--addr", "127.0.0.1:0", "--data", data).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("second sessiond: %v, want exit code 2\n%s", err, out)
	}
	for _, want := range []string{"data folder " + data, "in use by another sessiond (pid " + strconv.Itoa(p.cmd.Process.Pid) + ")"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("second sessiond's output lacks %q:\n%s", want, out)
		}
	}
	resp, err := http.Get(p.base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first sessiond after the second tried: %s", resp.Status)
	}
}

// Whatever NATS mode, what sessiond creates in its data folder is its
// user's only. With --nats-url nothing else creates the folder first, and
// the runtime's folders and SQLite's files used to come out 0755 and 0644.
func TestBinaryDataFolderIsPrivate(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nsrv, err := natsbus.StartEmbedded(ctx, natsbus.EmbeddedOptions{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer nsrv.Close()
	data := filepath.Join(t.TempDir(), "data")
	p := startBinary(t, bin, data, "--nats-url", nsrv.ClientURL())
	var s struct{ ID string }
	if st := api(t, "POST", p.base+"/v1/sessions", nil, &s); st != http.StatusCreated {
		t.Fatalf("create session: %d", st)
	}

	seen := map[string]bool{}
	err = filepath.WalkDir(data, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			// Gone since the folder was read: a spare database's rollback
			// journal lives only while the spare maker writes its schema.
			return nil
		}
		if err != nil {
			return err
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s: mode %#o, want no access for group and others", path, perm)
		}
		rel, _ := filepath.Rel(data, path)
		seen[rel] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".", "index.db", "objects", "node-id", lockFileName} {
		if !seen[want] {
			t.Errorf("data folder lacks %s; it has %v", want, seen)
		}
	}
}

// A data folder that other users may enter is not changed, but sessiond
// warns about it at start.
func TestRunWarnsOfAnOpenDataFolder(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	var logs lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"--addr", "127.0.0.1:0", "--data", data, "--log-format", "json"}, noEnv, io.Discard, &logs)
	}()
	waitLog(t, &logs, `"msg":"listening"`, errc)
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(logs.String(), `"level":"WARN","msg":"the data folder is open to other users`) ||
		!strings.Contains(logs.String(), `"mode":"0755"`) {
		t.Fatalf("no warning about the data folder's mode in the log:\n%s", logs.String())
	}
	if fi, err := os.Stat(data); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("data folder after run: %v, %v; want its mode left at 0755", fi.Mode(), err)
	}
}

// lockedBuffer is a log destination that tests read while run writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// waitLog polls logs until they contain want; errc reports run's end.
func waitLog(t *testing.T, logs *lockedBuffer, want string, errc <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), want) {
		select {
		case err := <-errc:
			t.Fatalf("run returned %v before logging %s:\n%s", err, want, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in the log:\n%s", want, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

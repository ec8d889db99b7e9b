package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

var raceEnabled bool // set by race_test.go

func noEnv(string) string { return "" }

// watchLog reads JSON log lines from r until EOF, passes them to t.Log and
// sends the address of the "listening" line on the returned channel. done is
// closed at EOF.
func watchLog(t *testing.T, r io.Reader, watch ...func(line []byte)) (addr <-chan string, done <-chan struct{}) {
	t.Helper()
	addrc := make(chan string, 1)
	donec := make(chan struct{})
	go func() {
		defer close(donec)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			t.Log(sc.Text())
			for _, w := range watch {
				w(sc.Bytes())
			}
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				select {
				case addrc <- line.Addr:
				default:
				}
			}
		}
	}()
	return addrc, donec
}

// waitHealthy polls GET /healthz until it answers 200 with status ok.
func waitHealthy(t *testing.T, addr <-chan string, exited <-chan struct{}) string {
	t.Helper()
	var a string
	select {
	case a = <-addr:
	case <-exited:
		t.Fatal("sessiond exited before it listened")
	case <-time.After(30 * time.Second):
		t.Fatal("no listening address logged")
	}
	url := "http://" + a + "/healthz"
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			var body struct{ Status string }
			derr := json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && derr == nil && body.Status == "ok" {
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Fatalf("Content-Type=%q, want application/json", ct)
				}
				return a
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunServesHealthzAndStops(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	pr, pw := io.Pipe()
	addr, logDone := watchLog(t, pr)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-logDone }) // no t.Log after the test ends
	errc := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		errc <- run(ctx, []string{"--addr", "127.0.0.1:0", "--log-format", "json"},
			func(k string) string { return map[string]string{"SESSIOND_DATA": data}[k] }, io.Discard, pw)
		pw.Close()
		close(exited)
	}()
	waitHealthy(t, addr, exited)

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	<-logDone
	if _, err := os.Stat(filepath.Join(data, "index.db")); err != nil {
		t.Fatalf("runtime did not open in the data folder from SESSIOND_DATA: %v", err)
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--durability", "maybe"},
		{"--no-such-flag"},
		{"--max-open", "-1"},
	} {
		var ue *usageError
		err := run(context.Background(), args, noEnv, io.Discard, io.Discard)
		if !errors.As(err, &ue) {
			t.Errorf("run(%q) = %v, want a *usageError", args, err)
		}
	}
}

func TestRunHelp(t *testing.T) {
	var out strings.Builder
	if err := run(context.Background(), []string{"-h"}, noEnv, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "SESSIOND_ADDR") {
		t.Fatalf("usage on stdout lacks SESSIOND_ADDR:\n%s", out.String())
	}
}

// An address in use stops sessiond before NATS or the runtime have opened
// anything in the data folder; a data folder it made for the start is gone
// again.
func TestRunAddrInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, flag := range []string{"--addr", "--debug-addr"} {
		fresh := filepath.Join(t.TempDir(), "new", "data")
		err := run(context.Background(), []string{"--addr", "127.0.0.1:0", "--data", fresh, flag, ln.Addr().String()}, noEnv, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "listen") {
			t.Fatalf("run with %s on a busy address = %v, want a listen error", flag, err)
		}
		if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("run with %s on a busy address left the data folder it made (%v)", flag, err)
		}
		data := t.TempDir()
		args := []string{"--addr", "127.0.0.1:0", "--data", data}
		err = run(context.Background(), append(args, flag, ln.Addr().String()), noEnv, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "listen") {
			t.Fatalf("run with %s on a busy address = %v, want a listen error", flag, err)
		}
		for _, p := range []string{"index.db", "nats", "objects", "node-id"} {
			if _, err := os.Stat(filepath.Join(data, p)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("run with %s on a busy address: %s in the data folder (%v), want nothing opened", flag, p, err)
			}
		}
	}
}

// TestBinaryExitsOnSIGTERM runs the real binary as a process: it must answer
// /healthz and exit 0 promptly on SIGTERM.
func TestBinaryExitsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "sessiond")
	buildArgs := []string{"build", "-o", bin}
	if raceEnabled {
		buildArgs = append(buildArgs, "-race")
	}
	if out, err := exec.Command(goTool, append(buildArgs, ".")...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	cmd := exec.Command(bin, "--addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "SESSIOND_DATA="+filepath.Join(dir, "data"), "SESSIOND_LOG_FORMAT=json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The start-up line says what an operator needs to know.
	var start struct {
		Model  string
		Models []string
		Events string
		Auth   string
	}
	startc := make(chan struct{})
	addr, logDone := watchLog(t, stderr, func(line []byte) {
		if bytes.Contains(line, []byte(`"msg":"listening"`)) && json.Unmarshal(line, &start) == nil {
			close(startc)
		}
	})
	waited := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		<-logDone // all of stderr read before Wait closes the pipe
		waited <- cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited }) // no t.Log after the test ends
	waitHealthy(t, addr, exited)
	<-startc // before its address was sent
	if start.Model != "offline" || !slices.Equal(start.Models, []string{"offline"}) || start.Events != "embedded" || !strings.HasPrefix(start.Auth, "off") {
		t.Errorf("the listening line: %+v, want the offline model, embedded events, auth off", start)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("sessiond exited with %v after SIGTERM, want exit 0", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("sessiond still running 5s after SIGTERM")
	}
}

func TestBinaryUsageErrorExits2(t *testing.T) {
	if os.Getenv("SESSIOND_TEST_MAIN") == "1" {
		os.Args = []string{"sessiond", "--durability", "maybe"}
		main()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBinaryUsageErrorExits2$")
	cmd.Env = append(os.Environ(), "SESSIOND_TEST_MAIN=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit: %v, want code 2\n%s", err, out)
	}
	if !strings.Contains(string(out), `--durability: "maybe": want normal or full`) {
		t.Fatalf("output lacks the reason:\n%s", out)
	}
}

// "stopped" is logged once everything is closed: the runtime has folded
// its WAL files and the data folder is unlocked. It used to be logged
// before the deferred closes, which take seconds with a generation
// running, so that a script waiting for it could copy a live folder.
func TestRunLogsStoppedWhenClosed(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	var logs lockedBuffer
	w := &stoppedCheck{t: t, data: data, logs: &logs}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"--addr", "127.0.0.1:0", "--data", data, "--log-format", "json"}, noEnv, io.Discard, w)
	}()
	waitLog(t, &logs, `"msg":"listening"`, errc)
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("run: %v", err)
	}
	if !w.seen {
		t.Fatalf("no stopped line in the log:\n%s", logs.String())
	}
}

// stoppedCheck is a log destination that, while the "stopped" line is
// being written (run waits for it), checks that the data folder is closed.
type stoppedCheck struct {
	t    *testing.T
	data string
	logs *lockedBuffer
	seen bool // written by run's goroutine, read after run returned
}

func (w *stoppedCheck) Write(p []byte) (int, error) {
	if strings.Contains(string(p), `"msg":"stopped"`) {
		w.seen = true
		if _, err := os.Stat(filepath.Join(w.data, "index.db-wal")); !errors.Is(err, os.ErrNotExist) {
			w.t.Errorf("stopped logged while index.db-wal exists (%v): the runtime was still open", err)
		}
		if unlock, err := lockData(w.data); err != nil {
			w.t.Errorf("stopped logged while the data folder is locked: %v", err)
		} else {
			unlock()
		}
	}
	return w.logs.Write(p)
}

// The profiler and the embedded NATS's client port have no
// authentication: on an address that is not loopback, start-up warns and
// names the flag; on loopback it does not.
func TestUnauthenticatedListenersOffLoopbackWarn(t *testing.T) {
	for _, c := range []struct {
		args []string
		warn string // a flag the log must name; "" = no warning
	}{
		{[]string{"--debug-addr", "0.0.0.0:0"}, "--debug-addr"},
		{[]string{"--nats-listen", "0.0.0.0:0"}, "--nats-listen"},
		{[]string{"--debug-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0"}, ""},
	} {
		var logs lockedBuffer
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		args := append([]string{"--addr", "127.0.0.1:0", "--data", t.TempDir(), "--log-format", "json"}, c.args...)
		go func() { errc <- run(ctx, args, noEnv, io.Discard, &logs) }()
		waitLog(t, &logs, `"msg":"listening"`, errc)
		cancel()
		if err := <-errc; err != nil {
			t.Fatalf("%v: run: %v", c.args, err)
		}
		warned := strings.Contains(logs.String(), "not loopback")
		if c.warn == "" && warned || c.warn != "" && (!warned || !strings.Contains(logs.String(), `"flag":"`+c.warn+`"`)) {
			t.Fatalf("%v: want a warning naming %q (none if empty); log:\n%s", c.args, c.warn, logs.String())
		}
	}
}

// A credentials or TLS file of an external NATS that cannot be read is a
// usage error (exit 2) named after its setting, found before the data
// folder is made or any connection tried.
func TestRunRefusesMissingNATSFiles(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--nats-creds", filepath.Join(dir, "no.creds")}, "--nats-creds: open "},
		{[]string{"--nats-tls-ca", filepath.Join(dir, "no-ca.pem")}, "--nats-tls-ca: open "},
		{[]string{"--nats-tls-cert", filepath.Join(dir, "no-cert.pem"), "--nats-tls-key", filepath.Join(dir, "no-key.pem")}, "--nats-tls-cert: open "},
	} {
		data := filepath.Join(dir, "data")
		args := append([]string{"--nats-url", "nats://127.0.0.1:1", "--addr", "127.0.0.1:0", "--data", data}, tt.args...)
		err := run(context.Background(), args, noEnv, io.Discard, io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v (%T), want a *usageError containing %q", tt.args, err, err, tt.want)
		}
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("run(%q) made the data folder (%v)", tt.args, err)
		}
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	// startTimeout bounds a spawned server's start, until /healthz answers.
	startTimeout = 30 * time.Second
	// stopTimeout is how long a spawned server gets to stop after SIGTERM
	// before it is killed.
	stopTimeout = 20 * time.Second
)

// builder owns the sessiond binary that -spawn runs.
type builder struct {
	dir  string // temporary folder of the binary ("" when -bin was given)
	bin  string
	cpus []int // CPUs the servers it starts run on; nil = any
}

// newBuilder builds ./cmd/sessiond of the module loadgen runs in, or uses
// bin when it is set.
func newBuilder(ctx context.Context, bin string) (*builder, error) {
	if bin != "" {
		return &builder{bin: bin}, nil
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "loadgen-bin-")
	if err != nil {
		return nil, err
	}
	b := &builder{dir: dir, bin: filepath.Join(dir, "sessiond")}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", b.bin, "./cmd/sessiond")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		b.cleanup()
		return nil, fmt.Errorf("build sessiond: %v\n%s", err, out)
	}
	return b, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run loadgen -spawn inside the sessiond module (or give -bin)")
	}
	return filepath.Dir(mod), nil
}

func (b *builder) cleanup() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// serverProc is a running child sessiond.
type serverProc struct {
	cmd    *exec.Cmd
	base   string
	pid    int
	data   string // its temporary data folder
	logf   *os.File
	keep   bool
	exited chan struct{}
	logw   io.Writer
}

// start runs the binary on a free loopback port with a fresh data folder
// and args, and waits until its /healthz answers.
func (b *builder) start(ctx context.Context, args []string, keep bool, logw io.Writer) (*serverProc, error) {
	data, err := os.MkdirTemp("", "loadgen-data-")
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(data, "sessiond.log"))
	if err != nil {
		return nil, err
	}
	all := append([]string{"--addr", "127.0.0.1:0", "--data", filepath.Join(data, "db"), "--log-format", "json"}, args...)
	cmd := exec.Command(b.bin, all...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p := &serverProc{cmd: cmd, data: data, logf: logf, keep: keep, exited: make(chan struct{}), logw: logw}
	if err := startOn(cmd, b.cpus); err != nil {
		return nil, fmt.Errorf("start sessiond: %w", err)
	}
	p.pid = cmd.Process.Pid
	addr := make(chan string, 1)
	go func() {
		// Wait only after the log is read to its end (os/exec's rule).
		p.readLog(stderr, addr)
		cmd.Wait()
		close(p.exited)
	}()
	fmt.Fprintf(logw, "loadgen: started sessiond pid %d: %s\n", p.pid, strings.Join(all, " "))
	if err := p.waitReady(ctx, addr); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// readLog copies the server's log to its file and reports the address of
// its "listening" line.
func (p *serverProc) readLog(r io.Reader, addr chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		line := sc.Bytes()
		p.logf.Write(append(line, '\n'))
		if sent {
			continue
		}
		var l struct{ Msg, Addr string }
		if json.Unmarshal(line, &l) == nil && l.Msg == "listening" && l.Addr != "" {
			addr <- l.Addr
			sent = true
		}
	}
}

func (p *serverProc) waitReady(ctx context.Context, addr <-chan string) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	select {
	case a := <-addr:
		p.base = "http://" + a
	case <-p.exited:
		return fmt.Errorf("sessiond exited at start; see %s", p.logf.Name())
	case <-ctx.Done():
		return fmt.Errorf("sessiond did not start: %w", ctx.Err())
	}
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", p.base+"/healthz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sessiond /healthz: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM, waits (then kills) and removes the data folder
// unless it is to be kept.
func (p *serverProc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		fmt.Fprintf(p.logw, "loadgen: sessiond pid %d did not stop in %s; killing it\n", p.pid, stopTimeout)
		p.cmd.Process.Kill()
		<-p.exited
	}
	p.logf.Close()
	if p.keep {
		fmt.Fprintf(p.logw, "loadgen: kept %s\n", p.data)
		return
	}
	os.RemoveAll(p.data)
}

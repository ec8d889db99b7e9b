package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"time"
)

// common holds the flags every subcommand has.
type common struct {
	url         string
	pid         int
	spawn       bool
	bin         string
	durability  string
	offlineTPS  string
	idleTimeout string
	serverArgs  string
	n           int
	duration    time.Duration
	json        bool
	keepData    bool
	pin         bool
}

// serverCPUs returns the CPUs a spawned server runs on: CPU 0 with -pin,
// else any (nil).
func (c *common) serverCPUs() []int {
	if c.pin {
		return []int{0}
	}
	return nil
}

// loadgenCPUs returns the CPUs loadgen keeps to with -pin: all but CPU 0.
func loadgenCPUs() []int {
	var cpus []int
	for i := 1; i < runtime.NumCPU(); i++ {
		cpus = append(cpus, i)
	}
	return cpus
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", "", "base URL of a running sessiond, e.g. http://127.0.0.1:8080 (or use -spawn)")
	fs.IntVar(&c.pid, "pid", 0, "with -url: the server's process id, for the CPU and memory readings of gens and idle")
	fs.BoolVar(&c.spawn, "spawn", false, "build ./cmd/sessiond once and run it as a child process, one per -durability value")
	fs.StringVar(&c.bin, "bin", "", "with -spawn: use this sessiond binary instead of building one")
	fs.StringVar(&c.durability, "durability", "full", "with -spawn: comma-separated durability modes to run in turn (normal, full; full is sessiond's default); with -url only a label")
	fs.StringVar(&c.offlineTPS, "offline-tps", "", "with -spawn: the server's --offline-tps (default: the subcommand's, else the server's)")
	fs.StringVar(&c.idleTimeout, "idle-timeout", "", "with -spawn: the server's --idle-timeout (default: the subcommand's, else the server's)")
	fs.StringVar(&c.serverArgs, "server-args", "", "with -spawn: extra space-separated flags for the server")
	fs.IntVar(&c.n, "n", 100000, "most operations per case (calls, tokens or repetitions, as the subcommand says)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "most time per case of the measured loop (setup not included)")
	fs.BoolVar(&c.json, "json", false, "print the report as JSON instead of a table")
	fs.BoolVar(&c.keepData, "keep-data", false, "with -spawn: keep the server's data folder and log")
	fs.BoolVar(&c.pin, "pin", false, "with -spawn: run the server (and -raw's server) on CPU 0 and loadgen on the other CPUs, so that neither takes the other's time (Linux, 2 CPUs or more)")
}

func (c *common) check() error {
	if c.spawn == (c.url != "") {
		return errors.New("give exactly one of -url and -spawn")
	}
	if c.pin && (!c.spawn || runtime.NumCPU() < 2) {
		return errors.New("-pin needs -spawn and 2 CPUs or more")
	}
	if c.n <= 0 || c.duration <= 0 {
		return errors.New("-n and -duration must be positive")
	}
	for _, d := range c.durabilities() {
		if c.spawn && d != "normal" && d != "full" {
			return fmt.Errorf("-durability %q: want normal or full", d)
		}
	}
	c.url = strings.TrimRight(c.url, "/")
	return nil
}

func (c *common) durabilities() []string {
	var out []string
	for _, d := range strings.Split(c.durability, ",") {
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		out = []string{""}
	}
	return out
}

// env is what one run of a workload works with: its settings and the
// server it talks to, started on first use.
type env struct {
	*common
	durability string
	builder    *builder // nil without -spawn
	log        io.Writer

	target *target
	proc   *serverProc
}

// target is the server under load.
type target struct {
	base string       // http://host:port
	pid  int          // 0 when unknown
	http *http.Client // shared keep-alive client
}

// serverOptions are a workload's wishes for a spawned server.
type serverOptions struct {
	offlineTPS  string   // the default of -offline-tps for this workload
	idleTimeout string   // the default of -idle-timeout for this workload
	extra       []string // further flags (e.g. an upstream endpoint)
	conns       int      // idle keep-alive connections the client keeps
}

// server returns the server to load, spawning it with -spawn. Call it once
// per run.
func (e *env) server(ctx context.Context, o serverOptions) (*target, error) {
	if e.target != nil {
		return nil, errors.New("server started twice in one run")
	}
	t := &target{base: e.url, pid: e.pid, http: newHTTPClient(max(o.conns, 64))}
	if e.builder != nil {
		args := []string{"--durability", e.durability}
		if v := pick(e.offlineTPS, o.offlineTPS); v != "" {
			args = append(args, "--offline-tps", v)
		}
		if v := pick(e.idleTimeout, o.idleTimeout); v != "" {
			args = append(args, "--idle-timeout", v)
		}
		args = append(args, o.extra...)
		args = append(args, strings.Fields(e.serverArgs)...)
		p, err := e.builder.start(ctx, args, e.keepData, e.log)
		if err != nil {
			return nil, err
		}
		e.proc = p
		t.base, t.pid = p.base, p.pid
	}
	e.target = t
	return t, nil
}

func pick(flagValue, def string) string {
	if flagValue != "" {
		return flagValue
	}
	return def
}

// close stops a spawned server.
func (e *env) close() {
	if e.target != nil {
		e.target.http.CloseIdleConnections()
	}
	if e.proc != nil {
		e.proc.stop()
	}
}

// logf writes a progress line to stderr.
func (e *env) logf(format string, a ...any) {
	fmt.Fprintf(e.log, "loadgen: "+format+"\n", a...)
}

// newHTTPClient is a keep-alive client that keeps up to conns idle
// connections to the one host it talks to.
func newHTTPClient(conns int) *http.Client {
	tr := &http.Transport{
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns * 2,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr}
}

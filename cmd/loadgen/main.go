// Command loadgen measures a running sessiond from the outside: it is the
// load generator behind the figures of docs/benchmarks.md. Each subcommand
// drives one workload over loopback HTTP or WebSocket and prints a short
// table (or JSON with -json).
//
// The server is always a separate process, so that the load generator and
// the server do not share one goroutine scheduler: either -url of a running
// sessiond, or -spawn, which builds ./cmd/sessiond once into a temporary
// folder and runs it as a child process (one per -durability value) with a
// fresh data folder, then stops it.
//
//	loadgen post-turns -spawn -durability normal,full
//	loadgen ws-fanout -spawn -viewers 1000
//
// Every load loop is bounded both by a count (-n) and by a time (-duration).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand: its flags are registered on fs by setup,
// which returns the function that runs the workload once against env.
type command struct {
	name    string
	summary string
	setup   func(fs *flag.FlagSet, c *common) runFunc
}

// runFunc runs one workload against one server and returns its rows.
type runFunc func(ctx context.Context, env *env) ([]row, error)

var commands = []command{
	{"post-turns", "POST user turns (no generation): p50, p99, calls/s per sessions × conns", setupPostTurns},
	{"get-turns", "GET the last 50 turns of sessions of growing length: p50, p99, calls/s", setupGetTurns},
	{"token-latency", "added latency per streamed token, fake upstream → SSE client", setupTokenLatency},
	{"ws-fanout", "one generation, many WebSocket viewers: chunk → last viewer latency", setupFanout},
	{"gens", "many concurrent offline generations, one viewer each: server CPU and added latency", setupGens},
	{"big", "one large message up and back over the WebSocket: MiB/s", setupBig},
	{"idle", "idle viewers on hibernated sessions: server RSS per viewer", setupIdle},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return errors.New("no subcommand")
		}
		return nil
	}
	switch args[0] { // -raw runs this binary as its floor server
	case rawServerCommand:
		return rawServer(ctx, args[1:])
	case rawPostServerCommand:
		return rawPostServer(ctx, args[1:], stdout)
	}
	cmd, ok := findCommand(args[0])
	if !ok {
		usage(stderr)
		return fmt.Errorf("unknown subcommand %q", args[0])
	}
	fs := flag.NewFlagSet("loadgen "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	runOnce := cmd.setup(fs, &c)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: loadgen %s [flags]\n\n%s.\n\nFlags:\n", cmd.name, cmd.summary)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	rep, err := runAll(ctx, cmd, &c, runOnce, stderr)
	if err != nil {
		return err
	}
	if c.json {
		return rep.writeJSON(stdout)
	}
	rep.writeTable(stdout)
	return nil
}

func findCommand(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func usage(w io.Writer) {
	fmt.Fprint(w, "Usage: loadgen <subcommand> [flags]   (loadgen <subcommand> -h for its flags)\n\nSubcommands:\n")
	names := make([]string, 0, len(commands))
	for _, c := range commands {
		names = append(names, c.name)
	}
	sort.Strings(names)
	for _, n := range names {
		c, _ := findCommand(n)
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nCommon flags: -url or -spawn, -durability, -n, -duration, -json (see each subcommand's -h).\n")
}

// runAll runs the workload once per durability mode (with -spawn, each
// against a fresh server) and gathers the rows into a report.
func runAll(ctx context.Context, cmd command, c *common, runOnce runFunc, logw io.Writer) (*report, error) {
	rep := newReport(cmd.name, c)
	var b *builder
	if c.spawn {
		var err error
		if b, err = newBuilder(ctx, c.bin); err != nil {
			return nil, err
		}
		defer b.cleanup()
		b.cpus = c.serverCPUs()
	}
	if c.pin {
		// After the build (which may use every CPU), before any load.
		if err := pinProcess(loadgenCPUs()); err != nil {
			return nil, err
		}
	}
	for _, d := range c.durabilities() {
		env := &env{common: c, durability: d, builder: b, log: logw}
		helloRetries.Store(0)
		rows, err := runOnce(ctx, env)
		env.close()
		if err != nil {
			return nil, fmt.Errorf("%s (durability %s): %w", cmd.name, orDash(d), err)
		}
		for i := range rows {
			rows[i].Durability = d
		}
		rep.Rows = append(rep.Rows, rows...)
	}
	return rep, nil
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

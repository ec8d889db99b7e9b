// Command sessiond is the sessiond server: it reads flags and environment,
// opens the durable-object runtime on the data folder and serves HTTP until
// SIGINT or SIGTERM, then shuts down cleanly. Run `sessiond -h` for settings.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"sessiond/cmd/sessiond/internal/heapfloor"
	"sessiond/objects"
	"sessiond/session"
	"sessiond/web"
	"sessiond/web/ui"
)

const (
	// readHeaderTimeout bounds how long a client may take to send headers
	// (slowloris); bodies and streams are not limited by it.
	readHeaderTimeout = 10 * time.Second
	// idleConnTimeout closes keep-alive connections with nothing to do.
	idleConnTimeout = 2 * time.Minute
	// drainGrace is how long requests in flight may finish on shutdown
	// before the server's base context is cancelled, which ends long-lived
	// streams (SSE, WebSockets) whose handlers watch their request context.
	drainGrace = 2 * time.Second
	// finalGrace is how long, after the running generations stopped at
	// drainGrace, their SSE streams have to send the final (interrupted)
	// done events before the base context ends them.
	finalGrace = time.Second
	// shutdownTimeout bounds the whole HTTP shutdown; connections still open
	// then are closed. The runtime's own Close has its ShutdownTimeout.
	shutdownTimeout = 15 * time.Second
)

// Log keys used by this package.
const (
	keyAddr       = "addr"
	keyData       = "data"
	keyDurability = "durability"
	keyCause      = "cause"
	keyErr        = "err"
	keyMode       = "mode"
)

// errShuttingDown is the cause of the server's base context when it ends.
var errShuttingDown = errors.New("sessiond: shutting down")

func main() {
	privateFiles()
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	// It lives as long as the process: a signal must be handled until exit.
	go watchSignals(sigs, cancel, time.Now, func(sig os.Signal) {
		fmt.Fprintf(os.Stderr, "sessiond: %v again: exiting without finishing the shutdown\n", sig)
		os.Exit(1)
	})
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "sessiond: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(os.Stderr, "Run 'sessiond -h' for usage.")
		os.Exit(2)
	}
	var le *dataLockedError
	if errors.As(err, &le) {
		os.Exit(2)
	}
	os.Exit(1)
}

// forceAfter is how long after the first signal another one forces exit.
// Sooner, it is taken for the same request: `timeout` and process
// managers signal the process and then its group, which delivers the
// signal twice at once, and a shutdown must not be cut short by that.
const forceAfter = time.Second

// watchSignals receives signals from sigs until it is closed. The first
// cancels the program's context (a clean shutdown); one that arrives
// forceAfter or more after the first calls force, for a shutdown that
// hangs; one sooner is ignored. now reads the clock.
func watchSignals(sigs <-chan os.Signal, cancel context.CancelCauseFunc, now func() time.Time, force func(os.Signal)) {
	var first time.Time
	for sig := range sigs {
		switch {
		case first.IsZero():
			first = now()
			cancel(fmt.Errorf("%v signal received", sig))
		case now().Sub(first) >= forceAfter:
			force(sig)
		}
	}
}

// run is the whole program: args are the command-line arguments without the
// program name, getenv reads the environment. It serves until ctx ends, then
// shuts down and returns nil. A bad flag or setting returns a *usageError,
// a data folder that another sessiond holds a *dataLockedError; -h prints
// usage to stdout and returns nil. Logs go to stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout)
		return nil
	}
	if err != nil {
		return err
	}
	logger := newLogger(cfg, stderr)
	if err := serve(ctx, cfg, getenv, logger); err != nil {
		return err
	}
	// Only now: serve's deferred closes (sessions, runtime, NATS, the data
	// folder's lock) have finished, and the folder may be copied.
	logger.Info("stopped")
	return nil
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve opens the runtime, serves HTTP until ctx ends, and closes both.
func serve(ctx context.Context, cfg config, getenv func(string) string, logger *slog.Logger) (err error) {
	models, err := buildModels(cfg, getenv, logger)
	if err != nil {
		return err
	}
	if err := checkNATSFiles(cfg); err != nil {
		return err
	}
	// Unauthenticated listeners beside the API: allowed, but said aloud
	// when they face the network.
	for _, l := range []struct{ flag, addr, what string }{
		{"--debug-addr", cfg.DebugAddr, "Go's profiler with no authentication"},
		{"--nats-listen", cfg.NATSListen, "the embedded NATS with no authentication (it carries every session's events, turn text included)"},
	} {
		if l.addr != "" && !isLoopback(l.addr) {
			logger.Warn("serving "+l.what+" on an address that is not loopback: anyone who reaches it can use it", "flag", l.flag, keyAddr, l.addr)
		}
	}
	if before, after := ensureProcs(getenv); after != before {
		logger.Info("one CPU: running with two Go processors so that a commit waiting for the disk does not stop the others (set GOMAXPROCS to choose)", "gomaxprocs", after)
	}
	if limit, ok := fileLimit(); ok {
		if msg := fileLimitWarning(limit, cfg.MaxOpen); msg != "" {
			logger.Warn(msg, "limit", limit, "max_open", cfg.MaxOpen)
		}
	}
	// Before anything opens in the data folder, NATS included: a second
	// sessiond on the same folder stops here.
	created, err := prepareData(cfg.Data, logger)
	if err != nil {
		return err
	}
	unlock, err := lockData(cfg.Data)
	if err != nil {
		return err
	}
	unmake := func() {
		if created {
			unmakeData(cfg.Data)
		}
	}
	// Deferred first, so it runs last: after NATS and the runtime closed.
	defer unlock()
	// Bind the addresses (this one and --debug-addr) before NATS and the
	// runtime start, so that one in use stops sessiond before they open
	// anything. Connections wait in the backlog until Serve below.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		unmake()
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close() // for a return before Serve owns it
	floor := heapfloor.Start(uint64(cfg.GCFloorMiB) << 20)
	defer floor.Stop()
	if cfg.DebugAddr != "" {
		_, stop, err := startDebug(cfg.DebugAddr, logger)
		if err != nil {
			unmake()
			return err
		}
		defer stop()
	}
	ev, err := startEvents(ctx, cfg, logger)
	if err != nil {
		return err
	}
	// Deferred before the runtime's close, so it runs after it.
	defer ev.close()
	rt := objects.NewRuntime(cfg.Data)
	rt.Bus = ev.objects
	rt.Durability = cfg.Durability
	rt.IdleTimeout = cfg.IdleTimeout
	rt.MaxOpen = cfg.MaxOpen
	rt.Logger = logger
	svc, err := session.NewService(rt, models)
	if err != nil {
		return err
	}
	svc.Logger = logger
	svc.Events = cfg.Events
	svc.MaxStreamsPerOwner = cfg.MaxStreams
	svc.ViewerOptions.FlushInterval = cfg.FlushInterval
	svc.ViewerOptions.FlushBytes = cfg.FlushBytes
	if err := rt.Open(ctx); err != nil {
		return fmt.Errorf("open runtime in %s: %w", cfg.Data, err)
	}
	defer func() {
		// After the HTTP server: nothing can call into the runtime any more.
		if cerr := rt.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close runtime: %w", cerr)
		}
	}()
	svc.Start()
	// Before the runtime closes: running generations commit what they have.
	defer svc.Close()

	// The server's lifetime: it keeps ctx's values but not its cancellation,
	// so that a signal stops accepting first and ends streams only after
	// drainGrace (see shutdown).
	baseCtx, cancelBase := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelBase(errShuttingDown)

	var ready atomic.Bool
	srv := &http.Server{
		Handler:           newHandler(cfg, logger, svc, ready.Load, rt.Fault, ev.health),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleConnTimeout,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	ready.Store(true)
	logger.Info("listening", keyAddr, ln.Addr().String(), keyData, cfg.Data, keyDurability, cfg.Durability.String(),
		"model", models.Default(), "models", models.Names(), "events", eventsMode(&cfg), "auth", authMode(&cfg))

	select {
	case <-ctx.Done():
		logger.Info("shutting down", keyCause, context.Cause(ctx))
	case err := <-served:
		// Serve only returns early when accepting fails for good.
		ready.Store(false)
		srv.Close()
		return fmt.Errorf("serve http: %w", err)
	}
	ready.Store(false)
	shutdown(logger, srv, svc.StopGenerations, cancelBase)
	<-served // http.ErrServerClosed, now that Shutdown or Close ran
	return nil
}

// shutdown stops srv: it stops accepting at once, lets requests in flight
// finish for drainGrace, then stops the running generations (stop), whose
// SSE streams then end with their final event, as a WebSocket's do, within
// finalGrace; then it cancels the base context so that the long-lived
// streams left end, and closes whatever is left at shutdownTimeout.
func shutdown(logger *slog.Logger, srv *http.Server, stop func(), cancelBase context.CancelCauseFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	grace := time.NewTimer(drainGrace)
	defer grace.Stop()
	var err error
	select {
	case err = <-done:
	case <-grace.C:
		// Cancelling the base context first would end an SSE stream
		// before the done event its generation's stop sends.
		stop()
		final := time.NewTimer(finalGrace)
		defer final.Stop()
		select {
		case err = <-done:
		case <-final.C:
			cancelBase(errShuttingDown)
			err = <-done
		}
	}
	if err != nil {
		logger.Warn("http connections still open at the shutdown timeout; closing them", keyErr, err)
		srv.Close()
	}
}

// newHandler builds sessiond's HTTP handler: /healthz here (it knows about
// shutdown), everything else from package web. ready reports whether the
// server is up and not shutting down; fault is the runtime's (a failed
// disk flush, or its data folder gone from under it, after which it
// refuses every call until restarted); events
// (nil: none) says what is wrong with the event bus, "" when nothing: the
// server still serves then (events wait in the outboxes), so /healthz
// stays 200 and says so in its body.
func newHandler(cfg config, logger *slog.Logger, svc *session.Service, ready func() bool, fault func() error, events func() string) http.Handler {
	keys := make(map[string]web.Principal, len(cfg.APIKeys))
	for k, s := range cfg.APIKeys {
		keys[k] = web.Principal{Owner: s.Owner, Admin: s.Admin}
	}
	api := web.NewHandler(svc, web.Config{
		Keys:           keys,
		AuthOff:        len(keys) == 0,
		LocalHostsOnly: len(keys) == 0 && isLoopback(cfg.Addr),
		AllowedOrigins: cfg.AllowedOrigins,
		UI:             ui.Handler(),
		Logger:         logger,
	})
	// Not a ServeMux: it would answer a path with "//" or "/./" with an
	// HTML redirect before the API's JSON errors could.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			api.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"status":"shutting_down"}`+"\n")
			return
		}
		if err := fault(); err != nil {
			// Up, but refusing every call: a supervisor should restart it.
			w.WriteHeader(http.StatusServiceUnavailable)
			b, _ := json.Marshal(map[string]string{"status": "disk_failed", "error": err.Error()})
			w.Write(append(b, '\n'))
			return
		}
		if events != nil {
			if s := events(); s != "" {
				b, _ := json.Marshal(map[string]string{"status": "ok", "events": s})
				w.Write(append(b, '\n'))
				return
			}
		}
		io.WriteString(w, `{"status":"ok"}`+"\n")
	})
}

// eventsMode says where events go, for the start-up line: "embedded" NATS,
// an "external" one (its URL is not logged: it may hold credentials), or
// "off".
func eventsMode(cfg *config) string {
	switch {
	case !cfg.Events:
		return "off"
	case cfg.NATSURL != "":
		return "external"
	}
	return "embedded"
}

// authMode says how requests are authenticated, for the start-up line.
func authMode(cfg *config) string {
	if len(cfg.APIKeys) > 0 {
		return fmt.Sprintf("%d API keys", len(cfg.APIKeys))
	}
	return "off (no API keys)"
}

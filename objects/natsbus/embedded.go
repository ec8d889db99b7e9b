package natsbus

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"sessiond/objects"
)

// DefaultStartTimeout bounds StartEmbedded when ctx has no deadline.
const DefaultStartTimeout = 30 * time.Second

// EmbeddedOptions configures StartEmbedded.
type EmbeddedOptions struct {
	// Dir is the JetStream store directory. Required. Streams and consumer
	// state live under it, so a server started again on the same Dir
	// resumes where the previous one stopped.
	Dir string

	// Listen is the client address ("host:port"). Empty (the default) opens
	// no port at all: only in-process connections from Embedded.Connect
	// reach the server. Set it (e.g. "127.0.0.1:4222") to let the nats CLI
	// and other services join; port 0 picks a free port (see
	// Embedded.ClientURL). Anything listening is unauthenticated, so bind
	// to loopback unless the network is trusted.
	Listen string

	// SyncInterval is how often the JetStream file store fsyncs. Zero means
	// the nats-server default, 2 minutes. Data reaches the operating system
	// before a publish is acknowledged, so an acknowledged message survives
	// a crash of this process either way; it survives power loss or a
	// kernel crash only once it has been synced, i.e. up to SyncInterval
	// later, unless SyncAlways is set.
	SyncInterval time.Duration

	// SyncAlways fsyncs every write before it is acknowledged: acknowledged
	// messages survive power loss, at the cost of one fsync per publish and
	// per consumer ack. Default false.
	SyncAlways bool

	// Logger receives the server's log: notices and debug output at debug
	// level, warnings at warn, errors at error. Default slog.Default().
	Logger *slog.Logger
}

// Embedded is an in-process nats-server with JetStream.
//
// Its methods are safe for concurrent use. The caller must call Close, after
// closing the connections it made with Connect.
type Embedded struct {
	srv       *server.Server
	closeOnce sync.Once
	closed    atomic.Bool
}

// StartEmbedded starts a nats-server with JetStream storing under opts.Dir and
// returns once it accepts connections. ctx bounds the start-up (with no
// deadline, DefaultStartTimeout does); it is not retained.
//
// The server does not install signal handlers, serves no monitoring port and
// logs through opts.Logger.
func StartEmbedded(ctx context.Context, opts EmbeddedOptions) (*Embedded, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("start embedded nats: %w: Dir is required", ErrInvalidOptions)
	}
	if opts.SyncInterval < 0 {
		return nil, fmt.Errorf("start embedded nats: %w: SyncInterval %v is negative", ErrInvalidOptions, opts.SyncInterval)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	sopts := &server.Options{
		ServerName:             "sessiond",
		JetStream:              true,
		StoreDir:               opts.Dir,
		SyncInterval:           opts.SyncInterval,
		SyncAlways:             opts.SyncAlways,
		NoSigs:                 true,
		DisableJetStreamBanner: true,
		// The largest event the runtime takes, with the bus's headers
		// (message id) on top: the server's default of 1 MiB counts both.
		MaxPayload: objects.MaxEventBytes + HeaderRoom,
		// Nothing here uses the system account ($SYS events and
		// server monitoring requests). Start-up measured the same
		// either way, so the smaller surface wins.
		NoSystemAccount: true,
	}
	if opts.Listen == "" {
		sopts.DontListen = true
	} else {
		host, port, err := splitListen(opts.Listen)
		if err != nil {
			return nil, fmt.Errorf("start embedded nats: %w", err)
		}
		sopts.Host, sopts.Port = host, port
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}

	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	sl := &serverLogger{l: logger}
	srv.SetLoggerV2(sl, logger.Enabled(ctx, slog.LevelDebug), false, false)
	srv.Start()

	wait := DefaultStartTimeout
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	var cause error
	switch {
	case sl.fatal.Load() != nil || !srv.JetStreamEnabled():
		// Start reports a failure (JetStream on an unusable Dir, for
		// one) only through the logger, then returns without
		// finishing: waiting for readiness would take all of wait.
		cause = fmt.Errorf("%w: %s", ErrNotReady, sl.fatalMessage())
	case !srv.ReadyForConnections(wait):
		cause = fmt.Errorf("%w: not ready after %v", ErrNotReady, wait)
	case ctx.Err() != nil:
		cause = ctx.Err()
	}
	if cause != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("start embedded nats: %w", cause)
	}
	return &Embedded{srv: srv}, nil
}

// splitListen turns "host:port" into server options; port 0 means any free
// port, which nats-server spells -1.
func splitListen(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%w: Listen %q: %v", ErrInvalidOptions, addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%w: Listen %q: bad port", ErrInvalidOptions, addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// Connect returns a client connection to the server through an in-memory
// pipe: it works whether or not the server listens on a port. The caller
// must close it before calling Close. ctx's deadline, if any, bounds the
// handshake.
func (e *Embedded) Connect(ctx context.Context, opts ...nats.Option) (*nats.Conn, error) {
	if e.closed.Load() {
		return nil, fmt.Errorf("connect embedded nats: %w", ErrClosed)
	}
	all := make([]nats.Option, 0, len(opts)+2)
	all = append(all, nats.Name("sessiond"), nats.InProcessServer(e.srv))
	all = append(all, opts...)
	nc, err := connect(ctx, "", all)
	if err != nil {
		return nil, fmt.Errorf("connect embedded nats: %w", err)
	}
	return nc, nil
}

// ClientURL is the URL other processes connect to, or "" when
// EmbeddedOptions.Listen was empty and nothing listens.
func (e *Embedded) ClientURL() string {
	addr, ok := e.srv.Addr().(*net.TCPAddr)
	if !ok || addr == nil {
		return ""
	}
	return "nats://" + addr.String()
}

// Server returns the underlying nats-server, for inspection. Shutting it
// down directly bypasses Close.
func (e *Embedded) Server() *server.Server { return e.srv }

// Close shuts the server down and waits until it has stopped: its store is
// then closed and another server may open the same Dir. Client connections
// still open are disconnected. Close is idempotent.
func (e *Embedded) Close() {
	e.closeOnce.Do(func() {
		e.closed.Store(true)
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	})
}

// serverLogger adapts the nats-server logger interface to slog. Notices go
// to debug: a healthy server's chatter is not worth an operator's attention.
type serverLogger struct {
	l     *slog.Logger
	fatal atomic.Pointer[string]
}

func (s *serverLogger) log(level slog.Level, format string, v []any) {
	ctx := context.Background()
	if !s.l.Enabled(ctx, level) {
		return
	}
	s.l.Log(ctx, level, fmt.Sprintf(format, v...), logKeyComponent, "nats-server")
}

func (s *serverLogger) fatalMessage() string {
	if m := s.fatal.Load(); m != nil {
		return *m
	}
	return "jetstream not enabled"
}

func (s *serverLogger) Noticef(format string, v ...any) { s.log(slog.LevelDebug, format, v) }
func (s *serverLogger) Warnf(format string, v ...any)   { s.log(slog.LevelWarn, format, v) }
func (s *serverLogger) Errorf(format string, v ...any)  { s.log(slog.LevelError, format, v) }
func (s *serverLogger) Debugf(format string, v ...any)  { s.log(slog.LevelDebug, format, v) }
func (s *serverLogger) Tracef(format string, v ...any)  { s.log(slog.LevelDebug-4, format, v) }

// Fatalf logs at error level and never exits: the embedding process decides
// what a failed server means (StartEmbedded turns it into an error).
func (s *serverLogger) Fatalf(format string, v ...any) {
	m := fmt.Sprintf(format, v...)
	s.fatal.CompareAndSwap(nil, &m)
	s.l.Error(m, logKeyComponent, "nats-server")
}

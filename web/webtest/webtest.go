package webtest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"sessiond/objects"
	"sessiond/session"
	"sessiond/web"
)

// Options configure New; nil means defaults.
type Options struct {
	// OfflineTPS is the offline model's words per second (0: as fast as it can).
	OfflineTPS float64
	// Config is the API's configuration; with no Keys, auth is off.
	Config web.Config
	// Runtime adjusts the runtime before it opens (idle timeout, limits …).
	Runtime func(*objects.Runtime)
	// Bus, when set, carries events, and sessions publish their lifecycle.
	Bus objects.EventBus
	// Models, when set, adjusts the model registry after the offline model
	// is registered (more models, another default).
	Models func(*session.Registry)
}

// Server is a running API.
type Server struct {
	*httptest.Server
	Runtime *objects.Runtime
	Service *session.Service
}

type logWriter struct{ tb testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// New starts a server; warnings and errors are logged to tb.
func New(tb testing.TB, opts *Options) *Server {
	tb.Helper()
	if opts == nil {
		opts = &Options{}
	}
	logger := slog.New(slog.NewTextHandler(logWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rt := objects.NewRuntime(tb.TempDir())
	rt.Durability = objects.DurabilityNormal
	rt.Logger = logger
	rt.Bus = opts.Bus
	if opts.Runtime != nil {
		opts.Runtime(rt)
	}
	reg := session.NewRegistry()
	if err := reg.Register(session.OfflineModelName, session.NewOfflineModel(opts.OfflineTPS), session.ModelInfo{}); err != nil {
		tb.Fatal(err)
	}
	if opts.Models != nil {
		opts.Models(reg)
	}
	svc, err := session.NewService(rt, reg)
	if err != nil {
		tb.Fatal(err)
	}
	svc.Logger = logger
	svc.Events = opts.Bus != nil
	if err := rt.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	svc.Start()
	cfg := opts.Config
	cfg.Logger = logger
	if len(cfg.Keys) == 0 {
		cfg.AuthOff = true
	}
	srv := httptest.NewServer(web.NewHandler(svc, cfg))
	tb.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		svc.Close()
		rt.Close()
	})
	return &Server{Server: srv, Runtime: rt, Service: svc}
}

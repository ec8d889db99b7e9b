package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"

	"sessiond/web"
)

// startDebug serves Go's profiler on addr until stop is called. It is a
// separate listener so that profiles are never reachable through the API's
// address. It leaves out pprof's cmdline, which would show secrets given
// as flags (--api-keys), and answers only requests to a loopback name: a
// web page the user opens can reach a loopback port through a DNS name of
// its own that points at 127.0.0.1, and would read the profiles. It
// returns the address it listens on.
func startDebug(addr string, logger *slog.Logger) (bound string, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("debug listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", http.NotFound)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	loopbackOnly := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !web.LoopbackHost(r.Host) {
			http.Error(w, "the profiler answers requests to localhost, 127.0.0.1 or [::1] only", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: loopbackOnly, ReadHeaderTimeout: readHeaderTimeout}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			logger.Warn("debug listener stopped", keyErr, err)
		}
	}()
	logger.Info("profiler listening", keyAddr, ln.Addr().String())
	return ln.Addr().String(), func() {
		srv.Close()
		<-done
	}, nil
}

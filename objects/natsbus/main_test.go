package natsbus_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Environment of the child process that runs an external nats-server for the
// external tests (see external_test.go).
const (
	envServer  = "NATSBUS_TEST_SERVER" // "1" turns the test binary into a server
	envDir     = "NATSBUS_TEST_DIR"    // JetStream store dir
	envUser    = "NATSBUS_TEST_USER"
	envPass    = "NATSBUS_TEST_PASS"
	envTLSCert = "NATSBUS_TEST_TLS_CERT" // server certificate; enables TLS
	envTLSKey  = "NATSBUS_TEST_TLS_KEY"
	envTLSCA   = "NATSBUS_TEST_TLS_CA" // CA that client certificates must chain to

	urlLinePrefix = "NATSBUS_URL="
)

func TestMain(m *testing.M) {
	if os.Getenv(envServer) == "1" {
		os.Exit(runChildServer())
	}
	if os.Getenv(envObjectsChild) != "" {
		os.Exit(runObjectsChild())
	}
	os.Exit(m.Run())
}

// runChildServer runs a nats-server on a free loopback port until SIGTERM,
// printing its URL on stdout once it is ready. SIGKILL simulates a crash.
func runChildServer() int {
	opts := &server.Options{
		Host:                   "127.0.0.1",
		Port:                   server.RANDOM_PORT,
		JetStream:              true,
		StoreDir:               os.Getenv(envDir),
		NoSigs:                 true,
		NoSystemAccount:        true,
		DisableJetStreamBanner: true,
		Username:               os.Getenv(envUser),
		Password:               os.Getenv(envPass),
	}
	if cert := os.Getenv(envTLSCert); cert != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: cert,
			KeyFile:  os.Getenv(envTLSKey),
			CaFile:   os.Getenv(envTLSCA),
			Verify:   true,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "tls config:", err)
			return 1
		}
		opts.TLS, opts.TLSVerify, opts.TLSConfig, opts.TLSTimeout = true, true, tc, 5
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "new server:", err)
		return 1
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	srv.Start()
	if !srv.ReadyForConnections(20*time.Second) || !srv.JetStreamEnabled() {
		fmt.Fprintln(os.Stderr, "server not ready")
		return 1
	}
	fmt.Printf("%s%s\n", urlLinePrefix, srv.ClientURL())
	<-stop
	srv.Shutdown()
	srv.WaitForShutdown()
	return 0
}

// testLogger routes slog records at info and above to tb.Log until the test
// ends, and drops them afterwards (a late server goroutine must not panic
// the test binary).
func testLogger(tb testing.TB) *slog.Logger {
	w := &testWriter{tb: tb}
	tb.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	mu   sync.Mutex
	tb   testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// checkFor polls cond until it holds, failing the test after timeout. The
// timeout only bounds a failing test; it is not a performance assertion.
func checkFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkNoLeaks fails the test if, once its cleanups have run, more
// goroutines are alive than when it started. Call it first in a test so that
// its check runs last.
func checkNoLeaks(tb testing.TB) {
	before := runtime.NumGoroutine()
	tb.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				tb.Errorf("goroutines: %d, want at most %d\n%s", runtime.NumGoroutine(), before, buf)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// testCtx is a context for one test's calls, cancelled when it ends.
func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// lockedBuffer collects a child process's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

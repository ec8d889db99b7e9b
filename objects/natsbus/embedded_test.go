package natsbus_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"sessiond/objects"
	"sessiond/objects/natsbus"
)

// startEmbedded starts an embedded server, closed when the test ends.
func startEmbedded(tb testing.TB, opts natsbus.EmbeddedOptions) *natsbus.Embedded {
	tb.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(tb)
	}
	e, err := natsbus.StartEmbedded(testCtx(tb), opts)
	if err != nil {
		tb.Fatalf("StartEmbedded: %v", err)
	}
	tb.Cleanup(e.Close)
	return e
}

func connectEmbedded(tb testing.TB, e *natsbus.Embedded) *nats.Conn {
	tb.Helper()
	nc, err := e.Connect(testCtx(tb))
	if err != nil {
		tb.Fatalf("Connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

func newEmbeddedHarness(tb testing.TB) *harness {
	dir := tb.TempDir()
	e := startEmbedded(tb, natsbus.EmbeddedOptions{Dir: dir})
	return &harness{
		connect: func(tb testing.TB) *nats.Conn { return connectEmbedded(tb, e) },
		restart: func(tb testing.TB) {
			e.Close()
			e = startEmbedded(tb, natsbus.EmbeddedOptions{Dir: dir})
		},
	}
}

func TestEmbedded(t *testing.T) {
	checkNoLeaks(t)
	runSuite(t, newEmbeddedHarness)
}

func TestEmbeddedNoListen(t *testing.T) {
	checkNoLeaks(t)
	e := startEmbedded(t, natsbus.EmbeddedOptions{Dir: t.TempDir()})
	if addr := e.Server().Addr(); addr != nil {
		t.Fatalf("server listens on %v with Listen empty", addr)
	}
	if url := e.ClientURL(); url != "" {
		t.Fatalf("ClientURL=%q, want empty", url)
	}
	// In-process clients still work.
	bus := openBus(t, connectEmbedded(t, e), nil)
	publish(t, bus, "ev.x", "one")
}

// The embedded server takes the largest event the runtime allows, with
// the bus's headers on top (nats-server's default limit is 1 MiB, data and
// headers together).
func TestEmbeddedTakesTheLargestEvent(t *testing.T) {
	checkNoLeaks(t)
	e := startEmbedded(t, natsbus.EmbeddedOptions{Dir: t.TempDir()})
	bus := openBus(t, connectEmbedded(t, e), nil)
	data := strings.Repeat("x", objects.MaxEventBytes)
	if _, err := bus.Publish(testCtx(t), "ev.big", []byte(data), "id-big"); err != nil {
		t.Fatalf("publish of a %d-byte event: %v", len(data), err)
	}
}

func TestEmbeddedListen(t *testing.T) {
	checkNoLeaks(t)
	e := startEmbedded(t, natsbus.EmbeddedOptions{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	url := e.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":0") {
		t.Fatalf("ClientURL=%q, want nats://127.0.0.1:<port>", url)
	}
	nc, err := natsbus.Connect(testCtx(t), url)
	if err != nil {
		t.Fatalf("Connect over TCP: %v", err)
	}
	t.Cleanup(nc.Close)
	if !nc.IsConnected() {
		t.Fatal("not connected")
	}
	host, _, err := net.SplitHostPort(nc.ConnectedAddr())
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("ConnectedAddr=%q, want a loopback TCP address", nc.ConnectedAddr())
	}

	// A message published over TCP reaches an in-process consumer.
	tcpBus := openBus(t, nc, nil)
	localBus := openBus(t, connectEmbedded(t, e), nil)
	var r recorder
	consume(t, localBus, "worker", &r, nil)
	publish(t, tcpBus, "ev.tcp", "over-tcp")
	checkFor(t, 10*time.Second, "message over tcp", func() bool { return r.seen("over-tcp") })
}

func TestStartEmbeddedErrors(t *testing.T) {
	checkNoLeaks(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	for _, tc := range []struct {
		name string
		opts natsbus.EmbeddedOptions
		want error
	}{
		{"no dir", natsbus.EmbeddedOptions{}, natsbus.ErrInvalidOptions},
		{"bad listen", natsbus.EmbeddedOptions{Dir: t.TempDir(), Listen: "nonsense"}, natsbus.ErrInvalidOptions},
		{"bad port", natsbus.EmbeddedOptions{Dir: t.TempDir(), Listen: "127.0.0.1:99999"}, natsbus.ErrInvalidOptions},
		{"negative sync", natsbus.EmbeddedOptions{Dir: t.TempDir(), SyncInterval: -time.Second}, natsbus.ErrInvalidOptions},
		{"dir is a file", natsbus.EmbeddedOptions{Dir: file}, natsbus.ErrNotReady},
		{"port in use", natsbus.EmbeddedOptions{Dir: t.TempDir(), Listen: busy.Addr().String()}, natsbus.ErrNotReady},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Logger = testLogger(t)
			e, err := natsbus.StartEmbedded(testCtx(t), tc.opts)
			if err == nil {
				e.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("StartEmbedded err=%v, want %v", err, tc.want)
			}
		})
	}
}

func TestEmbeddedConnectAfterClose(t *testing.T) {
	checkNoLeaks(t)
	e := startEmbedded(t, natsbus.EmbeddedOptions{Dir: t.TempDir()})
	e.Close()
	e.Close() // idempotent
	if _, err := e.Connect(testCtx(t)); !errors.Is(err, natsbus.ErrClosed) {
		t.Fatalf("Connect after Close err=%v, want ErrClosed", err)
	}
}

package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// An external NATS server whose max_payload is too small for the events
// sessions publish is refused at start, with the size to set: it would
// otherwise answer posts of long turns with 500 and lose the output of
// long generations (their final commit publishes the turn). One with room
// enough is taken.
func TestExternalNATSMaxPayloadChecked(t *testing.T) {
	start := func(maxPayload int32) *server.Server {
		srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
			StoreDir: t.TempDir(), MaxPayload: maxPayload, NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server not ready")
		}
		t.Cleanup(srv.Shutdown)
		return srv
	}
	small := start(8 << 10)
	// Bounded: a server that starts anyway serves until its context ends.
	ctx0, cancel0 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel0()
	err := run(ctx0, []string{"--addr", "127.0.0.1:0", "--data", t.TempDir(), "--nats-url", small.ClientURL()}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "max_payload") || !strings.Contains(err.Error(), "69632") {
		t.Fatalf("start with max_payload 8 KiB: %v, want a refusal naming max_payload and 69632", err)
	}
	// Refused before it touched the server: no stream was made there.
	if jsz, err := small.Jsz(nil); err != nil || jsz.Streams != 0 {
		t.Fatalf("the refused start left %d streams on the server (%v)", jsz.Streams, err)
	}

	// Room enough (NATS's default is 1 MiB): sessiond starts, and stops
	// when asked.
	roomy := start(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	data := t.TempDir()
	go func() {
		errc <- run(ctx, []string{"--addr", "127.0.0.1:0", "--data", data, "--nats-url", roomy.ClientURL()}, noEnv, io.Discard, io.Discard)
	}()
	select {
	case err := <-errc:
		t.Fatalf("start with max_payload 1 MiB: %v", err)
	case <-time.After(2 * time.Second): // still serving
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("stop: %v", err)
	}
}

// A NATS server run without JetStream is refused at start with that said,
// not with the client library's "no responders".
func TestExternalNATSWithoutJetStreamRefused(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // bounded, should it start anyway
	defer cancel()
	err = run(ctx, []string{"--addr", "127.0.0.1:0", "--data", t.TempDir(), "--nats-url", srv.ClientURL()}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no JetStream") {
		t.Fatalf("start on a server without JetStream: %v, want a refusal that says it has no JetStream", err)
	}
}

// A NATS deployment that cannot be reached is named without the password
// its URL holds.
func TestUnreachableNATSKeepsThePasswordOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := config{NATSURL: "nats://user:s3cret@" + addr + ", nats://tok3n@" + addr}
	_, err = startEvents(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("connected to nothing")
	}
	if msg := err.Error(); strings.Contains(msg, "s3cret") || strings.Contains(msg, "tok3n") || !strings.Contains(msg, addr) {
		t.Fatalf("error %q: want the address, without the password or token", msg)
	}
}

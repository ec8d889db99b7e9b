package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"sessiond/objects/natsbus"
	"sessiond/web/webtest"
)

// TestCoordinatorResumesOnEvents runs a whole sessiond (runtime, embedded
// NATS listening on loopback, API) in the test and the example against it.
func TestCoordinatorResumesOnEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := natsbus.StartEmbedded(ctx, natsbus.EmbeddedOptions{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	nc, err := e.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	bus, err := natsbus.New(nc, &natsbus.BusOptions{Subjects: []string{"sessiond.>"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	srv := webtest.New(t, &webtest.Options{Bus: &natsbus.Objects{Bus: bus, Durable: "node-test"}})

	c := &client{base: srv.URL, http: http.DefaultClient}
	out, err := coordinate(ctx, c, e.ClientURL(), []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(out, "\n")
	for _, want := range []string{`Result of "a" (done): done: a`, `Result of "b" (done): done: b`, `Result of "c" (done): done: c`} {
		if !strings.Contains(text, want) {
			t.Fatalf("transcript lacks %q:\n%s", want, text)
		}
	}
	if last := out[len(out)-1]; !strings.HasPrefix(last, "assistant: ") || !strings.Contains(last, "offline model") {
		t.Fatalf("the coordinator did not summarise: %q", last)
	}
}

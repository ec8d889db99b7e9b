package natsbus_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"sessiond/objects/natsbus"
)

// A single node: NATS runs inside the process and stores under the data
// directory; nothing listens on a port.
func ExampleStartEmbedded() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "natsbus-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	srv, err := natsbus.StartEmbedded(ctx, natsbus.EmbeddedOptions{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	nc, err := srv.Connect(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	bus, err := natsbus.New(nc, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := bus.Open(ctx); err != nil {
		log.Fatal(err)
	}
	defer bus.Close()

	res, err := bus.Publish(ctx, "ev.session.abc", []byte("hello"), "event-1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stored at", res.Seq)
	res, _ = bus.Publish(ctx, "ev.session.abc", []byte("hello"), "event-1")
	fmt.Println("retry is a duplicate:", res.Duplicate)

	got := make(chan natsbus.Msg, 1)
	c, err := bus.Consume(ctx, "wake", "ev.session.>", func(ctx context.Context, m natsbus.Msg) error {
		got <- m
		return nil
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	m := <-got
	c.Stop()
	fmt.Printf("%s %s %q delivery %d\n", m.Subject, m.ID, m.Data, m.NumDelivered)
	// Output:
	// stored at 1
	// retry is a duplicate: true
	// ev.session.abc event-1 "hello" delivery 1
}

package natsbus

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"sessiond/objects"
)

// Objects adapts a Bus to objects.EventBus: events published by objects go
// to the Bus's stream, and one durable consumer per node (Durable) delivers
// the events the node's objects subscribe to (objects.FilteringBus) to the
// node's runtime, which routes them to the subscribed objects. Keep Durable
// stable across restarts of a node (e.g. derive it from the data folder) so
// that it resumes after the last event it acknowledged.
type Objects struct {
	Bus     *Bus
	Durable string
	// Options of the node's consumer; nil means defaults (one event at a
	// time, in stream order: publish order per publisher is kept, across
	// restarts too, except for an event a handler failed, which comes again
	// after its retry delay, behind later ones; see Bus.Consume).
	Options *ConsumeOptions

	mu       sync.Mutex
	consumer *Consumer
	filter   []string // consumer filter subjects, as last asked for
	filtered bool     // Filter was called: apply filter to the consumer
}

var (
	_ objects.FilteringBus   = (*Objects)(nil)
	_ objects.BatchPublisher = (*Objects)(nil)
	_ objects.LimitedBus     = (*Objects)(nil)
)

// HeaderRoom is the part of a server's max_payload kept for an event's
// headers (its message id and expected stream take about 100 bytes).
const HeaderRoom = 4 << 10

// MaxEventBytes returns the largest event the connected server takes: its
// max_payload (1 MiB unless configured) less HeaderRoom. See
// objects.LimitedBus.
func (o *Objects) MaxEventBytes() int {
	return max(int(o.Bus.nc.MaxPayload())-HeaderRoom, 0)
}

// Publish publishes and waits for the stream's acknowledgement; a repeated
// id within the duplicate window is dropped by the stream.
func (o *Objects) Publish(ctx context.Context, subject string, data []byte, id string) error {
	_, err := o.Bus.Publish(ctx, subject, data, id)
	return tooLarge(err)
}

// tooLarge marks an event the server refuses for its size as
// objects.ErrTooLarge: retrying it cannot help.
func tooLarge(err error) error {
	if errors.Is(err, nats.ErrMaxPayload) {
		return fmt.Errorf("%w: %w", objects.ErrTooLarge, err)
	}
	return err
}

// PublishBatch publishes events in order without waiting for each
// acknowledgement, then waits for them; it returns how many of the first
// ones were acknowledged (see objects.BatchPublisher). Like Bus.Publish, it
// creates the stream again when no stream answers, and publishes the rest
// once more: then a later event of the batch may be stored before an
// earlier one (it reached the stream made again first), once each.
func (o *Objects) PublishBatch(ctx context.Context, events []objects.Event) (int, error) {
	js, _, err := o.Bus.live()
	if err != nil {
		return 0, fmt.Errorf("publish: %w", err)
	}
	n, err := publishBatch(ctx, js, o.Bus.opts.Stream, events)
	if err != nil && streamMissing(err) {
		if rerr := o.Bus.restoreStream(ctx, js); rerr != nil {
			return n, fmt.Errorf("%w (%w)", err, rerr)
		}
		m, err := publishBatch(ctx, js, o.Bus.opts.Stream, events[n:])
		return n + m, err
	}
	return n, err
}

// publishBatch is one attempt of PublishBatch on stream.
func publishBatch(ctx context.Context, js jetstream.JetStream, stream string, events []objects.Event) (int, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(events))
	var sendErr error
	for _, ev := range events {
		if ev.ID == "" {
			sendErr = fmt.Errorf("publish %s: %w", ev.Subject, ErrNoMsgID)
			break
		}
		f, err := js.PublishAsync(ev.Subject, ev.Data, jetstream.WithMsgID(ev.ID), jetstream.WithExpectStream(stream))
		if err != nil {
			sendErr = fmt.Errorf("publish %s id %s: %w", ev.Subject, ev.ID, tooLarge(err))
			break
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return i, fmt.Errorf("publish %s id %s: %w", events[i].Subject, events[i].ID, err)
		case <-ctx.Done():
			return i, fmt.Errorf("publish %s id %s: %w", events[i].Subject, events[i].ID, ctx.Err())
		}
	}
	return len(futures), sendErr
}

// Subscribe starts the node's consumer; stop stops it and waits. Until
// Filter is called it receives every event of the stream.
func (o *Objects) Subscribe(ctx context.Context, deliver func(ctx context.Context, ev objects.Event) error) (func(), error) {
	if o.Durable == "" {
		return nil, fmt.Errorf("natsbus: Objects.Durable is empty")
	}
	c, err := o.Bus.Consume(ctx, o.Durable, "", func(ctx context.Context, m Msg) error {
		return deliver(ctx, objects.Event{Subject: m.Subject, Data: m.Data, ID: m.ID, Published: m.Published})
	}, o.Options)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.filtered {
		if err := c.SetFilter(ctx, o.filter); err != nil {
			c.Stop()
			return nil, err
		}
	}
	o.consumer = c
	return func() {
		o.mu.Lock()
		o.consumer = nil
		o.mu.Unlock()
		c.Stop()
	}, nil
}

// Filter limits the node's consumer to events matching patterns (see
// objects.FilteringBus). A set of patterns JetStream cannot express
// (overlapping ones that neither covers) widens it to every event.
func (o *Objects) Filter(ctx context.Context, patterns []string) error {
	f := filters(patterns, o.Bus.opts.Subjects)
	if f == nil {
		f = o.Bus.opts.Subjects // everything, as subjects (see Consumer.SetFilter)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.consumer != nil {
		if err := o.consumer.SetFilter(ctx, f); err != nil {
			return err
		}
	}
	o.filter, o.filtered = f, true
	return nil
}

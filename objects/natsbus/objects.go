package natsbus

import (
	"context"
	"fmt"

	"sessiond/objects"
)

// Objects adapts a Bus to objects.EventBus: events published by objects go
// to the Bus's stream, and one durable consumer per node (Durable) delivers
// every event of the stream to the node's runtime, which routes it to the
// subscribed objects. Keep Durable stable across restarts of a node (e.g.
// derive it from the data folder) so that it resumes after the last event
// it acknowledged.
type Objects struct {
	Bus     *Bus
	Durable string
	// Options of the node's consumer; nil means defaults (one event at a
	// time, in stream order: publish order per publisher is kept).
	Options *ConsumeOptions
}

var _ objects.EventBus = (*Objects)(nil)

// Publish publishes and waits for the stream's acknowledgement; a repeated
// id within the duplicate window is dropped by the stream.
func (o *Objects) Publish(ctx context.Context, subject string, data []byte, id string) error {
	_, err := o.Bus.Publish(ctx, subject, data, id)
	return err
}

// Subscribe starts the node's consumer; stop stops it and waits.
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
	return c.Stop, nil
}

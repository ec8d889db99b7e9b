// Package natsbus carries events between durable objects over NATS
// JetStream: one stream, a few durable consumers, at-least-once delivery with
// message IDs for de-duplication.
//
// It is an adapter: the runtime in package objects uses it through an
// interface of its own, and cmd/sessiond wires the two together. It imports
// no other package of this project.
//
// Read ExampleStartEmbedded first.
//
// # Lifecycle
//
// A single node runs NATS inside the process: StartEmbedded starts a
// nats-server with JetStream storing under a directory, and
// Embedded.Connect returns an in-process client connection, so nothing
// listens on a port unless EmbeddedOptions.Listen asks for it. A cluster
// connects to an external NATS deployment with Connect or ConnectExternal
// instead. Either way:
//
//	bus, err := natsbus.New(nc, nil)
//	if err := bus.Open(ctx); err != nil { … } // create the stream, or add to it
//	defer bus.Close()                         // stops consumers
//	c, err := bus.Consume(ctx, "wake", "ev.>", handle, nil)
//	res, err := bus.Publish(ctx, "ev.session.abc", data, eventID)
//
// If the stream vanishes while the Bus is open (deleted, or an external
// server restarted with an empty store), Publish and the Consumers create it
// again as Open does, and their consumer with it, instead of failing until
// the next Open.
//
// Close in reverse order of opening: Consumers (or the Bus), then the
// connection, then the Embedded server. A Consumer's durable state stays on
// the server: Consume with the same durable name after a restart resumes
// after the last acknowledged message.
//
// The number of streams and consumers is small and fixed per node, never
// one per object: JetStream keeps state for each, and that state must not
// grow with the number of objects on disk. Objects are addressed by subject.
// A node's consumer (Objects) is filtered to the subjects its objects
// subscribe to (Consumer.SetFilter), so events nobody on the node wants are
// skipped by the server instead of delivered and acknowledged.
//
// # Delivery
//
// Publish returns once the stream has stored the message. A message ID seen
// again within BusOptions.DuplicateWindow is not stored twice, so a
// publisher that retries after an error (with the same ID) does not create
// a second event. A consumer acknowledges a message only after its Handler
// returned nil and waits for the server to confirm the ack; a handler error
// brings the message back after an exponential backoff (1 s doubling to
// 1 min by default), and a crash before the ack brings it back after
// AckWait, or at once, ahead of later messages, when a consumer of the same
// durable name and MaxInFlight 1 starts again (it rewinds to its ack
// floor). Delivery is therefore at least once, and handlers must treat
// Msg.ID as the key of an idempotent operation; a message another client
// published without an ID gets one from the stream (see Msg.ID).
//
// # Durability
//
// An acknowledged publish has been written to the JetStream file store, that
// is handed to the operating system, before the acknowledgement leaves the
// server: it survives the process crashing or being killed. The store is
// fsynced every EmbeddedOptions.SyncInterval (default: the nats-server
// default, 2 minutes), so until the next sync a power loss or kernel crash
// can lose acknowledged messages. SyncAlways fsyncs before every
// acknowledgement and closes that window, at the cost of an fsync per
// publish. With an external cluster and a stream of 3 replicas (made so by
// an operator, which Open keeps, or by BusOptions.Replicas), a message is
// acknowledged once a majority of servers have it, which covers the loss of
// one machine.
//
// A consumer's position (its acknowledgements) is written shortly after the
// server confirms an ack, not before: a server crash just after an ack can
// bring that message back once. That is within at-least-once delivery and
// is why handlers de-duplicate.
//
// # Concurrency
//
// Embedded, Bus and Consumer are safe for concurrent use. A Consumer runs
// its Handler on its own goroutines, at most ConsumeOptions.MaxInFlight at a
// time (default 1, in stream order); Stop and Bus.Close cancel the
// handlers' context and wait for them.
//
// # Errors
//
// Sentinel errors are in errors.go (ErrClosed, ErrNotOpen, ErrNoMsgID,
// ErrInvalidOptions, ErrNotReady); others come from nats.go and its
// jetstream package, wrapped with the operation, so errors.Is matches both.
package natsbus

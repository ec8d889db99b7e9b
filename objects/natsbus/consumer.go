package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for ConsumeOptions.
const (
	// DefaultAckWait is how long the server waits for an ack before it
	// redelivers a message. A running handler keeps extending it.
	DefaultAckWait = 30 * time.Second
	// DefaultMaxInFlight is how many handlers run at once: one, so that
	// messages are handled in stream order.
	DefaultMaxInFlight = 1
	// DefaultRetryDelay is the delay before the first redelivery of a
	// message whose handler failed; it doubles with each delivery.
	DefaultRetryDelay = time.Second
	// DefaultMaxRetryDelay caps the doubling of DefaultRetryDelay.
	DefaultMaxRetryDelay = time.Minute
)

// logKeyPending is the log attribute for a count of unacknowledged messages.
const logKeyPending = "pending"

// ackTimeout bounds the wait for the server to confirm an ack. It does not
// follow the consumer's context: a handled message is worth acking even
// while the consumer stops.
const ackTimeout = 5 * time.Second

// ConsumeOptions configures Consume. The zero value of each field means its
// default.
type ConsumeOptions struct {
	// AckWait is how long the server waits for the outcome of a delivery
	// before delivering the message again. While a handler runs, the
	// consumer tells the server every AckWait/2 that it is still working,
	// so a slow handler is not raced by a redelivery of its own message.
	// AckWait therefore bounds how long a message sits with a crashed node
	// (unless a Consumer of the same durable starts before, with
	// MaxInFlight 1: see Consume), or in the client's small prefetch buffer
	// (4 x MaxInFlight messages). Default 30 s.
	AckWait time.Duration

	// MaxInFlight is how many handlers may run at once. Default 1, which
	// keeps stream order; above 1 messages are handled concurrently and
	// complete in any order.
	MaxInFlight int

	// RetryDelay is how long after a handler error the message is
	// delivered again; the delay doubles with every delivery, up to
	// MaxRetryDelay. Default 1 s.
	RetryDelay time.Duration

	// MaxRetryDelay caps the retry delay. Default 1 min.
	MaxRetryDelay time.Duration
}

func (o *ConsumeOptions) withDefaults() (ConsumeOptions, error) {
	var r ConsumeOptions
	if o != nil {
		r = *o
	}
	if r.AckWait == 0 {
		r.AckWait = DefaultAckWait
	}
	if r.MaxInFlight == 0 {
		r.MaxInFlight = DefaultMaxInFlight
	}
	if r.RetryDelay == 0 {
		r.RetryDelay = DefaultRetryDelay
	}
	if r.MaxRetryDelay == 0 {
		r.MaxRetryDelay = max(DefaultMaxRetryDelay, r.RetryDelay)
	}
	switch {
	case r.AckWait < time.Millisecond:
		return r, fmt.Errorf("%w: AckWait %v", ErrInvalidOptions, r.AckWait)
	case r.MaxInFlight < 0:
		return r, fmt.Errorf("%w: MaxInFlight %d", ErrInvalidOptions, r.MaxInFlight)
	case r.RetryDelay < 0 || r.MaxRetryDelay < r.RetryDelay:
		return r, fmt.Errorf("%w: RetryDelay %v, MaxRetryDelay %v", ErrInvalidOptions, r.RetryDelay, r.MaxRetryDelay)
	}
	return r, nil
}

// retryDelay is the delay before redelivering a message that failed on its
// n-th delivery: first, doubled n-1 times, capped at limit.
func retryDelay(n uint64, first, limit time.Duration) time.Duration {
	d := first
	for i := uint64(1); i < n && d < limit; i++ {
		if d > limit/2 {
			return limit
		}
		d *= 2
	}
	return min(d, limit)
}

// Msg is one delivery of an event to a Handler.
type Msg struct {
	// Subject the event was published on.
	Subject string
	// Data is the payload. It belongs to the handler.
	Data []byte
	// ID is the publisher's message ID (the Nats-Msg-Id header): stable
	// across redeliveries, the key for the handler's de-duplication. A
	// message published without one (a plain `nats pub`, say) gets one
	// from the stream instead, so ID is never empty:
	// "seq:<stream sequence>:<Published, Unix nanoseconds>". That is the
	// same at every redelivery and unlike that of any other message of the
	// stream, also across a stream deleted and created again (which starts
	// its sequence over); it cannot be taken for an ID sessiond publishes
	// (32 hex digits), and other publishers should not set IDs of that form.
	ID string
	// StreamSeq is the event's position in the stream.
	StreamSeq uint64
	// NumDelivered counts deliveries of this event to this consumer,
	// this one included: 1 the first time. A Consumer that starts by
	// rewinding (see Bus.Consume) starts the count again at 1.
	NumDelivered uint64
	// Published is when the stream stored the event.
	Published time.Time
}

// Handler handles one event. Returning nil acknowledges it: it is not
// delivered to this consumer again. Returning an error has it delivered
// again after a backoff (ConsumeOptions.RetryDelay), with NumDelivered
// incremented; a handler that panics is treated as one that returned an
// error. ctx is cancelled when the consumer stops; the handler should then
// return promptly, and the message goes to the next consumer of the same
// durable name: at once while the server keeps running, and once AckWait has
// passed since the delivery if the server restarted meanwhile.
type Handler func(ctx context.Context, m Msg) error

// Consumer is a running durable consumer, created by Bus.Consume.
// Its methods are safe for concurrent use. Call Stop (or Bus.Close) to end
// it; it also ends on its own if the server deletes it alone or the
// connection is closed, see Done and Err. If the stream vanishes with it
// (deleted, or the server restarted with an empty store), the Consumer
// creates both again, as Open and Consume do, and goes on from the new
// stream's first message.
type Consumer struct {
	durable string
	handler Handler
	opts    ConsumeOptions
	logger  *slog.Logger
	bus     *Bus
	jc      jetstream.Consumer // used by run's goroutine only
	created time.Time          // jc's creation on the server

	mu  sync.Mutex               // serialises SetFilter
	cfg jetstream.ConsumerConfig // as last sent to the server

	cancel context.CancelCauseFunc
	done   chan struct{}
	err    error // written before done is closed
}

// Consume starts the durable pull consumer named durable on the Bus's
// stream, creating it or updating its settings, and calls h for each
// message whose subject matches filter ("" for all), from the first message
// in the stream the first time, and after the last acknowledged one when a
// consumer of the same name existed (across restarts). With MaxInFlight 1,
// handlers run one at a time in stream order, except that a message whose
// handler failed comes back after its retry delay, behind later ones.
// Order holds across restarts too: with MaxInFlight 1, a durable consumer
// that still has messages delivered but not acknowledged (a node killed,
// a connection lost) is first rewound to the message after its ack floor,
// so that those come again before anything later; messages after the
// floor that were acknowledged come again too, and the handler skips them
// by Msg.ID.
//
// Several Consumers with the same durable name, in this process or others,
// share its messages: each goes to one of them. (Stream order then does not
// hold, and with MaxInFlight 1 each that starts rewinds the durable: the
// others' unacknowledged messages come again.) opts may be nil for
// defaults. ctx bounds setting the consumer up only; the Consumer runs until
// Stop or Bus.Close.
func (b *Bus) Consume(ctx context.Context, durable, filter string, h Handler, opts *ConsumeOptions) (*Consumer, error) {
	if durable == "" || h == nil {
		return nil, fmt.Errorf("consume: %w: durable name and handler are required", ErrInvalidOptions)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", durable, err)
	}
	js, busCtx, err := b.live()
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", durable, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "sessiond natsbus consumer",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    -1,
		FilterSubject: filter,
	}
	jc, err := js.CreateOrUpdateConsumer(ctx, b.opts.Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consume %s: ensure consumer: %w", durable, err)
	}
	if o.MaxInFlight == 1 {
		if err := rewind(ctx, js, b.opts.Stream, jc, b.logger.With(logKeyConsumer, durable)); err != nil {
			return nil, fmt.Errorf("consume %s: %w", durable, err)
		}
	}
	c := &Consumer{
		durable: durable,
		handler: h,
		opts:    o,
		logger:  b.logger.With(logKeyConsumer, durable),
		bus:     b,
		jc:      jc,
		created: jc.CachedInfo().Created,
		cfg:     cfg,
		done:    make(chan struct{}),
	}
	// cancel is set before Bus.Close can see c and call Stop.
	cctx, cancel := context.WithCancelCause(busCtx)
	c.cancel = cancel
	if err := b.add(c); err != nil {
		cancel(err)
		return nil, fmt.Errorf("consume %s: %w", durable, err)
	}
	go c.run(cctx)
	return c, nil
}

// rewind makes an ordered consumer deliver again from its ack floor when it
// starts with messages delivered but not acknowledged: those a previous run
// (a node killed, a connection lost) fetched and never settled. Left alone,
// the server would bring them back only once their AckWait passed, behind
// the later messages this run fetches meanwhile, out of stream order. Once
// rewound, they come first, followed by the later messages the previous run
// may already have acknowledged (its acks need not be in order after a
// handler error): handlers de-duplicate by Msg.ID, as for any redelivery.
//
// It uses the consumer reset API of nats-server 2.14 and later. Should the
// server refuse, the consumer is logged and started anyway, as it was
// before: every message still comes, those pending after AckWait, out of
// order.
func rewind(ctx context.Context, js jetstream.JetStream, stream string, jc jetstream.Consumer, logger *slog.Logger) error {
	info := jc.CachedInfo()
	if info == nil || info.NumAckPending == 0 {
		return nil
	}
	if _, err := js.ResetConsumer(ctx, stream, info.Name); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("rewind to ack floor %d: %w", info.AckFloor.Stream, err)
		}
		logger.Warn("cannot rewind to the ack floor; unacknowledged messages will come after AckWait, out of order",
			logKeySeq, info.AckFloor.Stream, logKeyPending, info.NumAckPending, logKeyErr, err)
	}
	return nil
}

// Fetching. Each pull request asks for fetchBatch(MaxInFlight) messages and
// lasts at most fetchWait. The batch is small because messages waiting in
// the client are not covered by the in-progress signal: a large batch behind
// a slow handler would outlive AckWait and be delivered twice. The wait is
// short because a request still open on the server when the consumer stops
// swallows messages until their AckWait passes.
//
// Explicit fetches rather than jetstream's Messages iterator: with a small
// batch the iterator (nats.go v1.55) can miss the moment to send its next
// pull request and sit idle until its heartbeat check, about 30 s later.
const (
	fetchWait       = 5 * time.Second
	fetchRetryDelay = time.Second // after a failed fetch
)

func fetchBatch(maxInFlight int) int { return 4 * maxInFlight }

// Stop stops fetching, cancels the context of running handlers and waits
// for them and for the Consumer's goroutines to return. Messages not
// acknowledged go back to the server for redelivery. The durable consumer
// stays on the server, so a later Consume with the same name resumes.
// Stop is idempotent. It must not be called from the Consumer's own Handler,
// which it would wait for.
func (c *Consumer) Stop() {
	c.cancel(errStopped)
	<-c.done
}

// Done is closed when the Consumer has ended, by Stop or on its own.
func (c *Consumer) Done() <-chan struct{} { return c.done }

// Err returns why the Consumer ended on its own (for example
// jetstream.ErrConsumerNotFound once the consumer alone was deleted on the server,
// or nats.ErrConnectionClosed); nil while it runs and after Stop or
// Bus.Close.
func (c *Consumer) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

func (c *Consumer) run(ctx context.Context) {
	defer close(c.done)
	defer c.bus.remove(c)
	var wg sync.WaitGroup
	defer wg.Wait()

	slots := make(chan struct{}, c.opts.MaxInFlight)
	dispatch := func(jm jetstream.Msg) {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			// Fetched but never handled: give it back at once.
			_ = jm.Nak()
			return
		}
		wg.Go(func() {
			defer func() { <-slots }()
			c.handle(ctx, jm)
		})
	}
	for ctx.Err() == nil {
		if err := c.fetch(ctx, dispatch); err != nil {
			// Nobody waits on this goroutine's result but Err, so
			// the log is the operator's only signal.
			c.err = fmt.Errorf("consume %s: %w", c.durable, err)
			c.logger.Error("consumer ended", logKeyErr, err)
			return
		}
	}
}

// fetch runs one pull request, passing each message to dispatch. It returns
// an error only when the consumer cannot go on; transient failures are
// logged and waited out.
func (c *Consumer) fetch(ctx context.Context, dispatch func(jetstream.Msg)) error {
	fctx, cancel := context.WithTimeout(ctx, fetchWait)
	defer cancel()
	batch, err := c.jc.Fetch(fetchBatch(c.opts.MaxInFlight), jetstream.FetchContext(fctx))
	if err == nil {
		for jm := range batch.Messages() {
			dispatch(jm)
		}
		err = batch.Error()
	}
	switch {
	case err == nil, ctx.Err() != nil, errors.Is(err, context.DeadlineExceeded):
		return nil
	case errors.Is(err, jetstream.ErrBadRequest),
		errors.Is(err, nats.ErrConnectionClosed):
		return err
	}
	lost := errors.Is(err, jetstream.ErrConsumerDeleted)
	if !lost {
		// A pull to a consumer that no longer exists finds no
		// responder, which is also what a cluster in mid-election
		// looks like: ask.
		ictx, icancel := context.WithTimeout(ctx, fetchWait)
		_, ierr := c.jc.Info(ictx)
		icancel()
		if errors.Is(ierr, jetstream.ErrConsumerNotFound) || errors.Is(ierr, jetstream.ErrStreamNotFound) {
			lost, err = true, fmt.Errorf("%w: %w", err, ierr)
		}
	}
	if lost {
		// The consumer is gone, alone or with its stream.
		gone, rerr := c.reattach(ctx)
		if gone {
			return err
		}
		if rerr == nil {
			return nil
		}
		err = fmt.Errorf("%w (%w)", err, rerr)
	}
	c.logger.Warn("fetch failed; retrying", logKeyDelay, fetchRetryDelay, logKeyErr, err)
	t := time.NewTimer(fetchRetryDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}

// reattach is called when the server no longer has the consumer. If its
// stream is missing, or newer than the consumer (so the consumer went with
// the old one), it creates the stream again if needed (Bus.restoreStream)
// and the consumer, with its current settings, and returns nil: fetching
// goes on from the new stream's first message. A consumer deleted on its
// own, from a stream older than it, is gone: an operator's doing, not
// undone here. An error means neither could be told or done yet; the
// caller tries again later.
func (c *Consumer) reattach(ctx context.Context) (gone bool, err error) {
	js, _, err := c.bus.live()
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithTimeout(ctx, restoreTimeout)
	defer cancel()
	s, err := js.Stream(sctx, c.bus.opts.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if err := c.bus.restoreStream(sctx, js); err != nil {
			return false, err
		}
		s, err = js.Stream(sctx, c.bus.opts.Stream)
	}
	if err != nil {
		return false, fmt.Errorf("stream info: %w", err)
	}
	if !s.CachedInfo().Created.After(c.created) {
		return true, nil
	}
	c.mu.Lock() // c.cfg
	defer c.mu.Unlock()
	jc, err := js.CreateOrUpdateConsumer(sctx, c.bus.opts.Stream, c.cfg)
	if err != nil {
		return false, fmt.Errorf("create consumer again: %w", err)
	}
	c.jc, c.created = jc, jc.CachedInfo().Created
	c.logger.Warn("stream was created again; consumer created again on it")
	return false, nil
}

// handle runs the handler on one message and settles it with the server.
func (c *Consumer) handle(ctx context.Context, jm jetstream.Msg) {
	md, err := jm.Metadata()
	if err != nil {
		// Not a JetStream delivery: nothing to retry.
		c.logger.Error("message without jetstream metadata dropped", logKeySubject, jm.Subject(), logKeyErr, err)
		_ = jm.Term()
		return
	}
	m := Msg{
		Subject:      jm.Subject(),
		Data:         jm.Data(),
		ID:           msgID(jm.Headers().Get(jetstream.MsgIDHeader), md),
		StreamSeq:    md.Sequence.Stream,
		NumDelivered: md.NumDelivered,
		Published:    md.Timestamp,
	}
	herr := c.call(ctx, jm, m)
	switch {
	case herr == nil:
		// A confirmed ack: once it returns, a crash or restart does
		// not bring the message back.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
		defer cancel()
		if err := jm.DoubleAck(actx); err != nil {
			c.logger.Warn("ack not confirmed; message may be redelivered",
				logKeySubject, m.Subject, logKeySeq, m.StreamSeq, logKeyErr, err)
		}
	case ctx.Err() != nil:
		// Stopping, not failing: give the message back at once.
		_ = jm.Nak()
	default:
		delay := retryDelay(m.NumDelivered, c.opts.RetryDelay, c.opts.MaxRetryDelay)
		level := slog.LevelWarn
		var pe *panicError
		if errors.As(herr, &pe) {
			level = slog.LevelError
		}
		c.logger.Log(ctx, level, "handler failed; message will be redelivered",
			logKeySubject, m.Subject, logKeySeq, m.StreamSeq,
			logKeyDelivered, m.NumDelivered, logKeyDelay, delay, logKeyErr, herr)
		_ = jm.NakWithDelay(delay)
	}
}

// msgID returns the Msg.ID of a message whose Nats-Msg-Id header is header.
func msgID(header string, md *jetstream.MsgMetadata) string {
	if header != "" {
		return header
	}
	return "seq:" + strconv.FormatUint(md.Sequence.Stream, 10) + ":" + strconv.FormatInt(md.Timestamp.UnixNano(), 10)
}

// call runs the handler, telling the server the message is in progress
// while it runs, and turns a panic into an error: a poison message must
// not take the node down, and again after each restart.
func (c *Consumer) call(ctx context.Context, jm jetstream.Msg, m Msg) (err error) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(c.opts.AckWait / 2)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = jm.InProgress()
			case <-stop:
				return
			}
		}
	})
	defer func() {
		close(stop)
		wg.Wait()
	}()
	defer func() {
		if r := recover(); r != nil {
			err = &panicError{value: r, stack: debug.Stack()}
		}
	}()
	return c.handler(ctx, m)
}

// panicError is a recovered handler panic.
type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string {
	return fmt.Sprintf("handler panic: %v\n%s", e.value, e.stack)
}

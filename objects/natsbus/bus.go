package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for BusOptions.
const (
	// DefaultStream is the name of the one stream that carries events.
	DefaultStream = "SESSIOND_EVENTS"
	// DefaultSubject is the subject space the stream captures.
	DefaultSubject = "ev.>"
	// DefaultReplicas suits a single server; a cluster wants 3.
	DefaultReplicas = 1
	// DefaultDuplicateWindow is how long a message ID is remembered for
	// de-duplication.
	DefaultDuplicateWindow = 2 * time.Minute
	// DefaultMaxAge is how long an event is kept, consumed or not.
	DefaultMaxAge = 7 * 24 * time.Hour
)

// Log attribute keys.
const (
	logKeyComponent = "component"
	logKeyStream    = "stream"
	logKeyConsumer  = "consumer"
	logKeySubject   = "subject"
	logKeySeq       = "seq"
	logKeyDelivered = "delivered"
	logKeyDelay     = "delay"
	logKeyErr       = "err"
)

// BusOptions configures a Bus. The zero value of each field means its
// default. The stream's settings (Replicas, DuplicateWindow, MaxAge) are
// defaults for a stream Open creates; a stream that already exists keeps
// its own, except for the fields given a non-zero value here.
type BusOptions struct {
	// Stream is the JetStream stream name. Default DefaultStream.
	Stream string

	// Subjects are the subjects the stream stores. Default
	// [DefaultSubject]. Publishing on a subject outside them fails. Open
	// adds them to an existing stream's subjects, keeping the others.
	Subjects []string

	// Replicas is the number of stream replicas; it cannot exceed the
	// number of JetStream servers. Default: the existing stream's, or 1.
	Replicas int

	// DuplicateWindow is how long the server remembers a message ID: a
	// second publish with the same ID within it is acknowledged as a
	// duplicate and not stored again. Default: the existing stream's, or
	// 2 minutes; at most MaxAge.
	DuplicateWindow time.Duration

	// MaxAge is how long events are kept. An event nobody consumed within
	// it is lost. Default: the existing stream's, or 7 days.
	MaxAge time.Duration

	// Logger receives consumer diagnostics (handler errors, a consumer
	// that ended). Default slog.Default().
	Logger *slog.Logger
}

func (o *BusOptions) withDefaults() (BusOptions, error) {
	var r BusOptions
	if o != nil {
		r = *o
		r.Subjects = append([]string(nil), o.Subjects...)
	}
	if r.Stream == "" {
		r.Stream = DefaultStream
	}
	if len(r.Subjects) == 0 {
		r.Subjects = []string{DefaultSubject}
	}
	if r.Replicas == 0 {
		r.Replicas = DefaultReplicas
	}
	if r.DuplicateWindow == 0 {
		r.DuplicateWindow = DefaultDuplicateWindow
	}
	if r.MaxAge == 0 {
		r.MaxAge = DefaultMaxAge
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	switch {
	case r.Replicas < 0:
		return r, fmt.Errorf("%w: Replicas %d", ErrInvalidOptions, r.Replicas)
	case r.DuplicateWindow < 0 || r.MaxAge < 0:
		return r, fmt.Errorf("%w: negative DuplicateWindow or MaxAge", ErrInvalidOptions)
	case r.DuplicateWindow > r.MaxAge:
		return r, fmt.Errorf("%w: DuplicateWindow %v exceeds MaxAge %v", ErrInvalidOptions, r.DuplicateWindow, r.MaxAge)
	}
	return r, nil
}

// explicitOptions records which BusOptions fields the caller set: only
// those change a stream that already exists.
type explicitOptions struct {
	replicas, duplicateWindow, maxAge bool
}

type busState int

const (
	busNew busState = iota
	busOpen
	busClosed
)

// Bus publishes events to one JetStream stream and runs durable consumers on
// it.
//
// A node needs one Bus and a handful of consumers (one per kind of work,
// never one per object): JetStream keeps state per stream and per consumer,
// so their number must not grow with the number of objects. Objects are told
// apart by subject instead.
//
// Delivery is at least once. A message can reach a handler twice (after a
// handler error, a crash before the ack, or an ack lost with the
// connection), so handlers de-duplicate by Msg.ID.
//
// Publish and Consume are safe for concurrent use once Open has returned.
// The Bus does not own the connection: close the Bus, then the connection.
type Bus struct {
	nc       *nats.Conn
	opts     BusOptions
	explicit explicitOptions
	logger   *slog.Logger

	mu        sync.Mutex
	state     busState
	js        jetstream.JetStream
	ctx       context.Context // cancelled by Close; parent of consumers
	cancel    context.CancelCauseFunc
	consumers map[*Consumer]struct{}

	// restoring is held (a token in it) while restoreStream runs; it
	// guards restoredAt and restoreErr, its last attempt's time and result.
	restoring  chan struct{}
	restoredAt time.Time
	restoreErr error
}

// New returns a Bus on nc; opts may be nil for defaults. Call Open before
// use.
func New(nc *nats.Conn, opts *BusOptions) (*Bus, error) {
	if nc == nil {
		return nil, fmt.Errorf("new bus: %w: nil connection", ErrInvalidOptions)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("new bus: %w", err)
	}
	var set explicitOptions
	if opts != nil {
		set = explicitOptions{replicas: opts.Replicas != 0, duplicateWindow: opts.DuplicateWindow != 0, maxAge: opts.MaxAge != 0}
	}
	return &Bus{
		nc:        nc,
		opts:      o,
		explicit:  set,
		logger:    o.Logger.With(logKeyComponent, "natsbus", logKeyStream, o.Stream),
		consumers: make(map[*Consumer]struct{}),
		restoring: make(chan struct{}, 1),
	}, nil
}

// Open creates the stream if it does not exist, with the Bus's settings.
// A stream that exists keeps its own settings (replicas, limits, storage,
// duplicate window: an operator may have made it for a cluster): Open only
// adds the Bus's subjects it lacks to its subject list, and applies the
// BusOptions fields given a non-zero value. A stream whose subjects overlap
// the Bus's without covering them is an error, not rewritten. On error it
// is safe to Close the Bus.
func (b *Bus) Open(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case busOpen:
		return fmt.Errorf("open bus %s: already open", b.opts.Stream)
	case busClosed:
		return fmt.Errorf("open bus %s: %w", b.opts.Stream, ErrClosed)
	}
	js, err := jetstream.New(b.nc)
	if err != nil {
		return fmt.Errorf("open bus %s: %w", b.opts.Stream, err)
	}
	_, err = b.ensureStream(ctx, js)
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		// Nobody answers JetStream's API: a server run without it.
		return fmt.Errorf("open bus %s: the NATS server has no JetStream (start it with JetStream enabled, e.g. nats-server -js): %w", b.opts.Stream, err)
	}
	if err != nil {
		return fmt.Errorf("open bus %s: %w", b.opts.Stream, err)
	}
	b.js = js
	b.ctx, b.cancel = context.WithCancelCause(context.Background())
	b.state = busOpen
	return nil
}

// newStreamConfig is the stream Open creates when there is none.
func (b *Bus) newStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        b.opts.Stream,
		Description: "sessiond events between durable objects",
		Subjects:    b.opts.Subjects,
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    b.opts.Replicas,
		Duplicates:  b.opts.DuplicateWindow,
		MaxAge:      b.opts.MaxAge,
		Discard:     jetstream.DiscardOld,
	}
}

// ensureStream creates the stream with newStreamConfig if it does not
// exist, and then reports created. If it does, it adds the Bus's subjects
// missing from it and the settings given explicitly in BusOptions, and
// leaves the rest as it is.
func (b *Bus) ensureStream(ctx context.Context, js jetstream.JetStream) (created bool, err error) {
	s, err := js.Stream(ctx, b.opts.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, b.newStreamConfig())
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			if err != nil {
				return false, fmt.Errorf("create stream: %w", err)
			}
			return true, nil
		}
		// Another node created it meanwhile: take it as it is.
		s, err = js.Stream(ctx, b.opts.Stream)
	}
	if err != nil {
		return false, fmt.Errorf("stream info: %w", err)
	}
	have := s.CachedInfo().Config
	want := have
	want.Subjects = slices.Clone(have.Subjects)
	for _, subj := range b.opts.Subjects {
		if slices.ContainsFunc(have.Subjects, func(h string) bool { return subsumes(h, subj) }) {
			continue
		}
		if i := slices.IndexFunc(have.Subjects, func(h string) bool { return overlaps(h, subj) }); i >= 0 {
			return false, fmt.Errorf("stream %s stores subjects %q, and %q overlaps %q without covering it: give the stream %q in place of %q, or use another stream",
				b.opts.Stream, have.Subjects, have.Subjects[i], subj, subj, have.Subjects[i])
		}
		want.Subjects = append(want.Subjects, subj)
	}
	if b.explicit.replicas {
		want.Replicas = b.opts.Replicas
	}
	if b.explicit.duplicateWindow {
		want.Duplicates = b.opts.DuplicateWindow
	}
	if b.explicit.maxAge {
		want.MaxAge = b.opts.MaxAge
	}
	if slices.Equal(want.Subjects, have.Subjects) && want.Replicas == have.Replicas &&
		want.Duplicates == have.Duplicates && want.MaxAge == have.MaxAge {
		return false, nil
	}
	if _, err := js.UpdateStream(ctx, want); err != nil {
		return false, fmt.Errorf("update stream (subjects %q, replicas %d, duplicate window %v, max age %v): %w",
			want.Subjects, want.Replicas, want.Duplicates, want.MaxAge, err)
	}
	b.logger.Info("stream updated",
		"subjects", want.Subjects, "replicas", want.Replicas, "duplicate_window", want.Duplicates, "max_age", want.MaxAge)
	return false, nil
}

// Restoring the stream. The stream can vanish while the Bus is open: an
// operator deletes it, or an external server restarts with an empty store.
// Publishing then finds no stream to answer, and consumers find their
// consumer gone. Rather than fail until sessiond restarts (whose Open would
// create it), the Bus creates it again, as Open does, when an operation
// finds it missing.
const (
	// restoreTimeout bounds one attempt to restore the stream.
	restoreTimeout = 10 * time.Second
	// restoreInterval is the least time between two attempts, whoever
	// asks: a server that cannot take the stream is not asked in a loop.
	restoreInterval = time.Second
	// restoreGrace is how long a stream must stay missing before it is
	// created again. nats-server stops listing a deleted stream before it
	// removes the stream's files (it stops the stream's consumers in
	// between, which is when consumers find theirs gone): a stream created
	// under the same name in that window has its directory removed under
	// it, and then stores nothing and answers no publish until the server
	// restarts (its log says "critical write error").
	restoreGrace = time.Second
)

// streamMissing reports whether err says that no stream took a publish or
// that the stream does not exist.
func streamMissing(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, nats.ErrNoResponders)
}

// restoreStream ensures the stream (ensureStream) after an operation found
// it missing, and returns nil when the caller should try again: it is there
// now. Concurrent callers wait for one attempt, and an attempt made within
// restoreInterval answers for a new one, with its result.
func (b *Bus) restoreStream(ctx context.Context, js jetstream.JetStream) error {
	select {
	case b.restoring <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	defer func() { <-b.restoring }()
	if !b.restoredAt.IsZero() && time.Since(b.restoredAt) < restoreInterval {
		return b.restoreErr
	}
	rctx, cancel := context.WithTimeout(ctx, restoreTimeout)
	defer cancel()
	if err := b.awaitDeletion(rctx, js); err != nil {
		return err
	}
	created, err := b.ensureStream(rctx, js)
	if err != nil {
		err = fmt.Errorf("restore stream %s: %w", b.opts.Stream, err)
	}
	b.restoredAt, b.restoreErr = time.Now(), err
	if err != nil {
		return err
	}
	if created {
		b.logger.Warn("stream was missing; created it again (events published before are gone with it)")
	}
	return nil
}

// awaitDeletion returns once the stream exists or has been missing for
// restoreGrace (see there), and an error only when ctx ends first.
func (b *Bus) awaitDeletion(ctx context.Context, js jetstream.JetStream) error {
	if _, err := js.Stream(ctx, b.opts.Stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // there, or ensureStream will say what is wrong
	}
	t := time.NewTimer(restoreGrace)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("restore stream %s: %w", b.opts.Stream, context.Cause(ctx))
	}
}

// Close stops every consumer of the Bus, waiting for their handlers to
// return, and makes later calls fail with ErrClosed. It does not close the
// connection. Close is idempotent.
func (b *Bus) Close() {
	b.mu.Lock()
	if b.state == busClosed {
		b.mu.Unlock()
		return
	}
	wasOpen := b.state == busOpen
	b.state = busClosed
	cs := make([]*Consumer, 0, len(b.consumers))
	for c := range b.consumers {
		cs = append(cs, c)
	}
	b.mu.Unlock()

	if wasOpen {
		b.cancel(ErrClosed)
	}
	for _, c := range cs {
		c.Stop()
	}
}

// live returns the JetStream handle and the Bus's lifetime context, or why
// the Bus cannot be used.
func (b *Bus) live() (jetstream.JetStream, context.Context, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case busNew:
		return nil, nil, ErrNotOpen
	case busClosed:
		return nil, nil, ErrClosed
	}
	return b.js, b.ctx, nil
}

// PublishResult is the stream's acknowledgement of a publish.
type PublishResult struct {
	// Seq is the message's stream sequence; for a duplicate, the sequence
	// of the message first stored with that ID.
	Seq uint64
	// Duplicate reports that a message with the same ID was already
	// stored within the duplicate window, so this one was dropped.
	Duplicate bool
}

// Publish stores data on subject with ID msgID and returns once the stream
// has acknowledged it: on return without error the event is durable to the
// stream's storage (see the package doc on durability). Publishing the same
// msgID again within BusOptions.DuplicateWindow stores nothing and reports
// Duplicate, so a publisher retries with the same ID after an error. msgID
// must not be empty.
//
// When no stream answers (it was deleted, or the server lost its store),
// Publish creates the stream again as Open does, and publishes once more.
func (b *Bus) Publish(ctx context.Context, subject string, data []byte, msgID string) (PublishResult, error) {
	if msgID == "" {
		return PublishResult{}, fmt.Errorf("publish %s: %w", subject, ErrNoMsgID)
	}
	js, _, err := b.live()
	if err != nil {
		return PublishResult{}, fmt.Errorf("publish %s: %w", subject, err)
	}
	publish := func() (*jetstream.PubAck, error) {
		return js.Publish(ctx, subject, data,
			jetstream.WithMsgID(msgID),
			jetstream.WithExpectStream(b.opts.Stream))
	}
	ack, err := publish()
	if err != nil && streamMissing(err) {
		if rerr := b.restoreStream(ctx, js); rerr != nil {
			err = fmt.Errorf("%w (%w)", err, rerr)
		} else {
			ack, err = publish()
		}
	}
	if err != nil {
		return PublishResult{}, fmt.Errorf("publish %s id %s: %w", subject, msgID, err)
	}
	return PublishResult{Seq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

func (b *Bus) remove(c *Consumer) {
	b.mu.Lock()
	delete(b.consumers, c)
	b.mu.Unlock()
}

// add registers c unless the Bus closed meanwhile.
func (b *Bus) add(c *Consumer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != busOpen {
		return ErrClosed
	}
	b.consumers[c] = struct{}{}
	return nil
}

// errStopped is the cause of a consumer's context when Stop was called.
var errStopped = errors.New("natsbus: consumer stopped")

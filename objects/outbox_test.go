package objects_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sessiond/objects"
)

// recordingBus is an EventBus that keeps what is published, in order.
type recordingBus struct {
	mu   sync.Mutex
	got  []string // "subject data"
	fail int      // fail this many publishes first
}

func (b *recordingBus) Publish(ctx context.Context, subject string, data []byte, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail > 0 {
		b.fail--
		return context.DeadlineExceeded
	}
	b.got = append(b.got, subject+" "+string(data))
	return nil
}

func (b *recordingBus) Subscribe(ctx context.Context, deliver func(context.Context, objects.Event) error) (func(), error) {
	return func() {}, nil
}

func (b *recordingBus) published() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.got...)
}

func publishCall(ctx context.Context, s *objects.Stub, subject, data string) error {
	_, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		return nil, tx.Publish(ctx, subject, []byte(data))
	})
	return err
}

// An outbox made before seq was AUTOINCREMENT is upgraded in place: its
// unpublished row goes out first, then the new one, and emptying it later
// does not lose the next event.
func TestOutboxUpgradeKeepsRowsAndOrder(t *testing.T) {
	ctx := context.Background()
	bus := &recordingBus{fail: 1} // the first publish fails: the drainer retries from the database
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Bus = bus })
	s := stub(t, ns, "old-outbox")
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		if _, err := tx.Exec(ctx, `CREATE TABLE _outbox (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, subject TEXT NOT NULL, data BLOB NOT NULL, created_at INTEGER NOT NULL)`); err != nil {
			return nil, err
		}
		_, err := tx.Exec(ctx, `INSERT INTO _outbox VALUES (7, 'old-id', 'ev.old', 'left over', 0)`)
		return nil, err
	}); err != nil {
		t.Fatal(err)
	}
	if err := publishCall(ctx, s, "ev.new", "one"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "both events", func() bool { return len(bus.published()) >= 2 })
	if got := bus.published(); got[0] != "ev.old left over" || got[1] != "ev.new one" {
		t.Fatalf("published %q, want the old row then the new", got)
	}
	// A write without events deletes the published rows; the next event
	// still goes out.
	if _, err := add(ctx, s, 1); err != nil {
		t.Fatal(err)
	}
	if err := publishCall(ctx, s, "ev.new", "two"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "third event", func() bool { return len(bus.published()) >= 3 })
	if got := bus.published(); len(got) != 3 || got[2] != "ev.new two" {
		t.Fatalf("published %q", got)
	}
	var seqs []int64
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		rows, err := tx.Query(ctx, `SELECT seq FROM _outbox ORDER BY seq`)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var n int64
			rows.Scan(&n)
			seqs = append(seqs, n)
		}
		return nil, rows.Err()
	}); err != nil {
		t.Fatal(err)
	}
	if len(seqs) == 0 || seqs[len(seqs)-1] != 9 {
		t.Fatalf("outbox seqs %v after the upgrade: want the numbering kept (the newest event 9)", seqs)
	}
}

func outboxRows(t *testing.T, s *objects.Stub) (rows [][2]int64) {
	t.Helper()
	if _, err := s.Call(context.Background(), func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		r, err := tx.Query(ctx, `SELECT seq, done FROM _outbox ORDER BY seq`)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		for r.Next() {
			var row [2]int64
			if err := r.Scan(&row[0], &row[1]); err != nil {
				return nil, err
			}
			rows = append(rows, row)
		}
		return nil, r.Err()
	}); err != nil {
		t.Fatal(err)
	}
	return rows
}

// Published outbox rows are deleted, except the newest, kept as done so that seq never starts again below what the bus
// acknowledged; a done row is not published again after a sleep, and the
// numbering goes on.
func TestOutboxKeepsNewestPublishedRow(t *testing.T) {
	ctx := context.Background()
	bus := &recordingBus{}
	rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) {
		rt.Bus = bus
		rt.IdleTimeout = 50 * time.Millisecond
	})
	s := stub(t, ns, "busy")
	const n = 40
	for i := range n {
		if err := publishCall(ctx, s, "ev.busy", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 10*time.Second, "every event", func() bool { return len(bus.published()) == n })
	// The batches that wrote events deleted the rows published before them;
	// going to sleep deletes the rest (the runtime then forgets what the
	// bus acknowledged).
	checkFor(t, 10*time.Second, "hibernation", func() bool { return rt.Stats().Entries == 0 })
	if got := outboxRows(t, s); len(got) != 1 || got[0] != [2]int64{n, 1} {
		t.Fatalf("outbox after sleep: %v, want only [%d done]", got, n)
	}
	if err := publishCall(ctx, s, "ev.busy", "after sleep"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "the event after sleep", func() bool { return len(bus.published()) >= n+1 })
	time.Sleep(100 * time.Millisecond) // a republished row would come with it
	got := bus.published()
	if len(got) != n+1 || got[n] != "ev.busy after sleep" {
		t.Fatalf("published %d events (last %q), want %d ending with the new one", len(got), got[len(got)-1], n+1)
	}
	rows := outboxRows(t, s)
	if last := rows[len(rows)-1]; last[0] != n+1 {
		t.Fatalf("outbox %v: the event after sleep should be seq %d", rows, n+1)
	}
}

// An object deleted and made again under the same name starts its outbox
// afresh: its events are published, not taken for the deleted object's
// (whose sequence numbers they repeat).
func TestOutboxAfterDeleteAndRecreate(t *testing.T) {
	ctx := context.Background()
	bus := &recordingBus{}
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Bus = bus })
	s := stub(t, ns, "again")
	for i := range 3 {
		if err := publishCall(ctx, s, "ev.again", fmt.Sprint("old ", i)); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 10*time.Second, "the old events", func() bool { return len(bus.published()) == 3 })
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // queued back to back with the call that makes it again
		defer wg.Done()
		if err := s.Delete(ctx); err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(time.Millisecond)
	for i := range 2 {
		if err := publishCall(ctx, s, "ev.again", fmt.Sprint("new ", i)); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := publishCall(ctx, s, "ev.again", "new 2"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "the new object's events", func() bool {
		got := bus.published()
		return len(got) > 0 && got[len(got)-1] == "ev.again new 2"
	})
}

// A deleted object stays deleted: its drainer, retrying an event the bus
// refused, does not make it again to read its outbox.
func TestDeletedObjectNotMadeAgainByItsDrainer(t *testing.T) {
	ctx := context.Background()
	bus := &recordingBus{fail: 1 << 30}
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) {
		rt.Bus = bus
		rt.Logger = slog.New(slog.DiscardHandler) // the failed publishes are expected
	})
	s := stub(t, ns, "gone")
	if err := publishCall(ctx, s, "ev.gone", "x"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // past the drainer's first retries (100, 200, 400 ms …)
	if ok, err := ns.Exists(ctx, "gone"); err != nil || ok {
		t.Fatalf("the deleted object exists again: %v %v", ok, err)
	}
}

// gatedBus is a recordingBus whose publishes wait until open is closed:
// all of them, or only those of subject only if it is set.
type gatedBus struct {
	recordingBus
	open    chan struct{}
	only    string
	waiting atomic.Int64 // publishes that waited at the gate
}

func (b *gatedBus) Publish(ctx context.Context, subject string, data []byte, id string) error {
	if b.only == "" || subject == b.only {
		b.waiting.Add(1)
		select {
		case <-b.open:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return b.recordingBus.Publish(ctx, subject, data, id)
}

// A backlog longer than one read of the outbox (the bus down while an
// object commits 1,000 events) is published in full and in order after a
// restart, page after page, without waiting for another event; an event
// committed meanwhile, held in memory, goes out after the backlog and does
// not make the drainer skip the pages between.
func TestOutboxBacklogLongerThanAPagePublishedInFull(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const n = 1000
	down := &recordingBus{fail: 1 << 30}
	rt, ns := newRuntime(t, dir, func(rt *objects.Runtime) {
		rt.Bus = down
		rt.Logger = slog.New(slog.DiscardHandler) // the failed publishes are expected
	})
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	s := stub(t, ns, "backlog")
	for i := range n {
		if err := publishCall(ctx, s, "ev", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	rt.Close()

	// The drain that start-up resumes waits at the bus until the next
	// event is committed: it is then in memory, far past the first page.
	bus := &gatedBus{open: make(chan struct{})}
	rt, ns = newRuntime(t, dir, func(rt *objects.Runtime) { rt.Bus = bus })
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if err := publishCall(ctx, stub(t, ns, "backlog"), "ev", fmt.Sprint(n)); err != nil {
		t.Fatal(err)
	}
	close(bus.open)
	checkFor(t, 10*time.Second, "every event", func() bool { return len(bus.published()) >= n+1 })
	got := bus.published()
	for i := range n + 1 {
		if want := fmt.Sprint("ev ", i); got[i] != want {
			t.Fatalf("event %d published is %q, want %q (%d published)", i, got[i], want, len(got))
		}
	}
}

// The drainer of a deleted object, still waiting for the bus when the
// object is made again under its name (its entry forgotten and made anew in
// between), stops: it neither takes the new object's events for its own
// (their seqs start again from 1) nor marks them published, which would
// have the new object's next write delete them.
func TestOutboxDrainerOfDeletedObjectLeavesTheNewOneAlone(t *testing.T) {
	ctx := context.Background()
	bus := &gatedBus{open: make(chan struct{}), only: "ev.old"}
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Bus = bus })
	s := stub(t, ns, "again")
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		for i := range 5 {
			if err := tx.Publish(ctx, "ev.old", []byte(fmt.Sprint(i))); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "the old events at the bus", func() bool { return bus.waiting.Load() > 0 })
	if err := s.Delete(ctx); err != nil { // the entry goes with it: nothing else holds it
		t.Fatal(err)
	}
	if err := publishCall(ctx, s, "ev.new", "1"); err != nil { // made again: seq 1
		t.Fatal(err)
	}
	close(bus.open)
	checkFor(t, 10*time.Second, "the old events", func() bool { return len(bus.published()) >= 5 })
	if err := publishCall(ctx, s, "ev.new", "2"); err != nil { // a write: deletes the rows marked published
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "the new object's events", func() bool {
		got := bus.published()
		return slices.Contains(got, "ev.new 1") && slices.Contains(got, "ev.new 2")
	})
}

// idBus is an EventBus that keeps the ids of what is published, in order.
type idBus struct {
	mu  sync.Mutex
	ids []string
}

func (b *idBus) Publish(_ context.Context, subject string, _ []byte, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ids = append(b.ids, subject+" "+id)
	return nil
}

func (b *idBus) Subscribe(context.Context, func(context.Context, objects.Event) error) (func(), error) {
	return func() {}, nil
}

// PublishID publishes with the id it is given (so that two objects can
// record one event), and refuses an id a bus header could not carry.
func TestPublishIDKeepsTheID(t *testing.T) {
	ctx := context.Background()
	bus := &idBus{}
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Bus = bus })
	s := stub(t, ns, "ids")
	const id = "0123456789abcdef0123456789abcdef"
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		for _, bad := range []string{"", "a b", "x\n", string(make([]byte, 65))} {
			if err := tx.PublishID(ctx, "ev.bad", bad, []byte("x")); err == nil {
				return nil, fmt.Errorf("id %q taken", bad)
			}
		}
		return nil, tx.PublishID(ctx, "ev.given", id, []byte("x"))
	}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "the event", func() bool {
		bus.mu.Lock()
		defer bus.mu.Unlock()
		return len(bus.ids) > 0
	})
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if got, want := bus.ids, []string{"ev.given " + id}; !slices.Equal(got, want) {
		t.Fatalf("published %q, want %q", got, want)
	}
}

// gateBus is an EventBus that refuses every event while shut, counting
// the refusals, and keeps what it takes.
type gateBus struct {
	mu      sync.Mutex
	shut    bool
	refused int
	got     []objects.Event
}

func (b *gateBus) Publish(_ context.Context, subject string, data []byte, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.shut {
		b.refused++
		return context.DeadlineExceeded
	}
	b.got = append(b.got, objects.Event{Subject: subject, Data: data, ID: id})
	return nil
}

func (b *gateBus) Subscribe(context.Context, func(context.Context, objects.Event) error) (func(), error) {
	return func() {}, nil
}

func (b *gateBus) state() (got, refused int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.got), b.refused
}

// deleteTaking deletes s, handing over its events; it returns them.
func deleteTaking(ctx context.Context, s *objects.Stub) ([]objects.Event, error) {
	var got []objects.Event
	err := s.DeleteHandingOver(ctx, func(ctx context.Context, evs []objects.Event) error {
		got = evs
		return nil
	})
	return got, err
}

// DeleteHandingOver hands over what the bus had not acknowledged of the
// object's outbox, with the ids it was recorded with, and not what it had;
// from an active object's database or a hibernated one's file.
func TestDeleteHandingOver(t *testing.T) {
	for _, asleep := range []bool{false, true} {
		t.Run(fmt.Sprintf("asleep=%v", asleep), func(t *testing.T) {
			ctx := context.Background()
			bus := &gateBus{}
			idle := time.Hour
			if asleep {
				idle = time.Millisecond
			}
			rt, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Bus = bus; rt.IdleTimeout = idle })
			s := stub(t, ns, "leaving")
			if err := publishCall(ctx, s, "ev.published", "one"); err != nil {
				t.Fatal(err)
			}
			checkFor(t, 10*time.Second, "the first event", func() bool { got, _ := bus.state(); return got == 1 })
			bus.mu.Lock()
			bus.shut = true
			bus.mu.Unlock()
			for _, subject := range []string{"ev.held", "ev.held2"} {
				if err := publishCall(ctx, s, subject, "two"); err != nil {
					t.Fatal(err)
				}
			}
			// Refused once, the drainer has noted what it published before.
			checkFor(t, 10*time.Second, "a refusal", func() bool { _, refused := bus.state(); return refused > 0 })
			if asleep {
				checkFor(t, 10*time.Second, "hibernation", func() bool { return rt.Stats().Active == 0 })
			}
			evs, err := deleteTaking(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ev := range evs {
				got = append(got, ev.Subject+" "+string(ev.Data))
				if len(ev.ID) != 32 {
					t.Errorf("event %s id %q", ev.Subject, ev.ID)
				}
			}
			if want := []string{"ev.held two", "ev.held2 two"}; !slices.Equal(got, want) {
				t.Fatalf("returned %q, want %q", got, want)
			}
			if ok, err := ns.Exists(ctx, "leaving"); ok || err != nil {
				t.Fatalf("exists after the delete: %v %v", ok, err)
			}
		})
	}
}

// A deletion whose events could not be handed over deletes nothing: the
// object stays, with its data, and its events are published once the bus
// takes them.
func TestDeleteHandingOverFailingKeepsTheObject(t *testing.T) {
	ctx := context.Background()
	bus := &gateBus{shut: true}
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) {
		rt.Bus = bus
		rt.Logger = slog.New(slog.DiscardHandler) // the refused publishes are expected
	})
	s := stub(t, ns, "staying")
	if err := publishCall(ctx, s, "ev.kept", "one"); err != nil {
		t.Fatal(err)
	}
	refused := errors.New("nowhere to keep them")
	var handed []objects.Event
	err := s.DeleteHandingOver(ctx, func(ctx context.Context, evs []objects.Event) error {
		handed = evs
		return refused
	})
	if !errors.Is(err, refused) || len(handed) != 1 {
		t.Fatalf("delete: %v, %d events handed; want the keeper's error after one event", err, len(handed))
	}
	if ok, err := ns.Exists(ctx, "staying"); !ok || err != nil {
		t.Fatalf("the object is gone after a failed hand-over: %v %v", ok, err)
	}
	bus.mu.Lock()
	bus.shut = false
	bus.mu.Unlock()
	if err := publishCall(ctx, s, "ev.kept", "two"); err != nil { // a write: its drain runs
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "both events", func() bool { got, _ := bus.state(); return got == 2 })
}

// slowBus is an EventBus whose publishes wait for release; publishing is
// closed as the first one begins.
type slowBus struct {
	publishing, release chan struct{}
	once                sync.Once
}

func (b *slowBus) Publish(ctx context.Context, _ string, _ []byte, _ string) error {
	b.once.Do(func() { close(b.publishing) })
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *slowBus) Subscribe(context.Context, func(context.Context, objects.Event) error) (func(), error) {
	return func() {}, nil
}

// An event whose publish is under way as its object is deleted is not
// handed back once the bus takes it: the deletion waits for the answer
// (for up to a second), rather than have it published twice.
func TestDeleteHandingOverWaitsForThePublishUnderWay(t *testing.T) {
	ctx := context.Background()
	bus := &slowBus{publishing: make(chan struct{}), release: make(chan struct{})}
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.Bus = bus })
	s := stub(t, ns, "leaving")
	if err := publishCall(ctx, s, "ev.slow", "x"); err != nil {
		t.Fatal(err)
	}
	<-bus.publishing
	type result struct {
		evs []objects.Event
		err error
	}
	done := make(chan result, 1)
	go func() {
		evs, err := deleteTaking(ctx, s)
		done <- result{evs, err}
	}()
	var r result
	early := false
	select {
	case r = <-done: // did not wait: checked below
		early = true
	case <-time.After(100 * time.Millisecond):
	}
	close(bus.release)
	if !early {
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the deletion did not end")
		}
	}
	if r.err != nil || len(r.evs) != 0 {
		t.Fatalf("returned %d events (%v), want none: the bus took the one under way", len(r.evs), r.err)
	}
}

package natsbus_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"sessiond/objects"
	"sessiond/objects/natsbus"
)

// The event suite runs the runtime's events over a real bus: embedded and a
// separate nats-server process.

// inbox is a test object that subscribes to subjects and records events, and
// publishes on request.
type inbox struct {
	name string
	got  *received
}

// received is shared by every instance of the test's inboxes, so that it
// outlives hibernation; it is the test's view of what handlers ran.
type received struct {
	mu   sync.Mutex
	seen map[string][]string // object → "subject data" in order
}

func (r *received) add(obj, s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen[obj] = append(r.seen[obj], s)
}

func (r *received) of(obj string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen[obj]...)
}

func (b *inbox) Event(ctx context.Context, tx *objects.Tx, ev objects.Event) error {
	if _, err := tx.Exec(ctx, `INSERT INTO got (subject, data) VALUES (?, ?)`, ev.Subject, string(ev.Data)); err != nil {
		return err
	}
	tx.OnCommit(func() { b.got.add(b.name, ev.Subject+" "+string(ev.Data)) })
	return nil
}

func inboxClass(got *received) objects.Class {
	return objects.Class{
		Migrations: []string{`CREATE TABLE got (seq INTEGER PRIMARY KEY, subject TEXT, data TEXT)`},
		New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
			if h.Unsettled() {
				got.add(h.Name()+" unsettled", "woken")
			}
			return &inbox{name: h.Name(), got: got}, nil
		},
	}
}

type eventEnv struct {
	rt  *objects.Runtime
	ns  *objects.Namespace
	got *received
}

// openEventRuntime opens a runtime in dir whose events go through bus.
func openEventRuntime(tb testing.TB, dir string, bus objects.EventBus, got *received) *eventEnv {
	tb.Helper()
	rt := objects.NewRuntime(dir)
	rt.Durability = objects.DurabilityNormal
	rt.IdleTimeout = 20 * time.Millisecond
	rt.Logger = testLogger(tb)
	rt.Bus = bus
	ns, err := rt.Register("inbox", inboxClass(got))
	if err != nil {
		tb.Fatal(err)
	}
	if err := rt.Open(testCtx(tb)); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rt.Close() })
	return &eventEnv{rt: rt, ns: ns, got: got}
}

func objectsBus(tb testing.TB, nc *nats.Conn) *natsbus.Objects {
	bus := openBus(tb, nc, nil)
	return &natsbus.Objects{Bus: bus, Durable: "node-test", Options: &natsbus.ConsumeOptions{RetryDelay: 50 * time.Millisecond, AckWait: 2 * time.Second}}
}

func (e *eventEnv) call(tb testing.TB, name string, fn func(ctx context.Context, tx *objects.Tx) error) error {
	tb.Helper()
	s, err := e.ns.Get(name)
	if err != nil {
		tb.Fatal(err)
	}
	_, err = s.Call(testCtx(tb), func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		return nil, fn(ctx, tx)
	})
	return err
}

func (e *eventEnv) subscribe(tb testing.TB, name, pattern string) {
	tb.Helper()
	if err := e.call(tb, name, func(ctx context.Context, tx *objects.Tx) error { return tx.Subscribe(pattern) }); err != nil {
		tb.Fatal(err)
	}
}

func (e *eventEnv) publish(tb testing.TB, name, subject, data string) {
	tb.Helper()
	if err := e.call(tb, name, func(ctx context.Context, tx *objects.Tx) error { return tx.Publish(ctx, subject, []byte(data)) }); err != nil {
		tb.Fatal(err)
	}
}

func newReceived() *received { return &received{seen: map[string][]string{}} }

func runEventSuite(t *testing.T, newHarness func(tb testing.TB) *harness) {
	t.Run("WakesHibernated", func(t *testing.T) {
		h := newHarness(t)
		e := openEventRuntime(t, t.TempDir(), objectsBus(t, h.connect(t)), newReceived())
		e.subscribe(t, "B", "ev.task.*")
		checkFor(t, 10*time.Second, "B hibernated", func() bool { return e.rt.Stats().Active == 0 })
		e.publish(t, "A", "ev.task.1", "hello")
		checkFor(t, 10*time.Second, "event at B", func() bool { return len(e.got.of("B")) == 1 })
		if got := e.got.of("B")[0]; got != "ev.task.1 hello" {
			t.Fatalf("B got %q", got)
		}
	})
	t.Run("ColdAfterRestart", func(t *testing.T) {
		h := newHarness(t)
		dir := t.TempDir()
		nc := h.connect(t)
		e := openEventRuntime(t, dir, objectsBus(t, nc), newReceived())
		e.subscribe(t, "B", "ev.cold.>")
		e.rt.Close()
		// A publisher elsewhere (a plain bus client) while the node is down.
		bus := openBus(t, nc, nil)
		if _, err := bus.Publish(testCtx(t), "ev.cold.x.y", []byte("while down"), "id-cold-1"); err != nil {
			t.Fatal(err)
		}
		e2 := openEventRuntime(t, dir, objectsBus(t, nc), newReceived())
		checkFor(t, 10*time.Second, "event at cold B", func() bool { return len(e2.got.of("B")) == 1 })
	})
	t.Run("RollbackPublishesNothing", func(t *testing.T) {
		h := newHarness(t)
		e := openEventRuntime(t, t.TempDir(), objectsBus(t, h.connect(t)), newReceived())
		e.subscribe(t, "B", "ev.rb.*")
		err := e.call(t, "A", func(ctx context.Context, tx *objects.Tx) error {
			if err := tx.Publish(ctx, "ev.rb.1", []byte("never")); err != nil {
				return err
			}
			return errors.New("roll back")
		})
		if err == nil {
			t.Fatal("call did not fail")
		}
		e.publish(t, "A", "ev.rb.2", "after")
		checkFor(t, 10*time.Second, "second event", func() bool { return len(e.got.of("B")) == 1 })
		if got := e.got.of("B"); got[0] != "ev.rb.2 after" {
			t.Fatalf("B got %v", got)
		}
	})
	t.Run("DuplicatesHandledOnce", func(t *testing.T) {
		h := newHarness(t)
		nc := h.connect(t)
		e := openEventRuntime(t, t.TempDir(), objectsBus(t, nc), newReceived())
		e.subscribe(t, "B", "ev.dup")
		// The same id twice past the stream's de-duplication (another
		// stream id each time is what a redelivery looks like to the node).
		raw := openBus(t, nc, &natsbus.BusOptions{DuplicateWindow: time.Millisecond * 100})
		for i := range 2 {
			if _, err := raw.Publish(testCtx(t), "ev.dup", []byte(fmt.Sprint(i)), "same-id"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(150 * time.Millisecond) // let the stream's duplicate window pass, so the bus delivers it twice
		}
		e.publish(t, "A", "ev.dup", "marker")
		checkFor(t, 10*time.Second, "marker", func() bool {
			g := e.got.of("B")
			return len(g) > 0 && g[len(g)-1] == "ev.dup marker"
		})
		if got := e.got.of("B"); len(got) != 2 {
			t.Fatalf("B handled %v, want the duplicate once and the marker", got)
		}
	})
	t.Run("PublishAfterOutboxEmptied", func(t *testing.T) {
		// A's published rows are deleted by its next write; an event after
		// that must still go out (an emptied outbox table once restarted
		// its seq below the published mark).
		h := newHarness(t)
		e := openEventRuntime(t, t.TempDir(), objectsBus(t, h.connect(t)), newReceived())
		e.rt.IdleTimeout = time.Hour
		e.subscribe(t, "B", "ev.empty.*")
		const n = 5
		for i := range n {
			e.publish(t, "A", "ev.empty.x", fmt.Sprint(i))
			checkFor(t, 10*time.Second, fmt.Sprint("event ", i), func() bool { return len(e.got.of("B")) == i+1 })
			// A write without events: the published rows go with it.
			if err := e.call(t, "A", func(ctx context.Context, tx *objects.Tx) error {
				_, err := tx.Exec(ctx, `INSERT INTO got (subject, data) VALUES ('local', 'x')`)
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		if got := e.got.of("B"); len(got) != n || got[n-1] != fmt.Sprint("ev.empty.x ", n-1) {
			t.Fatalf("B got %v", got)
		}
	})
	t.Run("UnsubscribeAndDeleteStopDeliveries", func(t *testing.T) {
		h := newHarness(t)
		e := openEventRuntime(t, t.TempDir(), objectsBus(t, h.connect(t)), newReceived())
		e.subscribe(t, "B", "ev.stop.*")
		e.subscribe(t, "C", "ev.stop.x")
		e.subscribe(t, "D", "ev.stop.>")
		e.publish(t, "A", "ev.stop.x", "1")
		checkFor(t, 10*time.Second, "first event everywhere", func() bool {
			return len(e.got.of("B")) == 1 && len(e.got.of("C")) == 1 && len(e.got.of("D")) == 1
		})
		if err := e.call(t, "B", func(ctx context.Context, tx *objects.Tx) error { tx.Unsubscribe("ev.stop.*"); return nil }); err != nil {
			t.Fatal(err)
		}
		stub, err := e.ns.Get("C")
		if err != nil {
			t.Fatal(err)
		}
		if err := stub.Delete(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		e.publish(t, "A", "ev.stop.x", "2")
		checkFor(t, 10*time.Second, "second event at D", func() bool { return len(e.got.of("D")) == 2 })
		if b, c := e.got.of("B"), e.got.of("C"); len(b) != 1 || len(c) != 1 {
			t.Fatalf("after unsubscribe and delete: B got %v, C got %v", b, c)
		}
	})
	t.Run("OrderPerPublisher", func(t *testing.T) {
		h := newHarness(t)
		e := openEventRuntime(t, t.TempDir(), objectsBus(t, h.connect(t)), newReceived())
		e.subscribe(t, "B", "ev.seq.>")
		const n = 200
		var wg sync.WaitGroup
		for p := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n {
					e.publish(t, fmt.Sprint("P", p), fmt.Sprint("ev.seq.", p), fmt.Sprint(i))
				}
			}()
		}
		wg.Wait()
		checkFor(t, 30*time.Second, "all events", func() bool { return len(e.got.of("B")) == 2*n })
		next := map[string]int{}
		for _, g := range e.got.of("B") {
			subj, data, _ := strings.Cut(g, " ")
			if data != fmt.Sprint(next[subj]) {
				t.Fatalf("%s: got %s, want %d", subj, data, next[subj])
			}
			next[subj]++
		}
	})
}

func TestObjectEventsEmbedded(t *testing.T) {
	runEventSuite(t, newEmbeddedHarness)
}

func TestObjectEventsExternal(t *testing.T) {
	runEventSuite(t, newExternalHarness)
}

// Environment of the child that commits an event and dies before it is
// published.
const (
	envObjectsChild = "NATSBUS_OBJECTS_CHILD" // data dir
	envObjectsURL   = "NATSBUS_OBJECTS_URL"
)

// crashingBus kills its own process with SIGKILL when asked to publish: the
// event is committed in the outbox, the process dies before it leaves.
type crashingBus struct{ objects.EventBus }

func (crashingBus) Publish(context.Context, string, []byte, string) error {
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// runObjectsChild commits one event and is killed before publishing it.
func runObjectsChild() int {
	ctx := context.Background()
	nc, err := natsbus.Connect(ctx, os.Getenv(envObjectsURL))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bus, _ := natsbus.New(nc, nil)
	if err := bus.Open(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	rt := objects.NewRuntime(os.Getenv(envObjectsChild))
	rt.Durability = objects.DurabilityNormal
	rt.Bus = crashingBus{&natsbus.Objects{Bus: bus, Durable: "node-test"}}
	ns, _ := rt.Register("inbox", inboxClass(newReceived()))
	if err := rt.Open(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, _ := ns.Get("A")
	_, err = s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		return nil, tx.Publish(ctx, "ev.crash.1", []byte("survived"))
	})
	fmt.Println("committed", err)
	time.Sleep(10 * time.Second) // the drain kills us first
	return 2
}

// TestEventSurvivesSIGKILLBetweenCommitAndPublish: a process commits an event
// and is killed (SIGKILL) before publishing it; the next start publishes it
// from the outbox and the subscriber handles it exactly once.
func TestEventSurvivesSIGKILLBetweenCommitAndPublish(t *testing.T) {
	e := startEmbedded(t, natsbus.EmbeddedOptions{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	nc := connectEmbedded(t, e)
	dir := t.TempDir()
	first := openEventRuntime(t, dir, objectsBus(t, nc), newReceived())
	first.subscribe(t, "B", "ev.crash.*")
	first.rt.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envObjectsChild+"="+dir, envObjectsURL+"="+e.ClientURL())
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v (printed %q), want SIGKILL", err, line)
	}
	got := newReceived()
	second := openEventRuntime(t, dir, objectsBus(t, nc), got)
	checkFor(t, 10*time.Second, "the event from the outbox", func() bool { return len(got.of("B")) == 1 })
	time.Sleep(200 * time.Millisecond) // a second delivery would show up by now; its absence is the point
	if g := got.of("B"); len(g) != 1 || g[0] != "ev.crash.1 survived" {
		t.Fatalf("B handled %v", g)
	}
	// A, woken at start-up to drain, was told that its previous instance
	// ended unsettled; B, which only received, was not. Settled now, A is
	// not told again after a clean stop.
	checkFor(t, 10*time.Second, "A woken unsettled", func() bool { return len(got.of("A unsettled")) == 1 })
	if g := got.of("B unsettled"); len(g) != 0 {
		t.Fatalf("B woken unsettled: %v", g)
	}
	second.rt.Close()
	again := newReceived()
	env := openEventRuntime(t, dir, objectsBus(t, nc), again)
	a, _ := env.ns.Get("A")
	if _, err := a.Call(context.Background(), func(ctx context.Context, obj any, tx *objects.Tx) (any, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if g := again.of("A unsettled"); len(g) != 0 {
		t.Fatalf("A woken unsettled after a clean stop: %v", g)
	}
}

// downBus takes subscriptions and publishes nothing: events stay in the
// outbox, as on a node whose bus is unreachable.
type downBus struct{}

func (downBus) Publish(context.Context, string, []byte, string) error {
	return errors.New("bus unreachable")
}

func (downBus) Subscribe(context.Context, func(context.Context, objects.Event) error) (func(), error) {
	return func() {}, nil
}

// A server with the default max_payload (1 MiB, headers included) carries
// smaller events than the runtime allows. The runtime learns the server's
// limit: a larger event fails its call cleanly and the largest the server
// takes arrives whole. An event the outbox took under a larger limit (here,
// with no bus limit known) is dropped with a log, and the object's later
// events still arrive instead of waiting behind it for ever.
func TestExternalDefaultMaxPayload(t *testing.T) {
	checkNoLeaks(t)
	s := startExternal(t)
	nc := s.connect(t)
	if got := nc.MaxPayload(); got != 1<<20 {
		t.Fatalf("server max_payload %d, want the default 1 MiB", got)
	}
	limit := int(nc.MaxPayload()) - natsbus.HeaderRoom

	// Written while the bus was unreachable, under the runtime's own limit.
	dir := t.TempDir()
	e := openEventRuntime(t, dir, downBus{}, newReceived())
	e.subscribe(t, "B", "ev.size.*")
	e.publish(t, "A", "ev.size.old", strings.Repeat("o", objects.MaxEventBytes))
	e.publish(t, "A", "ev.size.after", "small")
	e.rt.Close()

	e = openEventRuntime(t, dir, objectsBus(t, nc), newReceived())
	checkFor(t, 20*time.Second, "the event after the oversized one", func() bool { return len(e.got.of("B")) >= 1 })
	if got := e.got.of("B"); got[0] != "ev.size.after small" {
		t.Fatalf("B got %.40q first, want the small event (the oversized one dropped)", got[0])
	}

	err := e.call(t, "A", func(ctx context.Context, tx *objects.Tx) error {
		return tx.Publish(ctx, "ev.size.big", make([]byte, limit+1))
	})
	if !errors.Is(err, objects.ErrTooLarge) {
		t.Fatalf("event of %d bytes on a server taking %d: err %v, want ErrTooLarge", limit+1, limit, err)
	}
	whole := strings.Repeat("w", limit)
	e.publish(t, "A", "ev.size.max", whole)
	checkFor(t, 20*time.Second, "the largest event", func() bool { return len(e.got.of("B")) >= 2 })
	got := e.got.of("B")
	if len(got) != 2 || got[1] != "ev.size.max "+whole {
		t.Fatalf("B got %d events, the last of %d bytes; want 2, the last the %d-byte event whole", len(got), len(got[len(got)-1]), limit)
	}
}

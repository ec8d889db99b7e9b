package session_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"sessiond/objects"
	"sessiond/session"
	"sessiond/streaming"
)

// heldBus is an event bus that refuses the events of one session while
// held (as a bus that is slow or away would leave them unpublished), and
// records every event it takes, in order.
type heldBus struct {
	mu      sync.Mutex
	prefix  string // "sessiond.session.<id>.": the held session's subjects
	held    bool
	refused int
	got     []heldEvent
}

type heldEvent struct {
	subject, id string
	data        []byte
}

var errHeld = errors.New("held")

func (b *heldBus) Publish(_ context.Context, subject string, data []byte, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held && b.prefix != "" && strings.HasPrefix(subject, b.prefix) {
		b.refused++
		return errHeld
	}
	b.got = append(b.got, heldEvent{subject, id, data})
	return nil
}

func (b *heldBus) Subscribe(context.Context, func(context.Context, objects.Event) error) (func(), error) {
	return func() {}, nil
}

func (b *heldBus) hold(prefix string) {
	b.mu.Lock()
	b.prefix, b.held = prefix, true
	b.mu.Unlock()
}

func (b *heldBus) release() {
	b.mu.Lock()
	b.held = false
	b.mu.Unlock()
}

// events returns the subjects (after prefix) of the events taken, in order.
func (b *heldBus) events() []heldEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]heldEvent(nil), b.got...)
}

// A session deleted while a generation runs and another waits ends both
// as cancelled with the error "deleted", in its generation.done events
// and in the final events its viewers get; and the events reach the bus
// even when the session's own outbox, deleted with it, had not published
// them (the bus held them back until the deletion was over).
func TestDeleteEndsGenerationsAsDeleted(t *testing.T) {
	ctx := context.Background()
	bus := &heldBus{}
	started := make(chan struct{}, 1)
	e := newEnvBus(t, "", 0, bus, func(svc *session.Service, reg *session.Registry) {
		svc.Events = true
		// Streams one word, then waits for its end: a generation that
		// runs until the deletion cancels it.
		err := reg.Register("blocking", &fakeModel{stream: func(ctx context.Context, _ *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
			if err := emit(session.Delta{Text: "one"}); err != nil {
				return nil, err
			}
			started <- struct{}{}
			<-ctx.Done()
			return nil, context.Cause(ctx)
		}}, session.ModelInfo{})
		if err != nil {
			t.Fatal(err)
		}
	})
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{Model: "blocking"})
	if err != nil {
		t.Fatal(err)
	}
	bus.hold("sessiond.session." + s.ID + ".")
	t.Cleanup(bus.release)
	c := dialSession(t, e, s.ID)
	sendMsg(t, c, map[string]any{"type": "hello"})
	readUntil(t, c, "ready")
	var gens []*session.Generation
	for range 2 {
		res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("hi")}, Generate: true})
		if err != nil {
			t.Fatal(err)
		}
		gens = append(gens, res.Generation)
	}
	running, queued := gens[0].ID, gens[1].ID
	if gens[0].Status != session.GenRunning || gens[1].Status != session.GenQueued {
		t.Fatalf("generations %s and %s, want running and queued", gens[0].Status, gens[1].Status)
	}
	<-started

	// The viewer's final events, read as they come until the deletion
	// closes the socket.
	type final struct {
		FinishReason string                 `json:"finish_reason"`
		Error        *struct{ Code string } `json:"error"`
	}
	finals := map[string]string{}
	read := make(chan error, 1)
	go func() {
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				read <- err
				return
			}
			var m struct {
				Type, Generation string
				final
			}
			if json.Unmarshal(b, &m) != nil || m.Type != "done" && m.Type != "error" {
				continue
			}
			got := m.Type + " " + m.FinishReason
			if m.Error != nil {
				got += " " + m.Error.Code
			}
			finals[m.Generation] = got
		}
	}()

	// A follower of the queued generation (an SSE stream), waiting for it
	// to start when the deletion comes.
	sink := &frameSink{}
	follower := streaming.NewViewer(sink, &streaming.ViewerOptions{CloseOnFinal: true})
	followed := make(chan error, 1)
	go func() { followed <- e.svc.Follow(ctx, "local", s.ID, queued, 0, follower) }()
	checkFor(t, "the follower to wait", func() bool { n, _ := session.FollowWaiting(e.svc, s.ID); return n > 0 })

	if err := e.svc.Delete(ctx, "local", s.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-followed:
		if err != nil {
			t.Errorf("following the queued generation: %v, want its final event", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follower of the queued generation still waits")
	}
	sink.mu.Lock()
	frames := slices.Clone(sink.frames)
	sink.mu.Unlock()
	var last struct {
		Type   string
		Offset int64
		Error  *struct{ Code string }
	}
	if len(frames) != 1 || json.Unmarshal([]byte(frames[0]), &last) != nil || last.Type != "done" || last.Offset != 1 || last.Error == nil || last.Error.Code != "deleted" {
		t.Errorf("the queued generation's follower was sent %q, want one done at offset 1 with error deleted", frames)
	}
	select {
	case err := <-read:
		if got := websocket.CloseStatus(err); got != websocket.StatusNormalClosure {
			t.Errorf("socket closed with %v, want 1000 (object deleted)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the socket of the deleted session is open still")
	}
	for gid, what := range map[string]string{running: "running", queued: "queued"} {
		if got, want := finals[gid], "done cancelled deleted"; got != want {
			t.Errorf("the %s generation's final event to the viewer: %q, want %q", what, got, want)
		}
	}

	// The session and its outbox are gone: its events come from the
	// deletion's own record of them.
	bus.release()
	var evs []heldEvent
	checkFor(t, "the deleted event", func() bool {
		evs = bus.events()
		return len(evs) > 0 && evs[len(evs)-1].subject == "sessiond.session."+s.ID+".deleted"
	})
	ended := map[string]string{}
	for _, ev := range evs {
		if !strings.HasSuffix(ev.subject, ".generation.done") && !strings.HasSuffix(ev.subject, ".generation.failed") {
			continue
		}
		var body struct {
			GenerationID string                 `json:"generation_id"`
			Status       string                 `json:"status"`
			Error        *struct{ Code string } `json:"error"`
		}
		if err := json.Unmarshal(ev.data, &body); err != nil {
			t.Fatalf("%s: %v", ev.data, err)
		}
		got := body.Status
		if body.Error != nil {
			got += " " + body.Error.Code
		}
		ended[body.GenerationID] += got
	}
	for gid, what := range map[string]string{running: "running", queued: "queued"} {
		if got, want := ended[gid], "cancelled deleted"; got != want {
			t.Errorf("the %s generation's generation.done: %q, want %q (events %d)", what, got, want, len(evs))
		}
	}
}

// A session's deletion publishes what its outbox had not published (a bus
// that was away), with their ids, before its deleted event; and nothing it
// had published again.
func TestDeletePublishesWhatTheOutboxHeld(t *testing.T) {
	ctx := context.Background()
	bus := &heldBus{}
	e := newEnvBus(t, "", 0, bus, func(svc *session.Service, _ *session.Registry) { svc.Events = true })
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	post := func(text string) {
		t.Helper()
		if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(text)}}); err != nil {
			t.Fatal(err)
		}
	}
	p := "sessiond.session." + s.ID + "."
	subjects := func() []string {
		var out []string
		for _, ev := range bus.events() {
			out = append(out, strings.TrimPrefix(ev.subject, p))
		}
		return out
	}
	post("published")
	checkFor(t, "the first turn's event", func() bool { return len(subjects()) == 2 })
	bus.hold(p)
	post("held")
	// Refused once, the session's drain has noted what it published.
	checkFor(t, "a refusal", func() bool { bus.mu.Lock(); defer bus.mu.Unlock(); return bus.refused > 0 })
	if err := e.svc.Delete(ctx, "local", s.ID); err != nil {
		t.Fatal(err)
	}
	bus.release()
	checkFor(t, "the deleted event", func() bool { got := subjects(); return len(got) > 0 && got[len(got)-1] == "deleted" })
	if got, want := strings.Join(subjects(), " "), "created turn turn deleted"; got != want {
		t.Fatalf("published %q, want %q", got, want)
	}
	ids := map[string]bool{}
	for _, ev := range bus.events() {
		if ids[ev.id] {
			t.Fatalf("event %s %s published twice", ev.subject, ev.id)
		}
		ids[ev.id] = true
	}
}

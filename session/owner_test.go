package session_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"

	"sessiond/session"
	"sessiond/streaming"
)

// frames is a streaming.Sink that keeps what it is sent.
type frames struct {
	mu  sync.Mutex
	got [][]byte
}

func (f *frames) WriteFrame(_ context.Context, fs [][]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, fs...)
	return nil
}

func (f *frames) Close(int, string) error { return nil }

// Every method that takes an owner and a session refuses another owner's
// session with ErrNotFound and changes nothing of it, each by its own
// check: the web handlers check first with Get or Generation, so a method
// whose own check were lost would pass their tests. A running generation
// is not cancelled by another owner.
func TestEveryMethodChecksTheOwner(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 20, nil) // 20 words/s: a long generation runs a while
	s, err := e.svc.Create(ctx, "alice", session.CreateRequest{Title: "alice's"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Post(ctx, "alice", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/say one two")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	gid := res.Generation.ID
	waitGen(t, e, "alice", s.ID, gid)
	state := func() string {
		t.Helper()
		var b bytes.Buffer
		if err := e.svc.Export(ctx, "alice", s.ID, &b); err != nil {
			t.Fatal(err)
		}
		list, _, err := e.svc.List(ctx, "alice", "", 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range list {
			b.WriteString("\n" + d.ID + " " + d.Title + " " + d.UpdatedAt.String())
		}
		return b.String()
	}
	before := state()

	// Accept, as the web handler calls it, with bob's principal.
	accepted := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := streaming.Accept(w, r, nil)
		if err != nil {
			accepted <- err
			return
		}
		err = e.svc.Accept(r.Context(), "bob", s.ID, ws)
		accepted <- err
		if err != nil {
			ws.Conn().Close(websocket.StatusPolicyViolation, "refused")
		}
	}))
	defer srv.Close()

	title := "bob's"
	sink := &frames{}
	calls := map[string]func() error{
		"Get": func() error { _, err := e.svc.Get(ctx, "bob", s.ID); return err },
		"Update": func() error {
			_, err := e.svc.Update(ctx, "bob", s.ID, session.UpdateRequest{Title: &title})
			return err
		},
		"Delete": func() error { return e.svc.Delete(ctx, "bob", s.ID) },
		"Turns":  func() error { _, _, err := e.svc.Turns(ctx, "bob", s.ID, session.TurnQuery{Limit: 10}); return err },
		"Post": func() error {
			_, err := e.svc.Post(ctx, "bob", s.ID, session.PostRequest{Turns: []session.NewTurn{user("bob")}, Generate: true})
			return err
		},
		"Generation": func() error { _, err := e.svc.Generation(ctx, "bob", s.ID, gid); return err },
		"Cancel":     func() error { _, err := e.svc.Cancel(ctx, "bob", s.ID, gid); return err },
		"Fork":       func() error { _, err := e.svc.Fork(ctx, "bob", s.ID, 2, "fork-key"); return err },
		"Export": func() error {
			var b bytes.Buffer
			err := e.svc.Export(ctx, "bob", s.ID, &b)
			if b.Len() > 0 {
				t.Errorf("Export wrote %d bytes of another owner's session", b.Len())
			}
			return err
		},
		"Follow": func() error {
			v := streaming.NewViewer(sink, nil)
			defer v.Close()
			return e.svc.Follow(ctx, "bob", s.ID, gid, 0, v)
		},
		"Accept": func() error {
			c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			return <-accepted
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, session.ErrNotFound) {
			t.Errorf("%s of another owner's session: %v, want ErrNotFound", name, err)
		}
	}
	sink.mu.Lock()
	if len(sink.got) > 0 {
		t.Errorf("Follow sent another owner %d frames: %s", len(sink.got), sink.got[0])
	}
	sink.mu.Unlock()
	if after := state(); after != before {
		t.Errorf("another owner's calls changed the session:\nbefore %s\nafter  %s", before, after)
	}
	if list, _, err := e.svc.List(ctx, "bob", "", 100); err != nil || len(list) != 0 {
		t.Errorf("bob's list: %v %v, want none", list, err)
	}
	// Nor did bob's fork claim its Idempotency-Key for alice.
	if _, err := e.svc.Create(ctx, "alice", session.CreateRequest{IdempotencyKey: "fork-key"}); err != nil {
		t.Errorf("alice's create with the key of bob's refused fork: %v", err)
	}

	res, err = e.svc.Post(ctx, "alice", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 5000")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Cancel(ctx, "bob", s.ID, res.Generation.ID); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("Cancel of another owner's running generation: %v, want ErrNotFound", err)
	}
	if g, err := e.svc.Generation(ctx, "alice", s.ID, res.Generation.ID); err != nil || g.Finished() {
		t.Errorf("alice's generation after bob's cancel: %+v %v, want it running", g, err)
	}
	if _, err := e.svc.Cancel(ctx, "alice", s.ID, res.Generation.ID); err != nil {
		t.Fatal(err)
	}
}

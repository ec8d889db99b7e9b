package session_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sessiond/objects"
	"sessiond/session"
	"sessiond/streaming"
)

type tlog struct{ tb testing.TB }

func (w tlog) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

type env struct {
	rt  *objects.Runtime
	svc *session.Service
	dir string
}

// newEnv opens a runtime and a session service in dir ("" = a temp dir)
// with the offline model at tps words per second.
func newEnv(tb testing.TB, dir string, tps float64, configure func(*session.Service, *session.Registry)) *env {
	tb.Helper()
	return newEnvBus(tb, dir, tps, nil, configure)
}

// newEnvBus is newEnv with an event bus (nil: none).
func newEnvBus(tb testing.TB, dir string, tps float64, bus objects.EventBus, configure func(*session.Service, *session.Registry)) *env {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	rt := objects.NewRuntime(dir)
	rt.Durability = objects.DurabilityNormal
	rt.Bus = bus
	logger := slog.New(warnings(tb))
	rt.Logger = logger
	reg := session.NewRegistry()
	if err := reg.Register("offline", session.NewOfflineModel(tps), session.ModelInfo{}); err != nil {
		tb.Fatal(err)
	}
	svc, err := session.NewService(rt, reg)
	if err != nil {
		tb.Fatal(err)
	}
	svc.Logger = logger
	svc.PersistInterval = 10 * time.Millisecond
	if configure != nil {
		configure(svc, reg)
	}
	if err := rt.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	svc.Start()
	e := &env{rt: rt, svc: svc, dir: dir}
	tb.Cleanup(e.close)
	return e
}

func (e *env) close() {
	e.svc.Close()
	e.rt.Close()
}

func user(text string) session.NewTurn {
	b, _ := json.Marshal(text)
	return session.NewTurn{Role: session.RoleUser, Content: b}
}

func text(tb testing.TB, t session.Turn) string {
	tb.Helper()
	var s string
	if err := json.Unmarshal(t.Content, &s); err != nil {
		tb.Fatalf("turn %d content %s: %v", t.ID, t.Content, err)
	}
	return s
}

// waitGen polls until the generation has finished and returns it.
func waitGen(tb testing.TB, e *env, owner, id, gid string) *session.Generation {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, err := e.svc.Generation(context.Background(), owner, id, gid)
		if err != nil {
			tb.Fatal(err)
		}
		if g.Finished() {
			return g
		}
		if time.Now().After(deadline) {
			tb.Fatalf("generation %s still %s", gid, g.Status)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func lastTurns(tb testing.TB, e *env, owner, id string, n int) []session.Turn {
	tb.Helper()
	turns, _, err := e.svc.Turns(context.Background(), owner, id, session.TurnQuery{Limit: n})
	if err != nil {
		tb.Fatal(err)
	}
	return turns
}

func TestCreateGetUpdateDeleteAndOwners(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	s, err := e.svc.Create(ctx, "alice", session.CreateRequest{Title: "first", Metadata: json.RawMessage(`{"k":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if s.Owner != "alice" || s.Model != "offline" || s.Title != "first" || len(s.ID) != 26 {
		t.Fatalf("created %+v", s)
	}
	if _, err := e.svc.Get(ctx, "bob", s.ID); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("bob sees alice's session: err=%v", err)
	}
	if _, err := e.svc.Get(ctx, "", s.ID); err != nil {
		t.Fatalf("admin: %v", err)
	}
	title := "renamed"
	u, err := e.svc.Update(ctx, "alice", s.ID, session.UpdateRequest{Title: &title})
	if err != nil || u.Title != "renamed" || string(u.Metadata) != `{"k":1}` {
		t.Fatalf("update: %+v %v", u, err)
	}
	if _, err := e.svc.Create(ctx, "bob", session.CreateRequest{ID: s.ID}); !errors.Is(err, session.ErrConflict) {
		t.Fatalf("duplicate id: err=%v", err)
	}
	if _, err := e.svc.Create(ctx, "alice", session.CreateRequest{ID: "bad/id"}); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("bad id: err=%v", err)
	}
	if _, err := e.svc.Create(ctx, "alice", session.CreateRequest{Model: "nope"}); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("unknown model: err=%v", err)
	}
	// A post without generation is refused too, nothing stored: the model
	// is unused, but not one the server serves.
	if _, err := e.svc.Post(ctx, "alice", s.ID, session.PostRequest{Turns: []session.NewTurn{user("hi")}, Model: "nope"}); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("unknown model on a post without generation: err=%v", err)
	}
	if got, _, err := e.svc.Turns(ctx, "alice", s.ID, session.TurnQuery{Limit: 10}); err != nil || len(got) != 0 {
		t.Fatalf("turns after a refused post: %d %v, want none", len(got), err)
	}
	if err := e.svc.Delete(ctx, "bob", s.ID); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("bob deletes alice's session: err=%v", err)
	}
	if err := e.svc.Delete(ctx, "alice", s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Get(ctx, "alice", s.ID); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("after delete: err=%v", err)
	}
	list, _, err := e.svc.List(ctx, "alice", "", 10)
	if err != nil || len(list) != 0 {
		t.Fatalf("directory after delete: %v %v", list, err)
	}
}

func TestGenerateCommitsAssistantTurn(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/say hello  there\nworld")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Turns) != 1 || res.Generation == nil {
		t.Fatalf("post result %+v", res)
	}
	g := waitGen(t, e, "local", s.ID, res.Generation.ID)
	if g.Status != session.GenDone {
		t.Fatalf("generation %+v", g)
	}
	turns := lastTurns(t, e, "local", s.ID, 10)
	if len(turns) != 2 {
		t.Fatalf("%d turns", len(turns))
	}
	a := turns[1]
	if a.Role != "assistant" || text(t, a) != "hello  there\nworld" || a.Status != "complete" || *a.ParentID != turns[0].ID ||
		a.Usage == nil || a.Usage.CompletionTokens == 0 || *a.FinishReason != "stop" || *a.GenerationID != g.ID {
		t.Fatalf("assistant turn %+v (%s)", a, a.Content)
	}
	if g.TurnID != a.ID || g.Offset < 2 {
		t.Fatalf("generation %+v", g)
	}
}

func TestFailedGenerationCommitsFailedTurn(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/fail upstream_error")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	g := waitGen(t, e, "local", s.ID, res.Generation.ID)
	if g.Status != session.GenFailed || g.Error == nil || g.Error.Code != "upstream_error" {
		t.Fatalf("generation %+v", g)
	}
	a := lastTurns(t, e, "local", s.ID, 1)[0]
	if a.Status != "failed" || a.Error == nil || a.Error.Code != "upstream_error" {
		t.Fatalf("turn %+v", a)
	}
}

func TestIdempotentPostAcrossRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 0, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	req := session.PostRequest{Turns: []session.NewTurn{user("hi")}, IdempotencyKey: "k1"}
	r1, err := e.svc.Post(ctx, "local", s.ID, req)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := e.svc.Post(ctx, "local", s.ID, req)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Turns[0].ID != r2.Turns[0].ID {
		t.Fatalf("repeat appended: %d vs %d", r1.Turns[0].ID, r2.Turns[0].ID)
	}
	e.close()
	e2 := newEnv(t, dir, 0, nil)
	r3, err := e2.svc.Post(ctx, "local", s.ID, req)
	if err != nil || r3.Turns[0].ID != r1.Turns[0].ID {
		t.Fatalf("after restart: %+v %v", r3, err)
	}
	if n := len(lastTurns(t, e2, "local", s.ID, 10)); n != 1 {
		t.Fatalf("%d turns, want 1", n)
	}
	other := session.PostRequest{Turns: []session.NewTurn{user("different")}, IdempotencyKey: "k1"}
	if _, err := e2.svc.Post(ctx, "local", s.ID, other); !errors.Is(err, session.ErrConflict) {
		t.Fatalf("key reuse with another body: err=%v", err)
	}
}

func TestCancelCommitsPartial(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 200, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 100000")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, "some output", func() bool {
		g, _ := e.svc.Generation(ctx, "local", s.ID, res.Generation.ID)
		return g.Offset >= 3
	})
	g, err := e.svc.Cancel(ctx, "local", s.ID, res.Generation.ID)
	if err != nil {
		t.Fatal(err)
	}
	if g.Status != session.GenCancelled {
		t.Fatalf("after cancel %+v", g)
	}
	a := lastTurns(t, e, "local", s.ID, 1)[0]
	got := text(t, a)
	// What was produced before the cancel, whole: 1 2 3 … k, k ≥ 3, and not all 100,000.
	words := strings.Fields(got)
	for i, w := range words {
		if w != fmt.Sprint(i+1) {
			t.Fatalf("cancelled turn %q: word %d is %q", got, i+1, w)
		}
	}
	if a.Status != "cancelled" || len(words) < 3 || len(words) >= 100000 {
		t.Fatalf("cancelled turn of %d words, status %s", len(words), a.Status)
	}
	// Cancel is idempotent.
	if g2, err := e.svc.Cancel(ctx, "local", s.ID, res.Generation.ID); err != nil || g2.Status != session.GenCancelled {
		t.Fatalf("second cancel %+v %v", g2, err)
	}
}

func checkFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestBusyPolicies(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 100, nil)
	for _, policy := range []string{"queue", "reject", "interrupt"} {
		t.Run(policy, func(t *testing.T) {
			s, _ := e.svc.Create(ctx, "local", session.CreateRequest{BusyPolicy: policy})
			r1, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 100000")}, Generate: true})
			if err != nil {
				t.Fatal(err)
			}
			r2, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/say second")}, Generate: true})
			switch policy {
			case "reject":
				if !errors.Is(err, session.ErrGenerationRunning) {
					t.Fatalf("err=%v, want ErrGenerationRunning", err)
				}
				e.svc.Cancel(ctx, "local", s.ID, r1.Generation.ID)
				return
			case "queue":
				if err != nil || r2.Generation.Status != session.GenQueued {
					t.Fatalf("second post %+v %v", r2, err)
				}
				e.svc.Cancel(ctx, "local", s.ID, r1.Generation.ID)
			case "interrupt":
				if err != nil {
					t.Fatal(err)
				}
			}
			g1 := waitGen(t, e, "local", s.ID, r1.Generation.ID)
			if g1.Status != session.GenCancelled {
				t.Fatalf("first generation %+v", g1)
			}
			g2 := waitGen(t, e, "local", s.ID, r2.Generation.ID)
			if g2.Status != session.GenDone {
				t.Fatalf("second generation %+v", g2)
			}
			turns := lastTurns(t, e, "local", s.ID, 10)
			last := turns[len(turns)-1]
			if text(t, last) != "second" || *last.ParentID != r2.Turns[0].ID {
				t.Fatalf("last turn %s parent %d", last.Content, *last.ParentID)
			}
		})
	}
}

// TestRestartMarksInterrupted stops the runtime under a running generation
// without letting the service finish it, as a crash would, and checks the
// next start shows it interrupted with the output persisted so far.
func TestRestartMarksInterrupted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 200, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 100000")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, "partial output persisted", func() bool {
		turns := lastTurns(t, e, "local", s.ID, 1)
		return len(text(t, turns[0])) > 10
	})
	e.rt.Close() // the service cannot commit the end: like a crash
	e.svc.Close()
	e2 := newEnv(t, dir, 0, nil)
	g, err := e2.svc.Generation(ctx, "local", s.ID, res.Generation.ID)
	if err != nil || g.Status != session.GenInterrupted {
		t.Fatalf("after restart %+v %v", g, err)
	}
	a := lastTurns(t, e2, "local", s.ID, 1)[0]
	if a.Status != "interrupted" || !strings.HasPrefix(text(t, a), "1 2 3 ") {
		t.Fatalf("turn %s %q", a.Status, text(t, a))
	}
	sess, _ := e2.svc.Get(ctx, "local", s.ID)
	if sess.Generation != nil {
		t.Fatalf("session still shows a generation: %+v", sess.Generation)
	}
	// The list shows the output saved, not the question before it.
	list, _, err := e2.svc.List(ctx, "local", "", 10)
	if err != nil || len(list) != 1 || !strings.HasPrefix(list[0].Preview, "1 2 3 ") {
		t.Fatalf("list %+v %v: want the interrupted turn's preview", list, err)
	}
}

// A title change is in the list when its PATCH answers: a crash right
// after it does not leave the list with the old title.
func TestUpdatedTitleListedAcrossCrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 0, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{Title: "old title"})
	title := "new title"
	if _, err := e.svc.Update(ctx, "local", s.ID, session.UpdateRequest{Title: &title}); err != nil {
		t.Fatal(err)
	}
	e.rt.Close() // the service cannot apply what it holds: like a crash
	e.svc.Close()
	e2 := newEnv(t, dir, 0, nil)
	list, _, err := e2.svc.List(ctx, "local", "", 10)
	if err != nil || len(list) != 1 || list[0].Title != title {
		t.Fatalf("list %+v %v: want the title %q", list, err, title)
	}
}

func TestTurnPaging(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	for i := 1; i <= 25; i++ {
		if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(fmt.Sprint(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(ts []session.Turn) string {
		var b strings.Builder
		for _, t := range ts {
			fmt.Fprint(&b, t.ID, " ")
		}
		return strings.TrimSpace(b.String())
	}
	i64 := func(v int64) *int64 { return &v }
	for _, c := range []struct {
		q    session.TurnQuery
		want string
		more bool
	}{
		{session.TurnQuery{Limit: 3}, "23 24 25", true},
		{session.TurnQuery{Limit: 3, Before: i64(23)}, "20 21 22", true},
		{session.TurnQuery{Limit: 3, Before: i64(3)}, "1 2", false},
		{session.TurnQuery{Limit: 3, After: i64(0)}, "1 2 3", true},
		{session.TurnQuery{Limit: 3, After: i64(23)}, "24 25", false},
		{session.TurnQuery{Limit: 30, After: i64(0)}, strings.TrimSpace(strings.Repeat("x", 0)), false},
	} {
		got, more, err := e.svc.Turns(ctx, "local", s.ID, c.q)
		if err != nil {
			t.Fatal(err)
		}
		if c.want == "" {
			if len(got) != 25 || more {
				t.Fatalf("all: %d turns more=%v", len(got), more)
			}
			continue
		}
		if ids(got) != c.want || more != c.more {
			t.Errorf("%+v: got %s more=%v, want %s more=%v", c.q, ids(got), more, c.want, c.more)
		}
	}
}

// TestBranches edits a turn (a sibling branch) and regenerates; the head
// branch and the old branch are each readable.
func TestBranches(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	r, _ := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/say one")}, Generate: true})
	waitGen(t, e, "local", s.ID, r.Generation.ID)
	r2, _ := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/say two")}, Generate: true})
	waitGen(t, e, "local", s.ID, r2.Generation.ID)
	oldLeaf := lastTurns(t, e, "local", s.ID, 1)[0].ID // 4
	// Edit turn 3 ("/say two"): a sibling under turn 2.
	r3, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Parent: 2, Turns: []session.NewTurn{user("/say three")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	waitGen(t, e, "local", s.ID, r3.Generation.ID)
	// Regenerate the answer to turn 5: a sibling assistant turn.
	r4, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Parent: r3.Turns[0].ID, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	waitGen(t, e, "local", s.ID, r4.Generation.ID)
	var got []string
	for _, tr := range lastTurns(t, e, "local", s.ID, 10) {
		got = append(got, fmt.Sprint(tr.ID, ":", text(t, tr)))
	}
	if want := "[1:/say one 2:one 5:/say three 7:three]"; fmt.Sprint(got) != want {
		t.Fatalf("head branch %v, want %s", got, want)
	}
	old, _, err := e.svc.Turns(ctx, "local", s.ID, session.TurnQuery{Limit: 10, Branch: oldLeaf})
	if err != nil || len(old) != 4 || text(t, old[3]) != "two" {
		t.Fatalf("old branch %v %v", old, err)
	}
	after, _, _ := e.svc.Turns(ctx, "local", s.ID, session.TurnQuery{Limit: 10, After: new(int64)})
	if len(after) != 4 || after[2].ID != 5 {
		t.Fatalf("after=0 on the head branch: %d turns", len(after))
	}
	// Fork at turn 2: a new session with turns 1 and 2 only.
	f, err := e.svc.Fork(ctx, "local", s.ID, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	ft := lastTurns(t, e, "local", f.ID, 10)
	if len(ft) != 2 || text(t, ft[1]) != "one" || f.ID == s.ID {
		t.Fatalf("fork %+v turns %v", f, ft)
	}
	// The fork continues on its own.
	rf, _ := e.svc.Post(ctx, "local", f.ID, session.PostRequest{Turns: []session.NewTurn{user("/say forked")}, Generate: true})
	waitGen(t, e, "local", f.ID, rf.Generation.ID)
	if n := len(lastTurns(t, e, "local", s.ID, 10)); n != 4 {
		t.Fatalf("fork changed the source: %d turns", n)
	}
}

// A tool result must answer a call of the assistant turn it follows (or
// of its run of results): one naming no call is refused (422), not stored
// and silently left out of the model's context — the model would make the
// same call again, and an agent with a mistyped id loop. Several results,
// in one post or in several, may answer several calls of one turn.
func TestToolResultMustAnswerACall(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	toolTurn := func(id, text string) session.NewTurn {
		return session.NewTurn{Role: "tool", ToolCallID: id, Content: json.RawMessage(strconv.Quote(text))}
	}
	// No assistant turn at all yet.
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{toolTurn("call_1", "x")}}); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("a result in an empty session: %v", err)
	}
	r, _ := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/tool read_file {\"path\":\"a.go\"}")}, Generate: true})
	waitGen(t, e, "local", s.ID, r.Generation.ID)
	calls := lastTurns(t, e, "local", s.ID, 1)[0].ToolCalls
	if len(calls) != 1 {
		t.Fatalf("tool calls %+v", calls)
	}
	before := len(lastTurns(t, e, "local", s.ID, 100))
	for _, turns := range [][]session.NewTurn{
		{toolTurn("nope", "x")},                             // a mistyped id
		{toolTurn(calls[0].ID, "a"), toolTurn("nope", "b")}, // the second of a run
		{user("hi"), toolTurn(calls[0].ID, "a")},            // after a user turn
	} {
		_, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: turns, Generate: true})
		if !errors.Is(err, session.ErrInvalid) {
			t.Fatalf("post %+v: %v, want invalid", turns, err)
		}
		if code, _ := session.ErrorCode(err); code != "invalid_request" {
			t.Fatalf("post %+v: code %s", turns, code)
		}
	}
	if n := len(lastTurns(t, e, "local", s.ID, 100)); n != before {
		t.Fatalf("%d turns after refused posts, want %d", n, before)
	}
	// The right id is taken once: a second result of the call, in the
	// same post or a later one, would never reach the model (only a
	// call's first result does), and is refused.
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{toolTurn(calls[0].ID, "part one"), toolTurn(calls[0].ID, "part one, more")}}); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("two results of one call in one post: %v, want invalid", err)
	}
	if n := len(lastTurns(t, e, "local", s.ID, 100)); n != before {
		t.Fatalf("%d turns after refused posts, want %d", n, before)
	}
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{toolTurn(calls[0].ID, "FIRST")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{toolTurn(calls[0].ID, "SECOND")}, Generate: true}); !errors.Is(err, session.ErrInvalid) {
		t.Fatalf("a second result of the call: %v, want invalid", err)
	}
	r2, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	waitGen(t, e, "local", s.ID, r2.Generation.ID)
	if last := lastTurns(t, e, "local", s.ID, 1)[0]; last.Role != "assistant" || len(last.ToolCalls) != 0 || !strings.Contains(text(t, last), "FIRST") {
		t.Fatalf("the answer to the result: %+v, want one about FIRST", last)
	}
}

func TestExportImportRoundTrip(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{Title: "t", System: "be brief"})
	r, _ := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/tool read_file {\"path\":\"a.go\"}")}, Generate: true})
	waitGen(t, e, "local", s.ID, r.Generation.ID)
	calls := lastTurns(t, e, "local", s.ID, 1)[0].ToolCalls
	if len(calls) != 1 {
		t.Fatalf("tool calls %+v", calls)
	}
	r2, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{{Role: "tool", ToolCallID: calls[0].ID, Content: json.RawMessage(`"package a"`)}}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	waitGen(t, e, "local", s.ID, r2.Generation.ID)
	// Content parts as a client may pretty-print them: valid JSON, stored
	// as posted, and still one line of the export.
	pretty := "[\r\n  {\"type\": \"text\",\n   \"text\": \"two\\nlines\"}\n]"
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{{Role: "user", Content: json.RawMessage(pretty)}}}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := e.svc.Export(ctx, "local", s.ID, &buf); err != nil {
		t.Fatal(err)
	}
	exported := buf.String()
	if err := e.svc.Delete(ctx, "local", s.ID); err != nil {
		t.Fatal(err)
	}
	imp, err := e.svc.Import(ctx, "local", strings.NewReader(exported), "")
	if err != nil {
		t.Fatal(err)
	}
	if imp.ID != s.ID || imp.System != "be brief" {
		t.Fatalf("imported %+v", imp)
	}
	var again bytes.Buffer
	e.svc.Export(ctx, "local", imp.ID, &again)
	// Same turns, line for line (the session line differs in timestamps).
	a, b := strings.SplitN(exported, "\n", 2)[1], strings.SplitN(again.String(), "\n", 2)[1]
	if a != b {
		t.Fatalf("turns differ after round trip:\n%s\n%s", a, b)
	}
	if !strings.Contains(a, `"content":[{"type":"text","text":"two\nlines"}]`) {
		t.Fatalf("the pretty-printed content is not in the export, compacted:\n%s", a)
	}
	head := `{"type":"session","session":{"id":"x"}}` + "\n"
	for _, bad := range []string{"", "{}", `{"type":"turn","turn":{}}`, "not json", head + `{"type":"turn","turn":{"id":2,"parent_id":5,"role":"user","content":"x"}}`,
		// a parent that is not among the turns, an id past the largest, a status unknown
		head + `{"type":"turn","turn":{"id":1,"role":"user","content":"x"}}` + "\n" + `{"type":"turn","turn":{"id":3,"parent_id":2,"role":"user","content":"x"}}`,
		head + fmt.Sprintf(`{"type":"turn","turn":{"id":%d,"role":"user","content":"x"}}`, int64(session.MaxImportTurnID)+1),
		head + `{"type":"turn","turn":{"id":1,"role":"user","content":"x","status":"odd"}}`} {
		if _, err := e.svc.Import(ctx, "local", strings.NewReader(bad), ""); !errors.Is(err, session.ErrInvalid) {
			t.Errorf("import %q: err=%v", bad, err)
		}
	}
}

func TestDirectoryNewestFirstWithCursor(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	var ids []string
	for i := range 7 {
		s, err := e.svc.Create(ctx, "carol", session.CreateRequest{Title: fmt.Sprint("s", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
		time.Sleep(2 * time.Millisecond) // distinct millisecond timestamps, so "newest" is well defined
	}
	// Activity on the oldest moves it to the top, with a preview.
	if _, err := e.svc.Post(ctx, "carol", ids[0], session.PostRequest{Turns: []session.NewTurn{user("latest words")}}); err != nil {
		t.Fatal(err)
	}
	var got []string
	cursor := ""
	for {
		page, next, err := e.svc.List(ctx, "carol", cursor, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page {
			got = append(got, p.Title)
			if p.ID == ids[0] && p.Preview != "latest words" {
				t.Fatalf("preview %q", p.Preview)
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if want := "[s0 s6 s5 s4 s3 s2 s1]"; fmt.Sprint(got) != want {
		t.Fatalf("listed %v, want %s", got, want)
	}
	if other, _, _ := e.svc.List(ctx, "dave", "", 10); len(other) != 0 {
		t.Fatalf("dave sees %v", other)
	}
}

func TestConcurrentPostsOneSession(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(fmt.Sprint(c, "-", i))}}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	turns, _, _ := e.svc.Turns(ctx, "local", s.ID, session.TurnQuery{Limit: 100, After: new(int64)})
	if len(turns) != 80 {
		t.Fatalf("%d turns, want 80", len(turns))
	}
	for i, tr := range turns {
		if tr.ID != int64(i+1) || (i > 0 && *tr.ParentID != int64(i)) {
			t.Fatalf("turn %d: id %d parent %v: the chain is broken", i, tr.ID, tr.ParentID)
		}
	}
}

// While a generation streams, its turn shows the output saved so far, a
// prefix of the final text that only grows; saves append pieces to the
// node's journal, not to the session's database, and the journal forgets
// the turn once it is committed.
func TestPartialOutputAppendsAndClears(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 400, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 300")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	maxPieces := 0
	for {
		a := lastTurns(t, e, "local", s.ID, 1)[0]
		if a.Status != session.TurnStreaming {
			break
		}
		if cur := text(t, a); len(seen) == 0 || cur != seen[len(seen)-1] {
			seen = append(seen, cur)
		}
		maxPieces = max(maxPieces, journalRows(t, e, s.ID))
		time.Sleep(15 * time.Millisecond)
	}
	g := waitGen(t, e, "local", s.ID, res.Generation.ID)
	final := text(t, lastTurns(t, e, "local", s.ID, 1)[0])
	if g.Status != session.GenDone || !strings.HasPrefix(final, "1 2 3 ") {
		t.Fatalf("generation %s, final text %.40q", g.Status, final)
	}
	if len(seen) < 3 || maxPieces < 3 {
		t.Fatalf("saw %d distinct partial texts and at most %d journal pieces while streaming, want several", len(seen), maxPieces)
	}
	for i, p := range seen {
		if !strings.HasPrefix(final, p) || (i > 0 && len(p) < len(seen[i-1])) {
			t.Fatalf("partial %d %.60q is not a growing prefix of the final text", i, p)
		}
	}
	checkFor(t, "the journal forgets the committed turn", func() bool { return journalRows(t, e, s.ID) == 0 })
	stub := objectStub(t, e, session.NamespaceSessions, s.ID)
	var pieces int
	if _, err := stub.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		return nil, tx.QueryRow(ctx, `SELECT count(*) FROM partials`).Scan(&pieces)
	}); err != nil {
		t.Fatal(err)
	}
	if pieces != 0 {
		t.Fatalf("%d partial pieces in the session's own database", pieces)
	}
}

// After a crash, start-up wakes the sessions the journal names, without a
// client asking: the streaming turn is interrupted with the journal's text,
// and the journal keeps nothing of the turns it held, whether they were
// cut short or already committed (a crash before the journal forgot them).
func TestRestartRecoversFromJournal(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 200, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 100000")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	done, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	dres, err := e.svc.Post(ctx, "local", done.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 3")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	waitGen(t, e, "local", done.ID, dres.Generation.ID)
	doneTurn := lastTurns(t, e, "local", done.ID, 1)[0]
	checkFor(t, "partial output saved", func() bool { return len(text(t, lastTurns(t, e, "local", s.ID, 1)[0])) > 10 })
	// A committed turn whose rows a crash kept: recovery must drop them
	// and leave the turn as it is.
	if _, err := objectStub(t, e, session.NamespacePartials, session.JournalName).Exec(ctx, nil,
		`INSERT INTO partial (session, turn_id, upto, text) VALUES (?, ?, 1, 'stale')`, done.ID, doneTurn.ID); err != nil {
		t.Fatal(err)
	}
	e.rt.Close() // the service cannot commit the end: like a crash
	e.svc.Close()

	e2 := newEnv(t, dir, 0, nil)
	checkFor(t, "start-up empties the journal, no client asking", func() bool {
		return journalRows(t, e2, s.ID) == 0 && journalRows(t, e2, done.ID) == 0
	})
	// Start-up deletes a session's rows only once it woke, after the wake
	// read them: the turn below got its text before anything asked for it.
	g, err := e2.svc.Generation(ctx, "local", s.ID, res.Generation.ID)
	if err != nil || g.Status != session.GenInterrupted || g.Offset < 2 {
		t.Fatalf("after restart %+v %v", g, err)
	}
	a := lastTurns(t, e2, "local", s.ID, 1)[0]
	if a.Status != session.TurnInterrupted || !strings.HasPrefix(text(t, a), "1 2 3 ") {
		t.Fatalf("turn %s %q", a.Status, text(t, a))
	}
	if b := lastTurns(t, e2, "local", done.ID, 1)[0]; b.Status != session.TurnComplete || text(t, b) != text(t, doneTurn) {
		t.Fatalf("the committed turn changed: %s %q, was %q", b.Status, text(t, b), text(t, doneTurn))
	}
}

// journalRows counts the journal's rows for a session.
func journalRows(t *testing.T, e *env, id string) int {
	t.Helper()
	var n int
	if _, err := objectStub(t, e, session.NamespacePartials, session.JournalName).Call(context.Background(),
		func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			return nil, tx.QueryRow(ctx, `SELECT count(*) FROM partial WHERE session = ?`, id).Scan(&n)
		}); err != nil {
		t.Fatal(err)
	}
	return n
}

func objectStub(t *testing.T, e *env, namespace, name string) *objects.Stub {
	t.Helper()
	ns, err := e.rt.Namespace(namespace)
	if err != nil {
		t.Fatal(err)
	}
	stub, err := ns.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return stub
}

// A session's head and updated_at come back the same after a restart,
// whether the head is the newest turn (not written on each post: derived)
// or an older one (a regeneration queued behind a running generation).
func TestSessionStateSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 0, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	post := func(e *env, req session.PostRequest) *session.PostResult {
		t.Helper()
		r, err := e.svc.Post(ctx, "local", s.ID, req)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	post(e, session.PostRequest{Turns: []session.NewTurn{user("a")}})
	post(e, session.PostRequest{Turns: []session.NewTurn{user("b")}})
	time.Sleep(2 * time.Millisecond) // updated_at is in milliseconds
	// An edit of b: a sibling under a.
	c := post(e, session.PostRequest{Parent: 1, Turns: []session.NewTurn{user("c")}})
	get := func(e *env) *session.Session {
		t.Helper()
		got, err := e.svc.Get(ctx, "local", s.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	before := get(e)
	if before.HeadTurnID != c.Turns[0].ID || !before.UpdatedAt.Equal(c.Turns[0].CreatedAt.Time) {
		t.Fatalf("after the edit: head %d updated %v, want %d and %v", before.HeadTurnID, before.UpdatedAt, c.Turns[0].ID, c.Turns[0].CreatedAt)
	}
	e.close()
	e = newEnv(t, dir, 0, nil)
	after := get(e)
	if after.HeadTurnID != before.HeadTurnID || !after.UpdatedAt.Equal(before.UpdatedAt.Time) {
		t.Fatalf("after restart: head %d updated %v, want %d and %v", after.HeadTurnID, after.UpdatedAt, before.HeadTurnID, before.UpdatedAt)
	}
	var branch []string
	for _, tr := range lastTurns(t, e, "local", s.ID, 10) {
		branch = append(branch, text(t, tr))
	}
	if fmt.Sprint(branch) != "[a c]" {
		t.Fatalf("head branch after restart %v, want [a c]", branch)
	}
	e.close()

	// An older head: regenerate the answer to "a" while a slow generation
	// runs; the regeneration queues and the head moves back to "a". Cancel
	// both: nothing moves it again, and the head is not the newest turn.
	e = newEnv(t, dir, 5, nil)
	g1 := post(e, session.PostRequest{Turns: []session.NewTurn{user("d")}, Generate: true})
	g2 := post(e, session.PostRequest{Parent: 1, Generate: true})
	for _, g := range []*session.Generation{g2.Generation, g1.Generation} {
		if _, err := e.svc.Cancel(ctx, "local", s.ID, g.ID); err != nil {
			t.Fatal(err)
		}
	}
	waitGen(t, e, "local", s.ID, g1.Generation.ID)
	before = get(e)
	if before.HeadTurnID != 1 {
		t.Fatalf("head %d after a queued regeneration, want 1", before.HeadTurnID)
	}
	e.close()
	e = newEnv(t, dir, 0, nil)
	if after := get(e); after.HeadTurnID != 1 || !after.UpdatedAt.Equal(before.UpdatedAt.Time) {
		t.Fatalf("after restart: head %d updated %v, want 1 and %v", after.HeadTurnID, after.UpdatedAt, before.UpdatedAt)
	}
}

// countingModel counts the generations a model is asked for, and keeps
// the messages of the last.
type countingModel struct {
	session.Model
	calls atomic.Int32
	last  atomic.Pointer[[]session.Message]
}

func (c *countingModel) Stream(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
	c.calls.Add(1)
	msgs := append([]session.Message(nil), req.Messages...)
	c.last.Store(&msgs)
	return c.Model.Stream(ctx, req, emit)
}

// Deleting a session while a generation runs and another waits in the
// queue cancels both: the queued one never starts on the session going
// away, and the session stays gone.
func TestDeleteCancelsQueuedGenerations(t *testing.T) {
	ctx := context.Background()
	cm := &countingModel{Model: session.NewOfflineModel(50)}
	e := newEnv(t, "", 50, func(_ *session.Service, reg *session.Registry) {
		if err := reg.Register("counting", cm, session.ModelInfo{}); err != nil {
			t.Fatal(err)
		}
	})
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{Model: "counting"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 30")}, Generate: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.svc.Delete(ctx, "local", s.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a queued generation would have started and called the model
	if n := cm.calls.Load(); n != 1 {
		t.Errorf("the model was called %d times, want 1 (the queued generation ran after the delete)", n)
	}
	if _, err := e.svc.Get(ctx, "local", s.ID); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("get after delete: %v", err)
	}
	list, _, err := e.svc.List(ctx, "local", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range list {
		if l.ID == s.ID {
			t.Errorf("the deleted session is listed: %+v", l)
		}
	}
}

// slowCancelModel streams like the offline model, but once cancelled it
// returns only when release is closed; cancelled is closed when it sees the
// cancel.
type slowCancelModel struct {
	session.Model
	cancelled, release chan struct{}
}

func (m *slowCancelModel) Stream(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
	res, err := m.Model.Stream(ctx, req, emit)
	if ctx.Err() != nil {
		close(m.cancelled)
		<-m.release
	}
	return res, err
}

// A Delete whose caller goes away while it waits for the running
// generation to end still deletes the session: it is not left answering
// 404 while still listed and stored.
func TestDeleteFinishesWhenItsCallerGoes(t *testing.T) {
	ctx := context.Background()
	m := &slowCancelModel{Model: session.NewOfflineModel(20), cancelled: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, "", 20, func(_ *session.Service, reg *session.Registry) {
		if err := reg.Register("slow", m, session.ModelInfo{}); err != nil {
			t.Fatal(err)
		}
	})
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{Model: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 1000")}, Generate: true}); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- e.svc.Delete(cctx, "local", s.ID) }()
	<-m.cancelled
	cancel()
	close(m.release)
	if err := <-errc; err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := e.svc.Get(ctx, "local", s.ID); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("get after delete: %v", err)
	}
	ns, err := e.rt.Namespace(session.NamespaceSessions)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := ns.Exists(ctx, s.ID); err != nil || ok {
		t.Errorf("the deleted session is stored still: %v %v", ok, err)
	}
	list, _, err := e.svc.List(ctx, "local", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("the deleted session is listed: %+v", list)
	}
}

// A system prompt that alone fills the model's context budget does not
// leave the model without the turn it is to answer.
func TestContextKeepsNewestTurnPastBudget(t *testing.T) {
	ctx := context.Background()
	cm := &countingModel{Model: session.NewOfflineModel(0)}
	e := newEnv(t, "", 0, func(_ *session.Service, reg *session.Registry) {
		if err := reg.Register("small", cm, session.ModelInfo{ContextTokens: 2048}); err != nil {
			t.Fatal(err)
		}
	})
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{Model: "small", System: strings.Repeat("be brief. ", 500)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("hello")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	waitGen(t, e, "local", s.ID, r.Generation.ID)
	msgs := *cm.last.Load()
	if len(msgs) != 2 || msgs[0].Role != session.RoleSystem || msgs[1].Role != session.RoleUser || msgs[1].Text() != "hello" {
		t.Fatalf("the model was sent %d messages: %+v", len(msgs), msgs)
	}
}

// A tool result is the newest turn and the call it answers does not fit
// the budget: the model is sent both, not an empty conversation.
func TestContextKeepsToolCallOfNewestResultPastBudget(t *testing.T) {
	ctx := context.Background()
	cm := &countingModel{Model: session.NewOfflineModel(0)}
	e := newEnv(t, "", 0, func(_ *session.Service, reg *session.Registry) {
		if err := reg.Register("small", cm, session.ModelInfo{ContextTokens: 2048}); err != nil {
			t.Fatal(err)
		}
	})
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{Model: "small"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(`/tool read {"x":"` + strings.Repeat("y", 4400) + `"}`)}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	waitGen(t, e, "local", s.ID, r.Generation.ID)
	calls := lastTurns(t, e, "local", s.ID, 1)[0].ToolCalls
	if len(calls) != 1 {
		t.Fatalf("tool calls %+v", calls)
	}
	r, err = e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{{Role: "tool", ToolCallID: calls[0].ID, Content: json.RawMessage(`"ok"`)}}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	waitGen(t, e, "local", s.ID, r.Generation.ID)
	msgs := *cm.last.Load()
	if len(msgs) != 2 || msgs[0].Role != session.RoleAssistant || len(msgs[0].ToolCalls) != 1 || msgs[1].Role != session.RoleTool || msgs[1].ToolCallID != calls[0].ID {
		t.Fatalf("the model was sent %d messages: %+v", len(msgs), msgs)
	}
}

// A generation that a graceful shutdown interrupts still updates the
// owner's directory: its preview is there after the restart.
func TestShutdownFlushesDirectory(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 200, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 100000")}, Generate: true}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, "output streaming", func() bool {
		turns := lastTurns(t, e, "local", s.ID, 1)
		return len(text(t, turns[0])) > 10
	})
	e.close()
	e2 := newEnv(t, dir, 0, nil)
	list, _, err := e2.svc.List(ctx, "local", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || !strings.HasPrefix(list[0].Preview, "1 2 3 ") {
		t.Fatalf("directory after a graceful restart: %+v", list)
	}
}

// frameSink keeps the frames a viewer writes.
type frameSink struct {
	mu     sync.Mutex
	frames []string
	code   int
}

func (s *frameSink) WriteFrame(_ context.Context, frames [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range frames {
		s.frames = append(s.frames, string(f))
	}
	return nil
}

func (s *frameSink) Close(code int, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.code = code
	return nil
}

// Following a generation whose log is no longer kept (after a restart)
// sends its turn and final event, or nothing when the follower has seen
// the final event already, and ends: an SSE client is not kept waiting.
func TestFollowEndedGenerationAfterRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 0, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 5")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	g := waitGen(t, e, "local", s.ID, r.Generation.ID)
	e.close()
	e2 := newEnv(t, dir, 0, nil)
	for _, c := range []struct {
		after int64
		want  []string // message types
	}{{0, []string{"turn", "done"}}, {g.Offset - 1, []string{"turn", "done"}}, {g.Offset, nil}} {
		sink := &frameSink{}
		v := streaming.NewViewer(sink, &streaming.ViewerOptions{CloseOnFinal: true})
		if err := e2.svc.Follow(ctx, "local", s.ID, g.ID, c.after, v); err != nil {
			t.Fatal(err)
		}
		select {
		case <-v.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("after %d: the viewer is still open", c.after)
		}
		sink.mu.Lock()
		var types []string
		for _, f := range sink.frames {
			var m struct{ Type string }
			json.Unmarshal([]byte(f), &m)
			types = append(types, m.Type)
		}
		if fmt.Sprint(types) != fmt.Sprint(c.want) || sink.code != streaming.CloseNormal {
			t.Errorf("after %d: sent %v, closed with %d; want %v", c.after, types, sink.code, c.want)
		}
		sink.mu.Unlock()
	}
}

// A generation cancelled while it waited in the queue has no turn: it can
// still be followed, which ends at once with nothing to send.
func TestFollowGenerationCancelledWhileQueued(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 50, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 30")}, Generate: true}); err != nil {
		t.Fatal(err)
	}
	r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 3")}, Generate: true})
	if err != nil || r.Generation.Status != session.GenQueued {
		t.Fatalf("second post: %+v %v", r, err)
	}
	g, err := e.svc.Cancel(ctx, "local", s.ID, r.Generation.ID)
	if err != nil || g.Status != session.GenCancelled || g.TurnID != 0 {
		t.Fatalf("cancelled %+v %v", g, err)
	}
	sink := &frameSink{}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{CloseOnFinal: true})
	if err := e.svc.Follow(ctx, "local", s.ID, g.ID, 0, v); err != nil {
		t.Fatalf("follow: %v", err)
	}
	select {
	case <-v.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the viewer is still open")
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	// Its only event: done at offset 1, no turn, saying it was cancelled.
	want := fmt.Sprintf(`{"type":"done","generation":%q,"offset":1,"turn":null,"usage":null,"finish_reason":"cancelled"}`, g.ID)
	if len(sink.frames) != 1 || string(sink.frames[0]) != want || sink.code != streaming.CloseNormal {
		t.Fatalf("sent %q, closed with %d; want %s", sink.frames, sink.code, want)
	}
	// Resumed after that event: nothing more.
	sink2 := &frameSink{}
	v2 := streaming.NewViewer(sink2, &streaming.ViewerOptions{CloseOnFinal: true})
	if err := e.svc.Follow(ctx, "local", s.ID, g.ID, 1, v2); err != nil {
		t.Fatalf("follow after the final event: %v", err)
	}
	<-v2.Done()
	sink2.mu.Lock()
	defer sink2.mu.Unlock()
	if len(sink2.frames) != 0 {
		t.Fatalf("after the final event: sent %q", sink2.frames)
	}
}

// Following a queued generation waits for the session to start or cancel
// it, woken by the session (with the periodic re-read off, a missed wake-up
// would hang): started, it streams to its end; cancelled, it ends at once.
func TestFollowQueuedGenerationIsWoken(t *testing.T) {
	defer session.SetFollowRecheck(time.Hour)()
	ctx := context.Background()
	e := newEnv(t, "", 200, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	post := func(text string) *session.Generation {
		t.Helper()
		r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(text)}, Generate: true})
		if err != nil {
			t.Fatal(err)
		}
		return r.Generation
	}
	follow := func(g *session.Generation) (*frameSink, *streaming.Viewer, chan error) {
		sink := &frameSink{}
		v := streaming.NewViewer(sink, &streaming.ViewerOptions{CloseOnFinal: true})
		done := make(chan error, 1)
		go func() { done <- e.svc.Follow(ctx, "local", s.ID, g.ID, 0, v) }()
		return sink, v, done
	}
	wait := func(what string, v *streaming.Viewer, done chan error) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: follow: %v", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: Follow still waits", what)
		}
		select {
		case <-v.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the viewer is still open", what)
		}
	}

	first := post("/words 4000") // 20 s: ended by its cancel below
	second := post("/words 3")
	third := post("/words 3")
	if second.Status != session.GenQueued || third.Status != session.GenQueued {
		t.Fatalf("queued: %s, %s", second.Status, third.Status)
	}
	waiting := func() {
		t.Helper()
		checkFor(t, "Follow to wait", func() bool { n, _ := session.FollowWaiting(e.svc, s.ID); return n > 0 })
	}
	sink3, v3, done3 := follow(third)
	waiting()
	if _, err := e.svc.Cancel(ctx, "local", s.ID, third.ID); err != nil {
		t.Fatal(err)
	}
	wait("cancelled", v3, done3)
	sink2, v2, done2 := follow(second)
	waiting()
	if _, err := e.svc.Cancel(ctx, "local", s.ID, first.ID); err != nil {
		t.Fatal(err)
	}
	wait("started", v2, done2)
	// A follower that leaves (its context ends) leaves nothing behind.
	fourth := post("/words 3000")
	fifth := post("/words 3")
	fctx, stop := context.WithCancel(ctx)
	left := make(chan error, 1)
	go func() {
		left <- e.svc.Follow(fctx, "local", s.ID, fifth.ID, 0, streaming.NewViewer(&frameSink{}, &streaming.ViewerOptions{CloseOnFinal: true}))
	}()
	waiting()
	stop()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("a follower that left: %v", err)
	}
	if n, sessions := session.FollowWaiting(e.svc, s.ID); n != 0 || sessions != 0 {
		t.Fatalf("after the follower left: %d waiters, %d sessions with waiters", n, sessions)
	}
	e.svc.Cancel(ctx, "local", s.ID, fifth.ID)
	e.svc.Cancel(ctx, "local", s.ID, fourth.ID)
	sink2.mu.Lock()
	defer sink2.mu.Unlock()
	if n := len(sink2.frames); n == 0 || !strings.Contains(string(sink2.frames[n-1]), `"type":"done"`) {
		t.Fatalf("the started generation sent %d frames, the last %q; want its stream to done", n, sink2.frames)
	}
	sink3.mu.Lock()
	defer sink3.mu.Unlock()
	if len(sink3.frames) != 1 || !strings.Contains(string(sink3.frames[0]), `"finish_reason":"cancelled"`) {
		t.Fatalf("the cancelled generation sent %q, want its done alone", sink3.frames)
	}
}

// Creating, forking and importing with an Idempotency-Key make one session
// each however often they are repeated, across a restart too; the same key
// with another request is a conflict; keys are the owner's own.
func TestCreateForkImportIdempotentByKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 0, nil)
	a, err := e.svc.Create(ctx, "local", session.CreateRequest{Title: "a", IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := e.svc.Create(ctx, "local", session.CreateRequest{Title: "a", IdempotencyKey: "k1"}); err != nil || again.ID != a.ID {
		t.Fatalf("repeated create: %+v %v, want %s", again, err, a.ID)
	}
	if _, err := e.svc.Create(ctx, "local", session.CreateRequest{Title: "b", IdempotencyKey: "k1"}); !errors.Is(err, session.ErrConflict) {
		t.Fatalf("the key with another request: %v", err)
	}
	if bob, err := e.svc.Create(ctx, "bob", session.CreateRequest{Title: "a", IdempotencyKey: "k1"}); err != nil || bob.ID == a.ID {
		t.Fatalf("another owner's key: %+v %v", bob, err)
	}
	// A key whose request failed fails again on a repeat: the id it asked
	// for is another session's, made without the key.
	for range 2 {
		if _, err := e.svc.Create(ctx, "local", session.CreateRequest{ID: a.ID, IdempotencyKey: "k2"}); !errors.Is(err, session.ErrConflict) {
			t.Fatalf("create of a taken id with a key: %v", err)
		}
	}
	if _, err := e.svc.Post(ctx, "local", a.ID, session.PostRequest{Turns: []session.NewTurn{user("hi")}}); err != nil {
		t.Fatal(err)
	}
	f, err := e.svc.Fork(ctx, "local", a.ID, 1, "f1")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := e.svc.Fork(ctx, "local", a.ID, 1, "f1"); err != nil || again.ID != f.ID {
		t.Fatalf("repeated fork: %+v %v, want %s", again, err, f.ID)
	}
	var exp bytes.Buffer
	if err := e.svc.Export(ctx, "local", a.ID, &exp); err != nil {
		t.Fatal(err)
	}
	imp, err := e.svc.Import(ctx, "local", bytes.NewReader(exp.Bytes()), "i1")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := e.svc.Import(ctx, "local", bytes.NewReader(exp.Bytes()), "i1"); err != nil || again.ID != imp.ID {
		t.Fatalf("repeated import: %+v %v, want %s", again, err, imp.ID)
	}
	e.close()
	e2 := newEnv(t, dir, 0, nil)
	if again, err := e2.svc.Create(ctx, "local", session.CreateRequest{Title: "a", IdempotencyKey: "k1"}); err != nil || again.ID != a.ID {
		t.Fatalf("create repeated after a restart: %+v %v, want %s", again, err, a.ID)
	}
	list, _, err := e2.svc.List(ctx, "local", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("%d sessions, want 3 (created, forked, imported): %+v", len(list), list)
	}

	// A repeat that comes after the session's deletion (a late retry) is
	// a conflict: it must not make the session again.
	for _, id := range []string{f.ID, imp.ID, a.ID} { // the fork's source last: its repeat needs it
		if err := e2.svc.Delete(ctx, "local", id); err != nil {
			t.Fatal(err)
		}
		if id == imp.ID {
			if again, err := e2.svc.Fork(ctx, "local", a.ID, 1, "f1"); !errors.Is(err, session.ErrConflict) {
				t.Fatalf("fork repeated after its session's deletion: %+v %v, want a conflict", again, err)
			}
		}
	}
	if again, err := e2.svc.Create(ctx, "local", session.CreateRequest{Title: "a", IdempotencyKey: "k1"}); !errors.Is(err, session.ErrConflict) {
		t.Fatalf("create repeated after its session's deletion: %+v %v, want a conflict", again, err)
	}
	if again, err := e2.svc.Import(ctx, "local", bytes.NewReader(exp.Bytes()), "i1"); !errors.Is(err, session.ErrConflict) {
		t.Fatalf("import repeated after its session's deletion: %+v %v, want a conflict", again, err)
	}
	for _, id := range []string{a.ID, f.ID, imp.ID} {
		if _, err := e2.svc.Get(ctx, "local", id); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("session %s after a repeat of its key: %v, want not found", id, err)
		}
	}
	if list, _, err := e2.svc.List(ctx, "local", "", 100); err != nil || len(list) != 0 {
		t.Fatalf("list after the deletions and repeats: %+v %v", list, err)
	}
}

// A user who posts twice while the model answers (policy queue) gets one
// answer to both, after them, on one line of turns: the first queued
// generation answers the head when it starts, and the second, whose turn
// it has answered too, is cancelled as superseded.
func TestQueuedGenerationsAnswerTheHead(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 50, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	var gens []*session.Generation
	for _, text := range []string{"/words 20", "/say two", "/say three"} {
		r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(text)}, Generate: true})
		if err != nil {
			t.Fatal(err)
		}
		gens = append(gens, r.Generation)
	}
	if g := waitGen(t, e, "local", s.ID, gens[1].ID); g.Status != session.GenDone {
		t.Fatalf("the first queued generation: %+v", g)
	}
	g3 := waitGen(t, e, "local", s.ID, gens[2].ID)
	if g3.Status != session.GenCancelled || g3.TurnID != 0 || g3.Error == nil || g3.Error.Code != "superseded" {
		t.Fatalf("the second queued generation: %+v (error %+v)", g3, g3.Error)
	}
	zero := int64(0)
	turns, _, err := e.svc.Turns(ctx, "local", s.ID, session.TurnQuery{After: &zero, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var roles []string
	for i, tr := range turns {
		roles = append(roles, tr.Role)
		if i > 0 && (tr.ParentID == nil || *tr.ParentID != turns[i-1].ID) {
			t.Errorf("turn %d's parent is %v, not the turn before it (%d)", tr.ID, tr.ParentID, turns[i-1].ID)
		}
	}
	if fmt.Sprint(roles) != "[user assistant user user assistant]" {
		t.Fatalf("turns %v", roles)
	}
	if sess, _ := e.svc.Get(ctx, "local", s.ID); sess.HeadTurnID != turns[len(turns)-1].ID {
		t.Fatalf("head %d, want the last answer %d", sess.HeadTurnID, turns[len(turns)-1].ID)
	}
}

// An import keeps the exported head, also when it is not the newest turn.
func TestImportKeepsHead(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	for _, p := range []int64{0, 1, 1} { // turns 1, 2 and 3: 2 and 3 both answer 1
		if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(fmt.Sprint("after ", p))}, Parent: p}); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := e.svc.Export(ctx, "local", s.ID, &buf); err != nil {
		t.Fatal(err)
	}
	exported := strings.Replace(buf.String(), `"head_turn_id":3`, `"head_turn_id":2`, 1)
	if exported == buf.String() {
		t.Fatalf("no head_turn_id 3 in the export:\n%s", exported)
	}
	imp, err := e.svc.Import(ctx, "local", strings.NewReader(exported), "")
	if err != nil {
		t.Fatal(err)
	}
	if imp.HeadTurnID != 2 {
		t.Fatalf("imported head %d, want 2", imp.HeadTurnID)
	}
	zero := int64(0)
	turns, _, err := e.svc.Turns(ctx, "local", imp.ID, session.TurnQuery{After: &zero, Limit: 10})
	if err != nil || len(turns) != 2 || turns[1].ID != 2 {
		t.Fatalf("the head's branch: %+v %v", turns, err)
	}

	// A second root (turn 2 answers nothing) makes two branches: the
	// listing follows the head's (turns 2 and 3), not the ids.
	two := `{"type":"session","session":{"id":"x"}}` + "\n" +
		`{"type":"turn","turn":{"id":1,"role":"user","content":"first root"}}` + "\n" +
		`{"type":"turn","turn":{"id":2,"role":"user","content":"second root"}}` + "\n" +
		`{"type":"turn","turn":{"id":3,"parent_id":2,"role":"user","content":"under the second"}}`
	imp, err = e.svc.Import(ctx, "local", strings.NewReader(two), "")
	if err != nil {
		t.Fatal(err)
	}
	turns, _, err = e.svc.Turns(ctx, "local", imp.ID, session.TurnQuery{After: &zero, Limit: 10})
	if err != nil || len(turns) != 2 || turns[0].ID != 2 || turns[1].ID != 3 {
		t.Fatalf("the head's branch of two roots: %+v %v", turns, err)
	}
}

// eventBus records what sessions publish; the runtime needs a bus for
// sessions to publish their lifecycle.
type eventBus struct {
	mu     sync.Mutex
	got    map[string]int    // subject → largest payload
	done   map[string]string // generation id → status of its generation.done or .failed, with the error code
	turns  map[string]string // "session/turn id" → the statuses of its turn events
	usages map[string]string // generation id → the usage of its generation.done or .failed, as JSON
	order  []string          // "end <generation id>" and "turn <session>/<turn id>", as published
}

func (b *eventBus) Publish(_ context.Context, subject string, data []byte, _ string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.got == nil {
		b.got, b.done, b.turns, b.usages = map[string]int{}, map[string]string{}, map[string]string{}, map[string]string{}
	}
	b.got[subject] = max(b.got[subject], len(data))
	if strings.HasSuffix(subject, ".turn") {
		var ev struct {
			SessionID string `json:"session_id"`
			Turn      struct {
				ID     int64
				Status string
			}
		}
		if json.Unmarshal(data, &ev) == nil {
			b.turns[fmt.Sprint(ev.SessionID, "/", ev.Turn.ID)] += ev.Turn.Status + " "
			b.order = append(b.order, fmt.Sprint("turn ", ev.SessionID, "/", ev.Turn.ID))
		}
	}
	if strings.HasSuffix(subject, ".generation.done") || strings.HasSuffix(subject, ".generation.failed") {
		var ev struct {
			GenerationID string                 `json:"generation_id"`
			Status       string                 `json:"status"`
			Error        *struct{ Code string } `json:"error"`
			Usage        json.RawMessage        `json:"usage"`
		}
		if json.Unmarshal(data, &ev) == nil {
			st := ev.Status
			if ev.Error != nil {
				st += " " + ev.Error.Code
			}
			b.done[ev.GenerationID] += st
			b.usages[ev.GenerationID] = string(ev.Usage)
			b.order = append(b.order, "end "+ev.GenerationID)
		}
	}
	return nil
}

func (b *eventBus) ended(gid string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done[gid]
}

// usage returns the usage of generation gid's end event, as JSON.
func (b *eventBus) usage(gid string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.usages[gid]
}

// turnEvents returns the statuses of the turn events published of turn id
// of session sid, each followed by a space.
func (b *eventBus) turnEvents(sid string, id int64) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.turns[fmt.Sprint(sid, "/", id)]
}

type streamFunc = func(context.Context, *session.ModelRequest, func(session.Delta) error) (*session.ModelResult, error)

// newFakeModelEnv is newEnvBus with stream registered as the model "fake",
// and events on when bus is set; more, if set, configures the service
// further.
func newFakeModelEnv(t *testing.T, bus *eventBus, stream streamFunc, more func(*session.Service)) *env {
	t.Helper()
	var eb objects.EventBus
	if bus != nil {
		eb = bus
	}
	return newEnvBus(t, "", 0, eb, func(svc *session.Service, reg *session.Registry) {
		svc.Events = bus != nil
		if err := reg.Register("fake", &fakeModel{stream: stream}, session.ModelInfo{}); err != nil {
			t.Fatal(err)
		}
		if more != nil {
			more(svc)
		}
	})
}

// generateOnFake creates a session on the model "fake" and posts text
// with generate.
func generateOnFake(t *testing.T, e *env, text string) (*session.Session, *session.Generation) {
	t.Helper()
	ctx := context.Background()
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{Model: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(text)}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	return s, res.Generation
}

func (b *eventBus) Subscribe(context.Context, func(context.Context, objects.Event) error) (func(), error) {
	return func() {}, nil
}

func (b *eventBus) largest(subject string) (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.got[subject]
	return n, ok
}

// A tool call the model streamed without an id (some OpenAI-compatible
// servers send none) is given one when its turn is committed, so that a
// tool result can name it: otherwise no result could answer it (422) and
// an agent's loop stopped there.
func TestToolCallWithoutIDCanBeAnswered(t *testing.T) {
	ctx := context.Background()
	e := newFakeModelEnv(t, nil, func(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
		if n := len(req.Messages); n > 0 && req.Messages[n-1].Role == session.RoleTool {
			return &session.ModelResult{Text: "thanks", FinishReason: session.FinishStop}, emit(session.Delta{Text: "thanks"})
		}
		for _, name := range []string{"f", "g"} {
			if err := emit(session.Delta{ToolCall: &session.ToolCallDelta{Index: map[string]int{"f": 0, "g": 1}[name], Name: name, Arguments: "{}"}}); err != nil {
				return nil, err
			}
		}
		return &session.ModelResult{FinishReason: session.FinishToolCalls, ToolCalls: []session.ToolCall{
			{Type: "function", Function: session.FunctionCall{Name: "f", Arguments: "{}"}},
			{Type: "function", Function: session.FunctionCall{Name: "g", Arguments: "{}"}},
		}}, nil
	}, nil)
	s, g := generateOnFake(t, e, "call them")
	waitGen(t, e, "local", s.ID, g.ID)
	turns := lastTurns(t, e, "local", s.ID, 1)
	calls := turns[0].ToolCalls
	if len(calls) != 2 || calls[0].ID == "" || calls[1].ID == "" || calls[0].ID == calls[1].ID {
		t.Fatalf("tool calls %+v: want two, each with an id of its own", calls)
	}
	var results []session.NewTurn
	for _, c := range calls {
		results = append(results, session.NewTurn{Role: "tool", ToolCallID: c.ID, Content: json.RawMessage(`"done"`)})
	}
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: results, Generate: true})
	if err != nil {
		t.Fatalf("answering the calls: %v", err)
	}
	if g := waitGen(t, e, "local", s.ID, res.Generation.ID); g.Status != session.GenDone {
		t.Fatalf("the generation after the results: %+v", g)
	}
}

// Two tool calls of one reply with the same id (an upstream's mistake) are
// both kept, and the later one is named as a call without an id is: both
// can be answered, and both go to the model with their results. Its
// streamed deltas carry no id, as the stored turn does not have it.
func TestToolCallsWithOneIDCanBeAnswered(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var next *session.ModelRequest
	e := newFakeModelEnv(t, nil, func(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
		if n := len(req.Messages); n > 0 && req.Messages[n-1].Role == session.RoleTool {
			mu.Lock()
			next = req
			mu.Unlock()
			return &session.ModelResult{Text: "thanks", FinishReason: session.FinishStop}, emit(session.Delta{Text: "thanks"})
		}
		// The result is built by hand, not by a ResultBuilder: the
		// session names the repeated id in any model's result.
		res := &session.ModelResult{FinishReason: session.FinishToolCalls}
		for i, arg := range []string{`{"p":"a"}`, `{"p":"b"}`} {
			if err := emit(session.Delta{ToolCall: &session.ToolCallDelta{Index: i, ID: "dup", Name: "write", Arguments: arg}}); err != nil {
				return nil, err
			}
			res.ToolCalls = append(res.ToolCalls, session.ToolCall{ID: "dup", Type: "function", Function: session.FunctionCall{Name: "write", Arguments: arg}})
		}
		return res, nil
	}, nil)
	s, g := generateOnFake(t, e, "write both")
	waitGen(t, e, "local", s.ID, g.ID)
	calls := lastTurns(t, e, "local", s.ID, 1)[0].ToolCalls
	if want := "call_" + strings.TrimPrefix(g.ID, "g_") + "_1"; len(calls) != 2 || calls[0].ID != "dup" || calls[1].ID != want {
		t.Fatalf("tool calls %+v: want the ids dup and %s", calls, want)
	}
	var ids []string
	for _, f := range followFrames(t, e, s.ID, g.ID, 0) {
		var m struct {
			ToolCall *struct{ ID string } `json:"tool_call"`
		}
		if json.Unmarshal([]byte(f), &m) == nil && m.ToolCall != nil {
			ids = append(ids, m.ToolCall.ID)
		}
	}
	if want := []string{"dup", ""}; !slices.Equal(ids, want) {
		t.Fatalf("streamed tool call ids %q, want %q", ids, want)
	}
	var results []session.NewTurn
	for _, c := range calls {
		results = append(results, session.NewTurn{Role: "tool", ToolCallID: c.ID, Content: json.RawMessage(`"done ` + c.Function.Arguments + `"`)})
	}
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: results, Generate: true})
	if err != nil {
		t.Fatalf("answering the calls: %v", err)
	}
	waitGen(t, e, "local", s.ID, res.Generation.ID)
	mu.Lock()
	defer mu.Unlock()
	var sent []string
	for _, m := range next.Messages {
		for _, c := range m.ToolCalls {
			sent = append(sent, "call "+c.ID)
		}
		if m.Role == session.RoleTool {
			sent = append(sent, "result "+m.ToolCallID)
		}
	}
	if want := []string{"call dup", "call " + calls[1].ID, "result dup", "result " + calls[1].ID}; !slices.Equal(sent, want) {
		t.Fatalf("the model was sent %q, want %q", sent, want)
	}
}

// A generation whose model reported no usage has none (null) in its turn,
// its done frame and its generation.done event, as a turn posted by a
// client has: not zeros, which would read as a count.
func TestGenerationWithoutUsageHasNone(t *testing.T) {
	bus := &eventBus{}
	e := newFakeModelEnv(t, bus, func(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
		return &session.ModelResult{Text: "hi", FinishReason: session.FinishStop}, emit(session.Delta{Text: "hi"})
	}, nil)
	s, g := generateOnFake(t, e, "hello")
	if g := waitGen(t, e, "local", s.ID, g.ID); g.Status != session.GenDone {
		t.Fatalf("generation %+v", g)
	}
	if a := lastTurns(t, e, "local", s.ID, 1)[0]; a.Usage != nil {
		t.Fatalf("turn usage %+v, want none", *a.Usage)
	}
	frames := followFrames(t, e, s.ID, g.ID, 0)
	last := frames[len(frames)-1]
	var done struct {
		Type  string
		Usage json.RawMessage
	}
	if err := json.Unmarshal([]byte(last), &done); err != nil || done.Type != "done" || string(done.Usage) != "null" {
		t.Fatalf("last frame %s, want done with usage null", last)
	}
	checkFor(t, "the generation.done event", func() bool { return bus.ended(g.ID) != "" })
	if got := bus.usage(g.ID); got != "null" {
		t.Fatalf("generation.done usage %s, want null", got)
	}
}

// A model's tool call may carry megabytes of arguments (a coding agent
// writing a file). Its turn event must stay small like any other: an event
// over the bus's limit would fail the commit of the assistant turn, and the
// output would be lost.
func TestHugeToolCallCommitsWithSmallEvent(t *testing.T) {
	ctx := context.Background()
	bus := &eventBus{}
	e := newEnvBus(t, "", 0, bus, func(svc *session.Service, _ *session.Registry) { svc.Events = true })
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	huge := strings.Repeat("x", 2<<20)
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(`/tool write_file {"path":"big.txt","text":"` + huge + `"}`)}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	if g := waitGen(t, e, "local", s.ID, res.Generation.ID); g.Status != session.GenDone {
		t.Fatalf("generation %+v", g)
	}
	turns := lastTurns(t, e, "local", s.ID, 1)
	if a := turns[0]; a.Role != "assistant" || a.Status != "complete" || len(a.ToolCalls) != 1 || !strings.Contains(a.ToolCalls[0].Function.Arguments, huge) {
		t.Fatalf("assistant turn %+v: want complete with the whole tool call", a.Status)
	}
	subject := "sessiond.session." + s.ID + ".turn"
	checkFor(t, "the turn events", func() bool { _, ok := bus.largest(subject); return ok })
	if n, _ := bus.largest(subject); n > 64<<10 {
		t.Fatalf("largest turn event %d bytes, want it small (content and tool calls over 16 KiB left out)", n)
	}
}

// When the final turn cannot be committed (here a provider's error message
// too large for an event), the generation is saved as failed with code
// save_failed instead of staying "running" and blocking the session.
func TestUnsavableFinalTurnFailsGeneration(t *testing.T) {
	ctx := context.Background()
	huge := strings.Repeat("e", 2<<20)
	e := newFakeModelEnv(t, &eventBus{}, func(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
		if err := emit(session.Delta{Text: "partial"}); err != nil {
			return nil, err
		}
		return nil, &session.ModelError{Code: "upstream_error", Message: huge}
	}, nil)
	s, gen := generateOnFake(t, e, "hi")
	g := waitGen(t, e, "local", s.ID, gen.ID)
	if g.Status != session.GenFailed || g.Error == nil || g.Error.Code != session.CodeSaveFailed {
		t.Fatalf("generation %+v, want failed with code %s", g, session.CodeSaveFailed)
	}
	a := lastTurns(t, e, "local", s.ID, 1)[0]
	if a.Status != session.TurnFailed || a.Error == nil || a.Error.Code != session.CodeSaveFailed {
		t.Fatalf("assistant turn %s %+v, want failed with code %s", a.Status, a.Error, session.CodeSaveFailed)
	}
	// The session goes on: another model answers the next turn.
	if _, err := e.svc.Update(ctx, "local", s.ID, session.UpdateRequest{Model: new("offline")}); err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/say after")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	if g := waitGen(t, e, "local", s.ID, res.Generation.ID); g.Status != session.GenDone {
		t.Fatalf("next generation %+v", g)
	}
}

// A streaming turn weighs its partial output in a page, not its stored
// placeholder: a page with it and other turns stays within MaxPageBytes.
func TestTurnPageWeighsStreamingOutput(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 400, func(svc *session.Service, _ *session.Registry) { svc.MaxPageBytes = 1000 })
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	for range 3 {
		if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(strings.Repeat("w", 300))}}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 4000")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.svc.Cancel(ctx, "local", s.ID, res.Generation.ID)
	deadline := time.Now().Add(10 * time.Second)
	for {
		turns, more, err := e.svc.Turns(ctx, "local", s.ID, session.TurnQuery{Limit: 50})
		if err != nil {
			t.Fatal(err)
		}
		last := turns[len(turns)-1]
		if last.Status != session.TurnStreaming {
			t.Fatalf("the newest turn is %s, want the streaming one", last.Status)
		}
		size := 0
		for _, tn := range turns {
			size += len(tn.Content)
		}
		if len(turns) > 1 && size > 1000 {
			t.Fatalf("a page of %d turns weighs %d bytes with the streaming one's %d; want at most 1000", len(turns), size, len(last.Content))
		}
		if len(last.Content) > 1000 {
			if len(turns) != 1 || !more {
				t.Fatalf("page of %d turns (more %v), want the streaming turn alone and more", len(turns), more)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the partial output never passed 1000 bytes")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A page of turns ends early where its turns would weigh more than
// MaxPageBytes (one turn always fits), with has_more set, so that paging on
// covers every turn once: fifty turns of 32 MiB must not be one response.
// Both directions, and on a branched session.
func TestTurnPagesBoundedInBytes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, func(svc *session.Service, _ *session.Registry) { svc.MaxPageBytes = 1000 })
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	sizes := []int{400, 400, 400, 3000, 100, 100, 100, 400, 400, 400}
	var ids []int64
	for _, n := range sizes {
		res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(strings.Repeat("w", n-2))}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.Turns[0].ID)
	}
	check := func(branch int64, want []int64) {
		t.Helper()
		// Newest first, pages going back.
		var got []int64
		var before *int64
		for pages := 0; ; pages++ {
			turns, more, err := e.svc.Turns(ctx, "local", s.ID, session.TurnQuery{Limit: 50, Before: before, Branch: branch})
			if err != nil {
				t.Fatal(err)
			}
			size := 0
			for _, tn := range turns {
				size += len(tn.Content)
			}
			if len(turns) == 0 || (len(turns) > 1 && size > 1000) {
				t.Fatalf("page %d going back: %d turns of %d bytes; want 1 or more within 1000 bytes", pages, len(turns), size)
			}
			var page []int64
			for _, tn := range turns {
				page = append(page, tn.ID)
			}
			got = append(page, got...)
			if !more {
				break
			}
			before = &turns[0].ID
		}
		if !slices.Equal(got, want) {
			t.Fatalf("going back, the pages held %v, want %v", got, want)
		}
		// Oldest first, pages going forward.
		got = nil
		after := int64(0)
		for {
			turns, more, err := e.svc.Turns(ctx, "local", s.ID, session.TurnQuery{Limit: 50, After: &after, Branch: branch})
			if err != nil {
				t.Fatal(err)
			}
			if len(turns) == 0 {
				t.Fatal("empty page going forward")
			}
			for _, tn := range turns {
				got = append(got, tn.ID)
			}
			if !more {
				break
			}
			after = turns[len(turns)-1].ID
		}
		if !slices.Equal(got, want) {
			t.Fatalf("going forward, the pages held %v, want %v", got, want)
		}
	}
	check(0, ids)
	// An edit of the fifth turn branches the session: its branch is the
	// first four turns and the edit.
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(strings.Repeat("e", 598))}, Parent: ids[3]})
	if err != nil {
		t.Fatal(err)
	}
	check(res.Turns[0].ID, append(slices.Clone(ids[:4]), res.Turns[0].ID))
	check(ids[len(ids)-1], ids)

	// Export reads in such pages too: every turn once, in order, and the
	// import holds them all.
	var buf bytes.Buffer
	if err := e.svc.Export(ctx, "local", s.ID, &buf); err != nil {
		t.Fatal(err)
	}
	var exported []int64
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n")[1:] {
		var l struct {
			Turn session.Turn `json:"turn"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		exported = append(exported, l.Turn.ID)
	}
	if want := append(slices.Clone(ids), res.Turns[0].ID); !slices.Equal(exported, want) {
		t.Fatalf("export holds turns %v, want %v", exported, want)
	}
	imp, err := e.svc.Import(ctx, "local", &buf, "")
	if err != nil {
		t.Fatal(err)
	}
	if imp.LastTurnID != res.Turns[0].ID {
		t.Fatalf("import's last turn %d, want %d", imp.LastTurnID, res.Turns[0].ID)
	}
}

// A model that never stops is cut at MaxTurnBytes, as max_tokens would cut
// it: the turn is complete with finish reason length and holds the output
// up to the limit.
func TestEndlessOutputCutAtTurnLimit(t *testing.T) {
	const limit = 64 << 10
	e := newFakeModelEnv(t, nil, func(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
		for range 1 << 20 { // bounded: 1 GiB, far past the limit
			// Text that JSON escapes: <, & and newlines grow.
			if err := emit(session.Delta{Text: strings.Repeat("z<\n&", 1<<8)}); err != nil {
				return nil, err
			}
		}
		return nil, errors.New("the test's model ran out: the limit never stopped it")
	}, func(svc *session.Service) { svc.MaxTurnBytes = limit })
	s, gen := generateOnFake(t, e, "go on")
	if g := waitGen(t, e, "local", s.ID, gen.ID); g.Status != session.GenDone {
		t.Fatalf("generation %+v, want done", g)
	}
	a := lastTurns(t, e, "local", s.ID, 1)[0]
	if got := len(a.Content); a.Status != session.TurnComplete || a.FinishReason == nil || *a.FinishReason != session.FinishLength || got > limit || got < limit-16<<10 {
		t.Fatalf("turn %s, finish %v, content of %d bytes; want complete, length, at most %d bytes as stored", a.Status, a.FinishReason, got, limit)
	}
}

// The fallback of an unsavable final turn only ends a generation that is
// still running: one the database already ended (a rebuilt instance marks
// it interrupted with its saved output) keeps what is stored.
func TestUnsavableFinalTurnKeepsEndedGeneration(t *testing.T) {
	ctx := context.Background()
	release := make(chan struct{})
	e := newFakeModelEnv(t, &eventBus{}, func(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
		if err := emit(session.Delta{Text: "partial"}); err != nil {
			return nil, err
		}
		<-release
		return nil, &session.ModelError{Code: "upstream_error", Message: strings.Repeat("e", 2<<20)}
	}, nil)
	s, gen := generateOnFake(t, e, "hi")
	// What a rebuilt instance writes for a generation it finds running.
	if _, err := objectStub(t, e, session.NamespaceSessions, s.ID).Call(ctx, func(ctx context.Context, _ any, tx *objects.Tx) (any, error) {
		if _, err := tx.Exec(ctx, `UPDATE turns SET status = 'interrupted', content = '"saved output"' WHERE generation_id = ?`, gen.ID); err != nil {
			return nil, err
		}
		_, err := tx.Exec(ctx, `UPDATE generations SET status = 'interrupted' WHERE id = ?`, gen.ID)
		return nil, err
	}); err != nil {
		t.Fatal(err)
	}
	// Follow the live log: its end says the generation's run is over.
	v := streaming.NewViewer(&frameSink{}, &streaming.ViewerOptions{CloseOnFinal: true})
	if err := e.svc.Follow(ctx, "local", s.ID, gen.ID, 0, v); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case <-v.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the generation's log never ended")
	}
	if g := waitGen(t, e, "local", s.ID, gen.ID); g.Status != session.GenInterrupted {
		t.Fatalf("generation %+v, want it left interrupted", g)
	}
	a := lastTurns(t, e, "local", s.ID, 1)[0]
	if a.Status != session.TurnInterrupted || text(t, a) != "saved output" {
		t.Fatalf("assistant turn %s %q, want the stored interrupted turn kept", a.Status, text(t, a))
	}
}

// A session's queue of generations is bounded: each queued generation is
// a model call of its own, and a client posting in a loop must not queue
// thousands.
func TestQueuedGenerationsBounded(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 2, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 100")}, Generate: true}); err != nil {
		t.Fatal(err)
	}
	for i := range session.MaxQueuedGenerations {
		res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("more")}, Generate: true})
		if err != nil || res.Generation.Status != session.GenQueued {
			t.Fatalf("post %d: %+v %v, want a queued generation", i, res, err)
		}
	}
	_, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("one too many")}, Generate: true})
	if !errors.Is(err, session.ErrGenerationRunning) {
		t.Fatalf("post past the queue: %v, want ErrGenerationRunning", err)
	}
	// Refused whole: its turn was not added either.
	if turns := lastTurns(t, e, "local", s.ID, 1); text(t, turns[0]) != "more" {
		t.Fatalf("newest turn %q, want the last accepted one", text(t, turns[0]))
	}
}

// Every generation's end is published, also for those that end without a
// turn from their model: cancelled while queued, superseded, interrupted by
// a crash. An agent waiting for generation.done must not wait for ever.
func TestEveryGenerationEndIsPublished(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bus := &eventBus{}
	e := newEnvBus(t, dir, 5, bus, func(svc *session.Service, _ *session.Registry) { svc.Events = true })
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	post := func(text string) *session.Generation {
		t.Helper()
		res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(text)}, Generate: true})
		if err != nil {
			t.Fatal(err)
		}
		return res.Generation
	}
	running, a, b, c := post("/words 1000"), post("/words 1000"), post("/words 1000"), post("/words 1000")
	if _, err := e.svc.Cancel(ctx, "local", s.ID, c.ID); err != nil {
		t.Fatal(err)
	}
	// The running one ends; a answers the turns queued behind it, b is
	// superseded.
	if _, err := e.svc.Cancel(ctx, "local", s.ID, running.ID); err != nil {
		t.Fatal(err)
	}
	checkFor(t, "a running", func() bool {
		g, err := e.svc.Generation(ctx, "local", s.ID, a.ID)
		return err == nil && g.Status == session.GenRunning
	})
	// A crash while a runs, with d queued behind it.
	d := post("/words 3")
	checkFor(t, "a's output persisted", func() bool { return len(text(t, lastTurns(t, e, "local", s.ID, 1)[0])) > 2 })
	e.rt.Close() // the service cannot commit the end: like a crash
	e.svc.Close()
	e2 := newEnvBus(t, dir, 0, bus, func(svc *session.Service, _ *session.Registry) { svc.Events = true })
	if _, err := e2.svc.Get(ctx, "local", s.ID); err != nil { // wakes the session: it ends what the crash left
		t.Fatal(err)
	}
	for _, w := range []struct {
		g    *session.Generation
		want string
	}{
		{c, "cancelled"}, {running, "cancelled"}, {b, "cancelled superseded"}, {a, "interrupted interrupted"}, {d, "interrupted interrupted"},
	} {
		checkFor(t, "the end of "+w.g.ID, func() bool { return bus.ended(w.g.ID) != "" })
		if got := bus.ended(w.g.ID); got != w.want {
			t.Errorf("generation %s: ends published %q, want %q", w.g.ID, got, w.want)
		}
	}
	// a's assistant turn, saved as interrupted by the wake, has its turn
	// event like every committed turn (none while it streamed).
	ga, err := e2.svc.Generation(ctx, "local", s.ID, a.ID)
	if err != nil || ga.TurnID == 0 {
		t.Fatalf("generation a after the restart: %+v %v", ga, err)
	}
	checkFor(t, "the interrupted turn's event", func() bool { return bus.turnEvents(s.ID, ga.TurnID) != "" })
	if got := bus.turnEvents(s.ID, ga.TurnID); got != "interrupted " {
		t.Errorf("turn %d: events with statuses %q, want one, interrupted", ga.TurnID, got)
	}
	// Its turn event follows its end at once (events.md), before the end
	// of d, queued behind it.
	bus.mu.Lock()
	defer bus.mu.Unlock()
	i := slices.Index(bus.order, "end "+a.ID)
	if i < 0 || i+1 == len(bus.order) || bus.order[i+1] != fmt.Sprint("turn ", s.ID, "/", ga.TurnID) {
		t.Errorf("the events after a's end: %q, want its turn's first", bus.order[max(i, 0):])
	}
}

// branchTexts reads the whole branch ending at leaf (0: the head), page by
// page, as "id<parent:text" items.
func branchTexts(tb testing.TB, e *env, id string, leaf int64) []string {
	tb.Helper()
	var out []string
	after := int64(0)
	for {
		a := after
		turns, more, err := e.svc.Turns(context.Background(), "local", id, session.TurnQuery{After: &a, Limit: 100, Branch: leaf})
		if err != nil {
			tb.Fatal(err)
		}
		for _, tr := range turns {
			var p int64
			if tr.ParentID != nil {
				p = *tr.ParentID
			}
			out = append(out, fmt.Sprintf("%d<%d:%s", tr.ID, p, text(tb, tr)))
			after = tr.ID
		}
		if !more || len(turns) == 0 {
			return out
		}
	}
}

// A fork copies its branch in pages of at most MaxPageBytes: a long branch
// arrives whole, ids and parents kept, and a fork that fails between pages
// leaves no session behind; its retry with the same key makes it whole.
func TestForkCopiesLongBranchInPages(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, func(svc *session.Service, _ *session.Registry) { svc.MaxPageBytes = 1024 })
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{Title: "long"})
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 200)
	for i := 0; i < 300; i += 50 {
		var nt []session.NewTurn
		for j := i; j < i+50; j++ {
			nt = append(nt, user(fmt.Sprint(j+1, pad)))
		}
		if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: nt}); err != nil {
			t.Fatal(err)
		}
	}
	// An edit of turn 151 makes a second branch: 1..150, then 301.
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Parent: 150, Turns: []session.NewTurn{user("edited")}}); err != nil {
		t.Fatal(err)
	}
	var pages int
	restore := session.SetForkPageHook(func(n int) { pages = n + 1 })
	defer restore()
	long, err := e.svc.Fork(ctx, "local", s.ID, 300, "")
	if err != nil {
		t.Fatal(err)
	}
	want := branchTexts(t, e, s.ID, 300)
	if got := branchTexts(t, e, long.ID, 0); len(want) != 300 || !slices.Equal(got, want) {
		t.Fatalf("fork of turn 300: %d turns, want the source's %d", len(got), len(want))
	}
	if pages < 300*200/1024 {
		t.Fatalf("the fork read %d pages, want one per 1 KiB of content at least", pages)
	}
	short, err := e.svc.Fork(ctx, "local", s.ID, 301, "")
	if err != nil {
		t.Fatal(err)
	}
	want = branchTexts(t, e, s.ID, 301)
	if got := branchTexts(t, e, short.ID, 0); len(want) != 151 || !slices.Equal(got, want) {
		t.Fatalf("fork of turn 301: %d turns %v, want %d", len(got), got[len(got)-2:], len(want))
	}

	// Cancelled at its third page: nothing of it is listed or stored.
	listed := func() int {
		l, _, err := e.svc.List(ctx, "local", "", 100)
		if err != nil {
			t.Fatal(err)
		}
		return len(l)
	}
	before := listed()
	cctx, cancel := context.WithCancel(ctx)
	session.SetForkPageHook(func(n int) {
		if n == 2 {
			cancel()
		}
	})
	if _, err := e.svc.Fork(cctx, "local", s.ID, 300, "k"); err == nil {
		t.Fatal("a fork cancelled between pages succeeded")
	}
	if n := listed(); n != before {
		t.Fatalf("a failed fork left %d sessions listed, want %d", n, before)
	}
	session.SetForkPageHook(func(int) {})
	again, err := e.svc.Fork(ctx, "local", s.ID, 300, "k")
	if err != nil {
		t.Fatal(err)
	}
	if got := branchTexts(t, e, again.ID, 0); !slices.Equal(got, branchTexts(t, e, s.ID, 300)) {
		t.Fatalf("the retried fork has %d turns, want 300", len(got))
	}
	if listed() != before+1 {
		t.Fatalf("the retried fork is not listed once")
	}
}

// A crash between a session's deletion and its directory's update leaves
// an entry whose session is gone: a repeated Delete removes it and
// publishes the deletion, and so does a list that shows it, for a client
// that never repeats the Delete.
func TestDeleteFinishesWhatACrashLeft(t *testing.T) {
	ctx := context.Background()
	bus := &eventBus{}
	e := newFakeModelEnv(t, bus, nil, nil)
	ns, err := e.rt.Namespace(session.NamespaceSessions)
	if err != nil {
		t.Fatal(err)
	}
	// crashDelete makes a session of alice's, then deletes its object
	// alone: the first step of Delete, then the crash.
	crashDelete := func(title string) string {
		t.Helper()
		s, err := e.svc.Create(ctx, "alice", session.CreateRequest{Title: title})
		if err != nil {
			t.Fatal(err)
		}
		stub, err := ns.Get(s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := stub.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		return s.ID
	}
	list := func() []session.DirEntry {
		t.Helper()
		entries, _, err := e.svc.List(ctx, "alice", "", 10)
		if err != nil {
			t.Fatal(err)
		}
		return entries
	}
	deletedEvent := func(id string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			bus.mu.Lock()
			_, published := bus.got["sessiond.session."+id+".deleted"]
			bus.mu.Unlock()
			if published {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no deleted event of %s", id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	id := crashDelete("deleted again")
	if _, err := e.svc.Get(ctx, "alice", id); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("get: %v", err)
	}
	if err := e.svc.Delete(ctx, "bob", id); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("another owner's delete: %v", err)
	}
	if err := e.svc.Delete(ctx, "alice", id); err != nil {
		t.Fatalf("delete again: %v", err)
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("after: %+v", got)
	}
	if err := e.svc.Delete(ctx, "alice", id); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("third delete: %v", err)
	}
	deletedEvent(id)

	kept, err := e.svc.Create(ctx, "alice", session.CreateRequest{Title: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	id = crashDelete("never deleted again")
	if got := list(); len(got) != 1 || got[0].ID != kept.ID {
		t.Fatalf("the list after a crash in a deletion: %+v, want the kept session alone", got)
	}
	deletedEvent(id)
	if got := list(); len(got) != 1 || got[0].ID != kept.ID {
		t.Fatalf("listed again: %+v", got)
	}
}

// refusingBus takes no event: every one stays in its object's outbox.
type refusingBus struct{}

func (refusingBus) Publish(context.Context, string, []byte, string) error {
	return errors.New("the bus is down")
}

func (refusingBus) Subscribe(context.Context, func(context.Context, objects.Event) error) (func(), error) {
	return func() {}, nil
}

// The events a session had not published when it was deleted outlive a
// crash between its object's removal and its entry's: kept in its owner's
// directory first, they are published, with its deleted event, when the
// list next shows the entry the crash left.
func TestDeletionKeepsUnpublishedEventsAcrossACrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	events := func(svc *session.Service, _ *session.Registry) { svc.Events = true }
	e := newEnvBus(t, dir, 0, refusingBus{}, events)
	s, err := e.svc.Create(ctx, "alice", session.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Post(ctx, "alice", s.ID, session.PostRequest{Turns: []session.NewTurn{user("kept")}}); err != nil {
		t.Fatal(err)
	}
	crash := make(chan struct{})
	defer session.SetDeletedObjectHook(func(string) { <-crash })()
	deleted := make(chan error, 1)
	go func() { deleted <- e.svc.Delete(ctx, "alice", s.ID) }()
	ns, err := e.rt.Namespace(session.NamespaceSessions)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, "the session's object gone", func() bool {
		ok, err := ns.Exists(ctx, s.ID)
		return err == nil && !ok
	})
	e.rt.Close() // the crash: the entry's removal never comes
	close(crash)
	<-deleted
	e.svc.Close()

	bus := &eventBus{}
	e = newEnvBus(t, dir, 0, bus, events)
	if list, _, err := e.svc.List(ctx, "alice", "", 10); err != nil || len(list) != 0 {
		t.Fatalf("list after the crash: %+v %v, want none", list, err)
	}
	for _, kind := range []string{"created", "turn", "deleted"} {
		subject := "sessiond.session." + s.ID + "." + kind
		checkFor(t, subject, func() bool {
			bus.mu.Lock()
			defer bus.mu.Unlock()
			_, ok := bus.got[subject]
			return ok
		})
	}
}

// A repeat of the request that made a session, after a crash cut short
// that session's deletion (its object gone, its list entry and its key's
// mark not), is refused as after any deletion: it must not make the
// deleted session again, empty, under its old id. A repeated fork gets the
// fork it made, even once its source is gone.
func TestKeyRepeatAfterACrashMidDeletion(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 0, nil)
	created, err := e.svc.Create(ctx, "alice", session.CreateRequest{Title: "made once", IdempotencyKey: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Post(ctx, "alice", created.ID, session.PostRequest{Turns: []session.NewTurn{user("hello")}}); err != nil {
		t.Fatal(err)
	}
	kept, err := e.svc.Fork(ctx, "alice", created.ID, 1, "f") // outlives its source
	if err != nil {
		t.Fatal(err)
	}
	forked, err := e.svc.Fork(ctx, "alice", kept.ID, 1, "g") // deleted with it
	if err != nil {
		t.Fatal(err)
	}
	crash := make(chan struct{})
	defer session.SetDeletedObjectHook(func(string) { <-crash })()
	var deletes sync.WaitGroup
	for _, id := range []string{created.ID, forked.ID} {
		deletes.Go(func() { e.svc.Delete(ctx, "alice", id) })
	}
	ns, err := e.rt.Namespace(session.NamespaceSessions)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, "the sessions' objects gone", func() bool {
		a, err1 := ns.Exists(ctx, created.ID)
		b, err2 := ns.Exists(ctx, forked.ID)
		return err1 == nil && err2 == nil && !a && !b
	})
	e.rt.Close() // the crash: the entries' removal never comes
	close(crash)
	deletes.Wait()
	e.svc.Close()

	e = newEnv(t, dir, 0, nil)
	if s, err := e.svc.Create(ctx, "alice", session.CreateRequest{Title: "made once", IdempotencyKey: "c"}); !errors.Is(err, session.ErrConflict) {
		t.Errorf("the create repeated: %+v, %v; want a conflict (its session was deleted)", s, err)
	}
	if s, err := e.svc.Fork(ctx, "alice", kept.ID, 1, "g"); !errors.Is(err, session.ErrConflict) {
		t.Errorf("the fork repeated: %+v, %v; want a conflict (its session was deleted)", s, err)
	}
	if s, err := e.svc.Fork(ctx, "alice", created.ID, 1, "f"); err != nil || s.ID != kept.ID {
		t.Errorf("the first fork repeated, its source gone: %+v, %v; want session %s", s, err, kept.ID)
	}
	for _, id := range []string{created.ID, forked.ID} {
		if ok, err := sessionsOf(t, e).Exists(ctx, id); err != nil || ok {
			t.Errorf("session %s exists again (%v)", id, err)
		}
	}
	if list, _, err := e.svc.List(ctx, "alice", "", 10); err != nil || len(list) != 1 || list[0].ID != kept.ID {
		t.Fatalf("list: %+v %v, want %s alone", list, err, kept.ID)
	}
}

// sessionsOf returns the namespace of e's sessions.
func sessionsOf(t *testing.T, e *env) *objects.Namespace {
	t.Helper()
	ns, err := e.rt.Namespace(session.NamespaceSessions)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// stallModel emits the deltas of text, one a character, then waits for
// its context to end: a generation a crash will find running.
type stallModel struct {
	text    string
	emitted chan struct{} // closed once every delta is emitted
}

func (m *stallModel) Stream(ctx context.Context, _ *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
	for _, r := range m.text {
		if err := emit(session.Delta{Text: string(r)}); err != nil {
			return &session.ModelResult{FinishReason: "error"}, err
		}
	}
	close(m.emitted)
	<-ctx.Done()
	return &session.ModelResult{Text: m.text, FinishReason: "cancelled"}, ctx.Err()
}

// crashMidGeneration starts a service on dir, has a session generate text
// with a stallModel, and stops the runtime under it once text is out, as
// a crash would: the service cannot commit the end. It returns the
// session's and the generation's ids. With saveNone, the journal saves
// none of the output (no round runs after the generation's start), as
// when a crash comes within a round of the deltas.
func crashMidGeneration(t *testing.T, dir, text string, saveNone ...bool) (sessionID, genID string) {
	t.Helper()
	ctx := context.Background()
	m := &stallModel{text: text, emitted: make(chan struct{})}
	e := newEnv(t, dir, 0, func(svc *session.Service, reg *session.Registry) {
		if err := reg.Register("stall", m, session.ModelInfo{}); err != nil {
			t.Fatal(err)
		}
		if len(saveNone) > 0 && saveNone[0] {
			svc.PersistInterval = time.Hour
		}
	})
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{Model: "stall"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("go")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.emitted:
	case <-time.After(30 * time.Second): // a hang guard
		t.Fatalf("the model could not stream its %d deltas", len(text))
	}
	if e.svc.PersistInterval < time.Second {
		time.Sleep(10 * e.svc.PersistInterval) // the journal likely has it all (callers check what it has)
	}
	e.rt.Close()
	e.svc.Close()
	return s.ID, res.Generation.ID
}

// followFrames follows generation gid from offset after on a viewer that
// closes at the final event, and returns the frames it was sent.
func followFrames(t *testing.T, e *env, id, gid string, after int64) []string {
	t.Helper()
	sink := &frameSink{}
	v := streaming.NewViewer(sink, &streaming.ViewerOptions{CloseOnFinal: true})
	if err := e.svc.Follow(context.Background(), "local", id, gid, after, v); err != nil {
		t.Fatalf("follow after %d: %v", after, err)
	}
	select {
	case <-v.Done():
	case <-time.After(10 * time.Second): // a hang guard
		t.Fatalf("after %d: the viewer is still open", after)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	return slices.Clone(sink.frames)
}

// followTypes is followFrames returning the frames' types and offsets.
func followTypes(t *testing.T, e *env, id, gid string, after int64) (types []string, offsets []int64) {
	t.Helper()
	for _, f := range followFrames(t, e, id, gid, after) {
		var m struct {
			Type   string
			Offset int64
		}
		json.Unmarshal([]byte(f), &m)
		types, offsets = append(types, m.Type), append(offsets, m.Offset)
	}
	return types, offsets
}

// A generation a crash interrupted ends, as every generation does, with a
// final event, at an offset past every delta it may have streamed, saved
// or not (see offsetLease): a client that saw none, some, or deltas the
// journal had not saved (whose text the saved turn lacks) gets the final
// event with the saved turn, and is never told it has everything; one
// that saw the final event gets nothing more.
func TestInterruptedGenerationEndsAfterItsSavedOutput(t *testing.T) {
	for _, c := range []struct {
		out      string
		saveNone bool
	}{{"", false}, {"abc", false}, {"abc", true}} {
		out := c.out
		t.Run(fmt.Sprintf("%d deltas, saved none %v", len(out), c.saveNone), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			sid, gid := crashMidGeneration(t, dir, out, c.saveNone)

			e2 := newEnv(t, dir, 0, nil)
			g, err := e2.svc.Generation(ctx, "local", sid, gid)
			if err != nil || g.Status != session.GenInterrupted {
				t.Fatalf("after restart %+v %v", g, err)
			}
			saved := text(t, lastTurns(t, e2, "local", sid, 1)[0])
			if !strings.HasPrefix(out, saved) {
				t.Fatalf("saved output %q is not a prefix of %q", saved, out)
			}
			if c.saveNone && saved != "" {
				t.Fatalf("saved %q, want nothing (no round ran)", saved)
			}
			if g.Offset <= int64(len(out)) {
				t.Fatalf("final offset %d with %d deltas streamed: a client that saw the last would be told it has everything", g.Offset, len(out))
			}
			// Every position but the final event's gets the saved turn and
			// the final event. (With nothing streamed, the final event may
			// be at offset 1, the first delta's place: a client that has it
			// has everything.)
			for _, after := range []int64{
				0,
				int64(len(saved)) + 1, // the first delta not saved
				int64(len(out)),
				g.Offset - 1,
				g.Offset + 2,
				g.Offset,
			} {
				want := "[turn done]"
				if after == g.Offset {
					want = "[]"
				}
				c := struct{ after int64 }{after}
				types, offsets := followTypes(t, e2, sid, g.ID, c.after)
				if fmt.Sprint(types) != want {
					t.Errorf("after %d (final event at %d): sent %v, want %s", c.after, g.Offset, types, want)
				}
				if len(offsets) == 2 && offsets[1] != g.Offset {
					t.Errorf("after %d: final event at offset %d, want %d", c.after, offsets[1], g.Offset)
				}
			}
			if g.PastEnd(g.Offset + 2) {
				t.Errorf("PastEnd refuses a resume past an interrupted generation's saved output")
			}
		})
	}
}

// A generation that streams more deltas within one round than its lease
// allows (see offsetLease) waits for a round, which it asks for at once,
// rather than stream offsets that a crash would leave unaccounted for.
func TestGenerationPastItsOffsetLease(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const n = 70000 // past the first lease of 65,536
	sid, gid := crashMidGeneration(t, dir, strings.Repeat("x", n), true)
	e2 := newEnv(t, dir, 0, nil)
	g, err := e2.svc.Generation(ctx, "local", sid, gid)
	if err != nil || g.Status != session.GenInterrupted {
		t.Fatalf("after restart %+v %v", g, err)
	}
	saved := text(t, lastTurns(t, e2, "local", sid, 1)[0])
	if len(saved) == 0 || len(saved) >= n {
		t.Errorf("saved %d of %d deltas: want the round the lease asked for, and not the rest (no round after it)", len(saved), n)
	}
	if g.Offset <= n {
		t.Fatalf("final offset %d after %d deltas", g.Offset, n)
	}
}

// logHook is a slog handler that hands every record to see, then to
// Handler (which writes only what its own level lets through).
type logHook struct {
	slog.Handler
	see func(slog.Record)
}

func (h logHook) Handle(ctx context.Context, r slog.Record) error {
	h.see(r)
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h logHook) Enabled(context.Context, slog.Level) bool { return true }

// warnings is the handler the tests' services log to (see newEnvBus).
func warnings(tb testing.TB) slog.Handler {
	return slog.NewTextHandler(tlog{tb}, &slog.HandlerOptions{Level: slog.LevelWarn})
}

// A graceful stop while a generation runs with another queued behind it
// commits the running one's output (interrupted) and leaves the queued one
// for the next start, without an error: its final commit used to try to
// start the queued one, which a closing service refuses, and failed.
func TestCloseWithAQueuedGeneration(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var errs atomic.Int32
	e := newEnv(t, dir, 50, func(svc *session.Service, _ *session.Registry) {
		svc.Logger = slog.New(errorCounter{Handler: warnings(t), n: &errs})
	})
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var gens []*session.Generation
	for range 2 {
		res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 500")}, Generate: true})
		if err != nil {
			t.Fatal(err)
		}
		gens = append(gens, res.Generation)
	}
	if gens[0].Status != session.GenRunning || gens[1].Status != session.GenQueued {
		t.Fatalf("generations %s and %s, want running and queued", gens[0].Status, gens[1].Status)
	}
	time.Sleep(200 * time.Millisecond) // some output
	e.close()
	if n := errs.Load(); n != 0 {
		t.Fatalf("%d errors logged by a graceful stop", n)
	}
	e2 := newEnv(t, dir, 0, nil)
	for i, want := range []string{session.GenInterrupted, session.GenInterrupted} {
		g, err := e2.svc.Generation(ctx, "local", s.ID, gens[i].ID)
		if err != nil || g.Status != want {
			t.Fatalf("generation %d after the restart: %+v %v, want %s", i, g, err, want)
		}
	}
	g, err := e2.svc.Generation(ctx, "local", s.ID, gens[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, turn := range lastTurns(t, e2, "local", s.ID, 10) {
		if turn.ID == g.TurnID {
			if got := text(t, turn); !strings.HasPrefix(got, "1 2 3") {
				t.Fatalf("the interrupted turn holds %q, want the start of the reply", got)
			}
			return
		}
	}
	t.Fatalf("turn %d of the first generation is not on the head branch", g.TurnID)
}

// errorCounter counts the records of level Error and above, those of
// loggers made With it included.
type errorCounter struct {
	slog.Handler
	n *atomic.Int32
}

func (h errorCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h errorCounter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelError || h.Handler.Enabled(ctx, l)
}

func (h errorCounter) WithAttrs(a []slog.Attr) slog.Handler {
	return errorCounter{Handler: h.Handler.WithAttrs(a), n: h.n}
}

func (h errorCounter) WithGroup(name string) slog.Handler {
	return errorCounter{Handler: h.Handler.WithGroup(name), n: h.n}
}

// Start-up wakes only the sessions a crash left generating, not every
// session on disk (DESIGN.md: start-up is O(1) in the objects on disk).
func TestStartupWakesOnlyWhatACrashLeft(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 0, nil)
	const n = 30
	for i := range n {
		s, err := e.svc.Create(ctx, "local", session.CreateRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(fmt.Sprint("hello ", i))}}); err != nil {
			t.Fatal(err)
		}
	}
	e.close()
	crashMidGeneration(t, dir, "abc")

	done := make(chan [2]int64, 1)
	e2 := newEnv(t, dir, 0, func(svc *session.Service, _ *session.Registry) {
		svc.Logger = slog.New(logHook{Handler: warnings(t), see: func(r slog.Record) {
			if r.Message != "session: start-up recovery done" {
				return
			}
			var v [2]int64
			r.Attrs(func(a slog.Attr) bool {
				switch a.Key {
				case "sessions":
					v[0] = a.Value.Int64()
				case "woken":
					v[1] = a.Value.Int64()
				}
				return true
			})
			done <- v
		}})
	})
	var got [2]int64
	select {
	case got = <-done:
	case <-time.After(30 * time.Second): // a hang guard
		t.Fatal("no start-up recovery logged")
	}
	if got != [2]int64{1, 1} {
		t.Fatalf("start-up recovery named %d sessions and woke %d, want the one left generating", got[0], got[1])
	}
	// The journal, the session it named, and perhaps that session's
	// directory entry's owner: not the other 30.
	if opens := e2.rt.Stats().ObjectOpens; opens > 3 {
		t.Fatalf("start-up opened %d object databases of %d on disk, want at most 3", opens, n+3)
	}
}

// A fenced runtime (a disk flush failed) takes no journal round, so a
// generation still streaming does not log a failed round every interval
// until the restart.
func TestFencedJournalDoesNotRetryEveryRound(t *testing.T) {
	ctx := context.Background()
	var n atomic.Int32
	e := newEnv(t, "", 200, func(svc *session.Service, _ *session.Registry) {
		svc.Logger = slog.New(logHook{Handler: warnings(t), see: func(r slog.Record) {
			if r.Message == "session: persist partial output, will retry" {
				n.Add(1)
			}
		}})
	})
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 100000")}, Generate: true}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, "output journaled", func() bool {
		turns := lastTurns(t, e, "local", s.ID, 1)
		return len(text(t, turns[0])) > 10
	})
	e.rt.Fence(errors.New("test: the disk is gone"))
	time.Sleep(30 * e.svc.PersistInterval) // thirty rounds' time, the generation streaming on
	if got := n.Load(); got > 1 {
		t.Fatalf("the journal logged %d failed rounds while fenced, want at most the one under way", got)
	}
}

// A generation the server's stop interrupted, followed after a restart,
// ends with a done that says so, as its live done did.
func TestFollowInterruptedGenerationAfterRestartKeepsError(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 200, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 100000")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, "output streamed", func() bool {
		g, err := e.svc.Generation(ctx, "local", s.ID, r.Generation.ID)
		return err == nil && g.Offset > 3
	})
	e.close()
	e2 := newEnv(t, dir, 0, nil)
	g, err := e2.svc.Generation(ctx, "local", s.ID, r.Generation.ID)
	if err != nil || g.Status != session.GenInterrupted || g.Error == nil || g.Error.Code != "interrupted" {
		t.Fatalf("after restart %+v %v", g, err)
	}
	frames := followFrames(t, e2, s.ID, g.ID, 0)
	if len(frames) == 0 {
		t.Fatal("nothing sent")
	}
	var done struct {
		Type         string
		FinishReason string `json:"finish_reason"`
		Error        *struct{ Code string }
	}
	if err := json.Unmarshal([]byte(frames[len(frames)-1]), &done); err != nil {
		t.Fatal(err)
	}
	if done.Type != "done" || done.Error == nil || done.Error.Code != "interrupted" || done.FinishReason != "interrupted" {
		t.Fatalf("final event %s: want done with error interrupted", frames[len(frames)-1])
	}
}

// The directory's preview is the head turn's: a generation that ends on a
// branch an edit left does not put its text there.
func TestPreviewFollowsHeadBranch(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 200, nil)
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("first")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("second")}}); err != nil {
		t.Fatal(err)
	}
	r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 40")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, "output streaming", func() bool {
		g, err := e.svc.Generation(ctx, "local", s.ID, r.Generation.ID)
		return err == nil && g.Offset > 1
	})
	edit, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Parent: 2, Turns: []session.NewTurn{user("the edit")}})
	if err != nil {
		t.Fatal(err)
	}
	g := waitGen(t, e, "local", s.ID, r.Generation.ID)
	if g.Status != session.GenDone {
		t.Fatalf("generation %+v", g)
	}
	sess, _ := e.svc.Get(ctx, "local", s.ID)
	if got, want := sess.HeadTurnID, edit.Turns[0].ID; got != want {
		t.Fatalf("head %d, want %d", got, want)
	}
	list, _, err := e.svc.List(ctx, "local", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Preview != "the edit" {
		t.Fatalf("preview %+v, want the head turn's %q", list, "the edit")
	}
}

// A head turn without text (an image, an assistant turn that only calls a
// tool) lists the text above it on its own branch, never another
// branch's; a fork at the head lists the same, and so does an import of
// the session's export.
func TestPreviewOfHeadWithoutText(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	listed := func(id string) string {
		t.Helper()
		list, _, err := e.svc.List(ctx, "local", "", 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range list {
			if d.ID == id {
				return d.Preview
			}
		}
		t.Fatalf("session %s not listed", id)
		return ""
	}
	// check asserts session id's preview, and that a fork at its head
	// and an import of its export list the same.
	check := func(id, want string) {
		t.Helper()
		if got := listed(id); got != want {
			t.Fatalf("preview %q, want %q", got, want)
		}
		s, err := e.svc.Get(ctx, "local", id)
		if err != nil {
			t.Fatal(err)
		}
		f, err := e.svc.Fork(ctx, "local", id, s.HeadTurnID, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := listed(f.ID); got != want {
			t.Fatalf("fork's preview %q, want %q", got, want)
		}
		var buf bytes.Buffer
		if err := e.svc.Export(ctx, "local", id, &buf); err != nil {
			t.Fatal(err)
		}
		im, err := e.svc.Import(ctx, "local", &buf, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := listed(im.ID); got != want {
			t.Fatalf("import's preview %q, want %q", got, want)
		}
	}
	generate := func(id string, req session.PostRequest) *session.PostResult {
		t.Helper()
		req.Generate = true
		r, err := e.svc.Post(ctx, "local", id, req)
		if err != nil {
			t.Fatal(err)
		}
		if g := waitGen(t, e, "local", id, r.Generation.ID); g.Status != session.GenDone {
			t.Fatalf("generation %+v", g)
		}
		return r
	}

	// An edit of the first message into an image: nothing on its branch
	// has text.
	a, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	generate(a.ID, session.PostRequest{Turns: []session.NewTurn{user("/say answer on the first branch")}})
	check(a.ID, "answer on the first branch")
	image := session.NewTurn{Role: session.RoleUser, Content: json.RawMessage(`[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]`)}
	if _, err := e.svc.Post(ctx, "local", a.ID, session.PostRequest{Root: true, Turns: []session.NewTurn{image}}); err != nil {
		t.Fatal(err)
	}
	check(a.ID, "")

	// A reply that only calls a tool lists the question; a regeneration
	// of it, after the branch went on, lists the question again.
	b, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	r := generate(b.ID, session.PostRequest{Turns: []session.NewTurn{user(`/tool grep {"path":"x"}`)}})
	check(b.ID, `/tool grep {"path":"x"}`)
	s, _ := e.svc.Get(ctx, "local", b.ID)
	call, _, err := e.svc.Turns(ctx, "local", b.ID, session.TurnQuery{Limit: 1})
	if err != nil || len(call) != 1 || len(call[0].ToolCalls) != 1 || call[0].ID != s.HeadTurnID || text(t, call[0]) != "" {
		t.Fatalf("the reply: %+v, %v; want one tool call and no text", call, err)
	}
	result := session.NewTurn{Role: session.RoleTool, ToolCallID: call[0].ToolCalls[0].ID, Content: json.RawMessage(`"ok"`)}
	if _, err := e.svc.Post(ctx, "local", b.ID, session.PostRequest{Turns: []session.NewTurn{result, user("words on the old branch")}}); err != nil {
		t.Fatal(err)
	}
	check(b.ID, "words on the old branch")
	generate(b.ID, session.PostRequest{Parent: r.Turns[0].ID})
	check(b.ID, `/tool grep {"path":"x"}`)
}

// An imported session was updated when it was imported, even when its
// turns were created later by the clock of the server that exported them:
// its updated_at stays the import's time after a restart, and a post
// moves it forwards.
func TestImportOfTurnsFromTheFuture(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEnv(t, dir, 0, nil)
	in := `{"type":"session","session":{"title":"ahead"}}` + "\n" +
		`{"type":"turn","turn":{"id":1,"role":"user","content":"from 2099","created_at":"2099-01-01T00:00:00Z"}}` + "\n"
	before := time.Now()
	s, err := e.svc.Import(ctx, "local", strings.NewReader(in), "")
	if err != nil {
		t.Fatal(err)
	}
	if s.UpdatedAt.After(time.Now()) || s.UpdatedAt.Before(before.Truncate(time.Millisecond)) {
		t.Fatalf("updated_at %v, want the import's time", s.UpdatedAt)
	}
	e.close()
	e = newEnv(t, dir, 0, nil)
	got, err := e.svc.Get(ctx, "local", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.UpdatedAt.Equal(s.UpdatedAt.Time) {
		t.Fatalf("after a restart updated_at %v, want %v", got.UpdatedAt, s.UpdatedAt)
	}
	turns := lastTurns(t, e, "local", s.ID, 10)
	if len(turns) != 1 || turns[0].CreatedAt.Year() != 2099 {
		t.Fatalf("turns %+v: want the one of 2099, its created_at kept", turns)
	}
	r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("now")}})
	if err != nil {
		t.Fatal(err)
	}
	got, err = e.svc.Get(ctx, "local", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.UpdatedAt.Equal(r.Turns[0].CreatedAt.Time) || got.UpdatedAt.Before(s.UpdatedAt.Time) {
		t.Fatalf("after a post updated_at %v, want the post's %v", got.UpdatedAt, r.Turns[0].CreatedAt)
	}
}

// An import holds its turns to a post's size limit: a turn of
// MaxTurnBytes imports, one byte more is too large, as is a line past the
// room a turn of the limit needs.
func TestImportTurnSizeLimit(t *testing.T) {
	ctx := context.Background()
	const limit = 1000
	e := newEnv(t, "", 0, func(svc *session.Service, _ *session.Registry) { svc.MaxTurnBytes = limit })
	importContent := func(content string) error {
		in := `{"type":"session","session":{}}` + "\n" + `{"type":"turn","turn":{"id":1,"role":"user","content":` + content + `}}` + "\n"
		_, err := e.svc.Import(ctx, "local", strings.NewReader(in), "")
		return err
	}
	fits := strconv.Quote(strings.Repeat("a", limit-2))
	if err := importContent(fits); err != nil {
		t.Fatalf("a turn of %d bytes: %v", len(fits), err)
	}
	over := strconv.Quote(strings.Repeat("a", limit-1))
	if err := importContent(over); !errors.Is(err, session.ErrTooLarge) || !strings.Contains(err.Error(), "limit is 1000") {
		t.Fatalf("a turn of %d bytes: %v, want too large", len(over), err)
	}
	huge := strconv.Quote(strings.Repeat("a", limit+64<<10))
	if err := importContent(huge); !errors.Is(err, session.ErrTooLarge) || !strings.Contains(err.Error(), fmt.Sprint(limit+64<<10)) {
		t.Fatalf("a line of %d bytes: %v, want too large", len(huge), err)
	}
}

// A session mints no turn id its own import refuses: an import takes ids
// up to MaxTurnID, posts go on from an imported id and stop, refused with
// ErrNoTurnIDs, at MaxTurnID; every export on the way imports.
func TestTurnIDsStayImportable(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	roundTrip := func(id string) {
		t.Helper()
		var buf bytes.Buffer
		if err := e.svc.Export(ctx, "local", id, &buf); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Import(ctx, "local", &buf, ""); err != nil {
			t.Fatalf("import the export of %s: %v", id, err)
		}
	}
	for _, first := range []int64{1 << 50, session.MaxTurnID - 2} {
		in := fmt.Sprintf(`{"type":"session","session":{"title":"big"}}`+"\n"+`{"type":"turn","turn":{"id":%d,"role":"user","content":"hi"}}`+"\n", first)
		s, err := e.svc.Import(ctx, "local", strings.NewReader(in), "")
		if err != nil {
			t.Fatalf("import id %d: %v", first, err)
		}
		r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("more")}})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := r.Turns[0].ID, first+1; got != want {
			t.Fatalf("posted id %d, want %d", got, want)
		}
		roundTrip(s.ID)
		if first < session.MaxTurnID-2 {
			continue
		}
		// The last id left: a post with generation needs two, and is
		// refused whole; one without takes it; then none is left.
		if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("ask")}, Generate: true}); !errors.Is(err, session.ErrNoTurnIDs) {
			t.Fatalf("post with generation at id %d: %v, want ErrNoTurnIDs", first+2, err)
		}
		if r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("last")}}); err != nil || r.Turns[0].ID != session.MaxTurnID {
			t.Fatalf("post of the last id: %+v %v", r, err)
		}
		if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("past")}}); !errors.Is(err, session.ErrNoTurnIDs) || !errors.Is(err, session.ErrConflict) {
			t.Fatalf("post past MaxTurnID: %v, want ErrNoTurnIDs", err)
		}
		roundTrip(s.ID)
		if got, _, _ := e.svc.Turns(ctx, "local", s.ID, session.TurnQuery{Limit: 10}); len(got) != 3 {
			t.Fatalf("%d turns, want 3 (a refused post leaves none)", len(got))
		}
	}
}

// A turn still streaming when a fork or an import copies it is
// interrupted as one the server's stop cut short is: finish_reason and
// error "interrupted".
func TestCopiedStreamingTurnIsInterrupted(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 200, nil)
	check := func(what string, tt session.Turn) {
		t.Helper()
		if tt.Status != session.TurnInterrupted || tt.FinishReason == nil || *tt.FinishReason != "interrupted" ||
			tt.Error == nil || tt.Error.Code != "interrupted" || tt.Error.Message == "" {
			t.Fatalf("%s: status %s finish_reason %v error %+v, want interrupted", what, tt.Status, tt.FinishReason, tt.Error)
		}
	}
	s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
	r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/words 100000")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	g, err := e.svc.Generation(ctx, "local", s.ID, r.Generation.ID)
	if err != nil || g.TurnID == 0 {
		t.Fatalf("generation %+v %v", g, err)
	}
	f, err := e.svc.Fork(ctx, "local", s.ID, g.TurnID, "")
	if err != nil {
		t.Fatal(err)
	}
	check("fork", lastTurns(t, e, "local", f.ID, 1)[0])
	e.svc.Cancel(ctx, "local", s.ID, g.ID)

	in := `{"type":"session","session":{"title":"x"}}` + "\n" +
		`{"type":"turn","turn":{"id":1,"role":"user","content":"hi"}}` + "\n" +
		`{"type":"turn","turn":{"id":2,"parent_id":1,"role":"assistant","content":"partly","status":"streaming"}}` + "\n"
	imp, err := e.svc.Import(ctx, "local", strings.NewReader(in), "")
	if err != nil {
		t.Fatal(err)
	}
	check("import", lastTurns(t, e, "local", imp.ID, 1)[0])
}

// toolNameParts streams two tool calls as upstreams do: call 0's name in
// two pieces, call 1's whole in every part, neither with an id. With
// block, it then waits for its end (to be cut by a crash).
func toolNameParts(block bool) streamFunc {
	return func(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
		var b session.ResultBuilder
		for _, tc := range []session.ToolCallDelta{
			{Index: 0, Name: "read_"}, {Index: 0, Name: "file", Arguments: `{"path":`}, {Index: 0, Arguments: `"a.go"}`},
			{Index: 1, Name: "f"}, {Index: 1, Name: "f", Arguments: `{`}, {Index: 1, Name: "f", Arguments: `}`},
		} {
			d := session.Delta{ToolCall: &tc}
			if err := b.Add(d); err != nil {
				return nil, err
			}
			if err := emit(d); err != nil {
				return nil, err
			}
		}
		if block {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		res := b.Result()
		res.FinishReason = session.FinishToolCalls
		return res, nil
	}
}

// A tool call's name reaches viewers as parts to append, each once: the
// parts they join make the name the turn keeps, whether the upstream sent
// it in pieces or whole in every part.
func TestToolCallNamePartsAddUp(t *testing.T) {
	e := newFakeModelEnv(t, nil, toolNameParts(false), nil)
	s, g := generateOnFake(t, e, "call two tools")
	waitGen(t, e, "local", s.ID, g.ID)
	calls := lastTurns(t, e, "local", s.ID, 1)[0].ToolCalls
	if len(calls) != 2 || calls[0].Function.Name != "read_file" || calls[1].Function.Name != "f" {
		t.Fatalf("tool calls %+v: want read_file and f", calls)
	}
	names := map[int]string{}
	for _, f := range followFrames(t, e, s.ID, g.ID, 0) {
		var m struct {
			ToolCall *struct {
				Index int
				Name  string
			} `json:"tool_call"`
		}
		if json.Unmarshal([]byte(f), &m) == nil && m.ToolCall != nil {
			names[m.ToolCall.Index] += m.ToolCall.Name
		}
	}
	if names[0] != "read_file" || names[1] != "f" {
		t.Fatalf("names joined from the streamed parts: %v, want read_file and f", names)
	}
}

// A generation that a crash cut while it streamed tool calls keeps them as
// its end would have: whole names, and ids (call_<generation>_<n>) a tool
// result can answer.
func TestCrashKeepsToolCallsWhole(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fake := func(svc *session.Service, reg *session.Registry) {
		if err := reg.Register("fake", &fakeModel{stream: toolNameParts(true)}, session.ModelInfo{}); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnvBus(t, dir, 0, nil, fake)
	s, g := generateOnFake(t, e, "call two tools")
	var snapshot []session.ToolCall
	checkFor(t, "both calls saved", func() bool {
		snapshot = lastTurns(t, e, "local", s.ID, 1)[0].ToolCalls
		return len(snapshot) == 2 && snapshot[1].Function.Arguments == "{}"
	})
	if snapshot[0].Function.Name != "read_file" || snapshot[1].Function.Name != "f" {
		t.Fatalf("the streaming turn's tool calls %+v: want read_file and f", snapshot)
	}
	e.rt.Close() // the service cannot commit the end: like a crash
	e.svc.Close()
	e = newEnvBus(t, dir, 0, nil, fake)
	a := lastTurns(t, e, "local", s.ID, 1)[0]
	id := func(n int) string { return fmt.Sprintf("call_%s_%d", strings.TrimPrefix(g.ID, "g_"), n) }
	if a.Status != "interrupted" || len(a.ToolCalls) != 2 ||
		a.ToolCalls[0].ID != id(0) || a.ToolCalls[0].Function.Name != "read_file" || a.ToolCalls[0].Function.Arguments != `{"path":"a.go"}` ||
		a.ToolCalls[1].ID != id(1) || a.ToolCalls[1].Function.Name != "f" {
		t.Fatalf("after the crash: %s %+v; want interrupted with read_file %s and f %s", a.Status, a.ToolCalls, id(0), id(1))
	}
	result := session.NewTurn{Role: session.RoleTool, ToolCallID: id(0), Content: json.RawMessage(`"package a"`)}
	if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{result}}); err != nil {
		t.Fatalf("answering the call: %v", err)
	}
}

// Imports of one export at once, whose id is free: each makes a session,
// one of them under the exported id, none is refused for the id the
// others took (it was 409 "already exists" when two passed the check
// together); and requests with the same Idempotency-Key still make one.
func TestConcurrentImportsOfOneExport(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	const exported = "imported-once"
	in := `{"type":"session","session":{"id":"` + exported + `","title":"t","last_turn_id":1}}` + "\n" +
		`{"type":"turn","turn":{"id":1,"role":"user","content":"hi"}}` + "\n"
	for round := range 5 {
		if round > 0 {
			if err := e.svc.Delete(ctx, "local", exported); err != nil {
				t.Fatal(err)
			}
		}
		keys := []string{"", "", "", "k", "k", "k", "j"}
		ids := make([]string, len(keys))
		errs := make([]error, len(keys))
		var wg sync.WaitGroup
		for i, k := range keys {
			if k != "" {
				k = fmt.Sprint(k, round)
			}
			wg.Go(func() {
				s, err := e.svc.Import(ctx, "local", strings.NewReader(in), k)
				if err == nil {
					ids[i] = s.ID
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: import %d (key %q): %v", round, i, keys[i], err)
			}
		}
		if ids[3] != ids[4] || ids[4] != ids[5] {
			t.Fatalf("round %d: one key made sessions %q", round, ids[3:6])
		}
		distinct := map[string]bool{}
		for _, id := range append(ids[:3:3], ids[3], ids[6]) {
			distinct[id] = true
		}
		if len(distinct) != 5 || !distinct[exported] {
			t.Fatalf("round %d: sessions %q: want 5 distinct, one of them %s", round, ids, exported)
		}
		for _, id := range ids {
			if _, err := e.svc.Get(ctx, "local", id); err != nil {
				t.Fatalf("round %d: session %s: %v", round, id, err)
			}
		}
	}
}

// Posts queued while the model answers are answered together, with the
// model the last of them asked for: the latest choice, not the first
// queued post's (whose model answered, whatever the later posts said).
func TestQueuedGenerationsAnswerWithTheLastModel(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct{ second, third, want string }{
		{"", "other", "other"},
		{"other", "", "offline"}, // "": the session's model, resolved at the post
	} {
		e := newEnv(t, "", 50, func(_ *session.Service, reg *session.Registry) {
			if err := reg.Register("other", session.NewOfflineModel(50), session.ModelInfo{}); err != nil {
				t.Fatal(err)
			}
		})
		s, _ := e.svc.Create(ctx, "local", session.CreateRequest{})
		var gens []*session.Generation
		for _, p := range []struct{ text, model string }{{"/words 20", ""}, {"/say two", tt.second}, {"/say three", tt.third}} {
			r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user(p.text)}, Generate: true, Model: p.model})
			if err != nil {
				t.Fatal(err)
			}
			gens = append(gens, r.Generation)
		}
		g := waitGen(t, e, "local", s.ID, gens[1].ID)
		if g.Status != session.GenDone {
			t.Fatalf("the first queued generation: %+v", g)
		}
		if g3 := waitGen(t, e, "local", s.ID, gens[2].ID); g3.Status != session.GenCancelled {
			t.Fatalf("the second queued generation: %+v", g3)
		}
		turns, _, err := e.svc.Turns(ctx, "local", s.ID, session.TurnQuery{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(turns) != 1 || turns[0].ID != g.TurnID || turns[0].Model == nil || *turns[0].Model != tt.want {
			t.Fatalf("models %q then %q: the reply %+v, want it from %q", tt.second, tt.third, turns, tt.want)
		}
	}
}

// A generation cancelled while it streamed a tool call's arguments keeps
// the call as it stood, cut short: no result can answer it (422), and no
// model is sent it; a call it had made whole can be answered, and is sent
// with its result.
func TestCancelledTurnsCutCallTakesNoResult(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var seen [][]session.Message // the requests after the first
	stream := func(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
		mu.Lock()
		first := seen == nil
		if !first {
			seen = append(seen, req.Messages)
		} else {
			seen = [][]session.Message{}
		}
		mu.Unlock()
		var b session.ResultBuilder
		if !first {
			d := session.Delta{Text: "ok"}
			b.Add(d)
			emit(d)
			res := b.Result()
			res.FinishReason = session.FinishStop
			return res, nil
		}
		for _, tc := range []session.ToolCallDelta{
			{Index: 0, ID: "whole", Name: "read_file", Arguments: `{"path":"a.go"}`},
			{Index: 1, ID: "cut", Name: "write_file", Arguments: `{"pa`},
		} {
			d := session.Delta{ToolCall: &tc}
			if err := b.Add(d); err != nil {
				return nil, err
			}
			if err := emit(d); err != nil {
				return nil, err
			}
		}
		<-ctx.Done()
		return b.Result(), context.Cause(ctx)
	}
	e := newEnv(t, "", 0, func(_ *session.Service, reg *session.Registry) {
		if err := reg.Register("fake", &fakeModel{stream: stream}, session.ModelInfo{}); err != nil {
			t.Fatal(err)
		}
	})
	s, g := generateOnFake(t, e, "call two tools")
	checkFor(t, "both calls streamed", func() bool {
		return len(lastTurns(t, e, "local", s.ID, 1)[0].ToolCalls) == 2
	})
	if _, err := e.svc.Cancel(ctx, "local", s.ID, g.ID); err != nil {
		t.Fatal(err)
	}
	if g := waitGen(t, e, "local", s.ID, g.ID); g.Status != session.GenCancelled {
		t.Fatalf("generation %+v, want cancelled", g)
	}
	result := func(id string) session.NewTurn {
		return session.NewTurn{Role: session.RoleTool, ToolCallID: id, Content: json.RawMessage(`"done"`)}
	}
	_, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{result("cut")}})
	if !errors.Is(err, session.ErrInvalid) || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("a result for the cut call: %v, want invalid, cut short", err)
	}
	r, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{result("whole")}, Generate: true})
	if err != nil {
		t.Fatalf("a result for the whole call: %v", err)
	}
	if g := waitGen(t, e, "local", s.ID, r.Generation.ID); g.Status != session.GenDone {
		t.Fatalf("generation after the result %+v", g)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 {
		t.Fatalf("%d requests after the first, want 1", len(seen))
	}
	var calls []string
	for _, m := range seen[0] {
		for _, c := range m.ToolCalls {
			calls = append(calls, c.ID)
		}
	}
	if fmt.Sprint(calls) != "[whole]" {
		t.Fatalf("the model was sent calls %v, want only the whole one", calls)
	}
}

// A tool call id is bounded (MaxToolCallIDBytes): a model's longer one is
// replaced by one of the server's, which a result can answer; a posted
// result naming a longer one is refused.
func TestToolCallIDsAreBounded(t *testing.T) {
	ctx := context.Background()
	long := strings.Repeat("i", session.MaxToolCallIDBytes+1)
	stream := func(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
		var b session.ResultBuilder
		d := session.Delta{ToolCall: &session.ToolCallDelta{Index: 0, ID: long, Name: "f", Arguments: "{}"}}
		if err := b.Add(d); err != nil {
			return nil, err
		}
		emit(d)
		res := b.Result()
		res.FinishReason = session.FinishToolCalls
		return res, nil
	}
	e := newEnv(t, "", 0, func(_ *session.Service, reg *session.Registry) {
		if err := reg.Register("fake", &fakeModel{stream: stream}, session.ModelInfo{}); err != nil {
			t.Fatal(err)
		}
	})
	s, g := generateOnFake(t, e, "call")
	waitGen(t, e, "local", s.ID, g.ID)
	calls := lastTurns(t, e, "local", s.ID, 1)[0].ToolCalls
	want := "call_" + strings.TrimPrefix(g.ID, "g_") + "_0"
	if len(calls) != 1 || calls[0].ID != want {
		t.Fatalf("calls %+v, want one with id %s", calls, want)
	}
	result := func(id string) session.PostRequest {
		return session.PostRequest{Turns: []session.NewTurn{{Role: session.RoleTool, ToolCallID: id, Content: json.RawMessage(`"r"`)}}}
	}
	if _, err := e.svc.Post(ctx, "local", s.ID, result(long)); !errors.Is(err, session.ErrInvalid) || !strings.Contains(err.Error(), "the limit is 1024") {
		t.Fatalf("a result with a %d-byte tool_call_id: %v", len(long), err)
	}
	if _, err := e.svc.Post(ctx, "local", s.ID, result(want)); err != nil {
		t.Fatalf("a result for the renamed call: %v", err)
	}
}

// lockedWriter is an io.Writer safe for a logger's concurrent writes.
type lockedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// A generation that fails is logged with its session, its generation and
// why: the client's turn says so, and the operator has the log.
func TestFailedGenerationIsLogged(t *testing.T) {
	ctx := context.Background()
	var log lockedWriter
	e := newEnv(t, "", 0, func(svc *session.Service, _ *session.Registry) {
		svc.Logger = slog.New(slog.NewJSONHandler(&log, nil))
	})
	s, err := e.svc.Create(ctx, "local", session.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("/fail upstream_unauthorized")}, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, "the generation's end", func() bool {
		g, err := e.svc.Generation(ctx, "local", s.ID, res.Generation.ID)
		return err == nil && g.Finished()
	})
	var line struct {
		Msg, Session, Generation, Model, Code string
	}
	for l := range strings.Lines(log.String()) {
		if json.Unmarshal([]byte(l), &line) == nil && line.Msg == "session: a generation failed" {
			break
		}
		line.Msg = ""
	}
	if line.Msg == "" || line.Session != s.ID || line.Generation != res.Generation.ID || line.Model != "offline" || line.Code != "upstream_unauthorized" {
		t.Fatalf("the failure's log line: %+v; the log:\n%s", line, log.String())
	}
}

package session

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"sessiond/objects"
	"sessiond/streaming"
)

// serveSession serves session id to owner over WebSocket, as the web
// handler does: a refused socket is closed with 1013 (try again later).
// accepted, if not nil, receives Accept's result.
func serveSession(t *testing.T, svc *Service, owner, id string, accepted chan<- error) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := streaming.Accept(w, r, nil)
		if err != nil {
			return
		}
		err = svc.Accept(r.Context(), owner, id, ws)
		if accepted != nil {
			accepted <- err
		}
		if err != nil {
			ws.Conn().Close(websocket.StatusTryAgainLater, "refused")
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(context.Background(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// helloReady says hello and reads ready.
func helloReady(t *testing.T, c *websocket.Conn) {
	t.Helper()
	ctx := context.Background()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"hello"}`)); err != nil {
		t.Fatal(err)
	}
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"ready"`) {
		t.Fatalf("first message %s, want ready", b)
	}
}

// viewersOf returns the socket viewers the service holds for session id.
func viewersOf(svc *Service, id string) []*socketViewer {
	svc.viewers.mu.Lock()
	defer svc.viewers.mu.Unlock()
	var out []*socketViewer
	for sv := range svc.viewers.m {
		if sv.session == id {
			out = append(out, sv)
		}
	}
	return out
}

// checkFor polls cond until it holds, failing the test after a long while.
func checkFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// pingDeleting makes a session with a socket that said hello, puts the
// session in the state Delete's first call leaves it in while it waits
// for a running generation to end (before the object goes), and sends a
// ping on the socket. It returns the socket, the session's stub and id.
func pingDeleting(t *testing.T, svc *Service) (*websocket.Conn, *objects.Stub, string) {
	t.Helper()
	ctx := context.Background()
	s, err := svc.Create(ctx, "local", CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, serveSession(t, svc, "local", s.ID, nil))
	helloReady(t, c)
	stub, err := svc.sessions.Get(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objects.Do(ctx, stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (struct{}, error) {
		o.deleting = true
		return struct{}{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	return c, stub, s.ID
}

// A viewer refused inside a session's call (the session is being deleted)
// is closed without the call waiting for it: a client that does not read
// would otherwise hold the session's serial calls for the close handshake
// (about 5 s), and the Delete waiting on them.
func TestRefusedViewerCloseDoesNotHoldSession(t *testing.T) {
	ctx := context.Background()
	svc := startService(t, offlineRegistry(t, 0, ModelInfo{}))
	_, stub, id := pingDeleting(t, svc) // then the client reads no more
	svs := viewersOf(svc, id)
	if len(svs) != 1 {
		t.Fatalf("%d viewers, want 1", len(svs))
	}
	v := svs[0].v
	checkFor(t, "the session to refuse the viewer", func() bool { return v.Err() != nil })
	// The next call of the session runs while that close still waits for
	// the client's close frame, which never comes: the client stopped
	// reading.
	if _, err := objects.Do(ctx, stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (struct{}, error) {
		return struct{}{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.Done():
		t.Fatal("a call of the session waited for a refused viewer's close handshake")
	default:
	}
}

// Service.Close closes the viewers of all sessions at once: with one client
// per session that does not read, each close handshake waits for a close
// frame that does not come, and one session after another, shutdown took
// that wait (about 5 s) for each.
func TestServiceCloseClosesSessionsConcurrently(t *testing.T) {
	ctx := context.Background()
	svc := startService(t, offlineRegistry(t, 0, ModelInfo{}))
	const n = 3
	var clients []*websocket.Conn
	var views []*streaming.Viewer
	for range n {
		s, err := svc.Create(ctx, "local", CreateRequest{})
		if err != nil {
			t.Fatal(err)
		}
		c := dial(t, serveSession(t, svc, "local", s.ID, nil))
		helloReady(t, c) // then the client reads no more, for now
		// ready is sent before the viewer joins the session's hub (so
		// that it comes before any backlog): one that joined after Close
		// took the hubs would not be among those it closes.
		checkFor(t, "the viewer to join the session's hub", func() bool {
			h := svc.existingHub(s.ID)
			return h != nil && h.Viewers() == 1
		})
		clients = append(clients, c)
		views = append(views, viewersOf(svc, s.ID)[0].v)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		svc.Close()
	}()
	checkFor(t, "every viewer to be closing", func() bool {
		for _, v := range views {
			if v.Err() == nil {
				return false
			}
		}
		return true
	})
	for i, v := range views {
		select {
		case <-v.Done():
			t.Errorf("viewer %d had finished its close before the others began theirs", i)
		default:
		}
	}
	// The clients read again: the close frames are answered, and the
	// handshakes end.
	for _, c := range clients {
		go func() {
			for {
				if _, _, err := c.Read(ctx); err != nil {
					return
				}
			}
		}()
	}
	<-closed
}

// A socket refused because the runtime began to stop between Accept's
// access check and the hand-over gets the caller's close code, 1013 (try
// again later) for unavailable, not the 1001 of a viewer closed by Accept
// itself.
func TestAcceptRefusedWhileStoppingKeepsCallersCode(t *testing.T) {
	ctx := context.Background()
	svc, rt := startServiceRuntime(t, offlineRegistry(t, 0, ModelInfo{}), nil)
	s, err := svc.Create(ctx, "local", CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := svc.Create(ctx, "local", CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	stub, err := svc.sessions.Get(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	otherStub, err := svc.sessions.Get(other.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Hold the session's worker, so that Accept's access check queues.
	hold, held := make(chan struct{}), make(chan struct{})
	go objects.Do(ctx, stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (struct{}, error) {
		close(held)
		<-hold
		return struct{}{}, nil
	})
	<-held
	accepted := make(chan error, 1)
	url := serveSession(t, svc, "local", s.ID, accepted)
	dialed := make(chan *websocket.Conn, 1)
	go func() {
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			t.Error(err)
		}
		dialed <- c
	}()
	checkFor(t, "Accept's check to queue", func() bool { return stub.Queued() == 1 })
	// The runtime stops taking calls; those queued still run.
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		rt.Close()
	}()
	checkFor(t, "the runtime to refuse calls", func() bool {
		_, err := objects.Do(ctx, otherStub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (struct{}, error) {
			return struct{}{}, nil
		})
		return err != nil
	})
	close(hold)
	if err := <-accepted; err == nil {
		t.Fatal("Accept took a socket while the runtime stopped")
	}
	c := <-dialed
	if c == nil {
		return
	}
	defer c.CloseNow()
	_, _, err = c.Read(ctx)
	if got, want := websocket.CloseStatus(err), websocket.StatusTryAgainLater; got != want {
		t.Fatalf("close status %v (%v), want %v", got, err, want)
	}
	<-stopped
}

// A socket whose end cannot be delivered to its session (the session,
// hibernated, fails to wake: here its stored metadata is unreadable)
// still gives back its owner's stream slot and its viewer: they are
// released when the connection closes, not by the delivery.
func TestSocketReleasedWhenCloseNotDelivered(t *testing.T) {
	ctx := context.Background()
	svc, rt := startServiceRuntime(t, offlineRegistry(t, 0, ModelInfo{}), func(rt *objects.Runtime) { rt.IdleTimeout = 20 * time.Millisecond })
	s, err := svc.Create(ctx, "local", CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, serveSession(t, svc, "local", s.ID, nil))
	helloReady(t, c)
	if got := svc.streamsOf("local"); got != 1 {
		t.Fatalf("%d streams counted for the owner, want 1", got)
	}
	checkFor(t, "the session to hibernate", func() bool { return rt.Stats().Active == 0 })
	info, err := svc.sessions.Info(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(rt.Dir, info.Path)+"?_pragma=busy_timeout(20000)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE meta SET created_at = 'not a time'`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	c.Close(websocket.StatusNormalClosure, "")
	checkFor(t, "the socket's stream slot and viewer to be released", func() bool {
		return svc.streamsOf("local") == 0 && len(viewersOf(svc, s.ID)) == 0
	})
}

// streamsOf returns the streams counted for owner.
func (svc *Service) streamsOf(owner string) int {
	svc.streams.mu.Lock()
	defer svc.streams.mu.Unlock()
	return svc.streams.n[owner]
}

// A socket whose Accept passed its access check before its session's
// Delete began is handed over before the object goes, and released with
// it; without that, a Delete that ran entirely between the check and the
// hand-over left the socket attached to the deleted name, its slot never
// released (and its first message re-creating the object).
func TestAcceptRacingDeleteDoesNotOutliveIt(t *testing.T) {
	ctx := context.Background()
	svc, s, stub := startSession(t)
	noop := func(ctx context.Context, o *sessionObj, tx *objects.Tx) (struct{}, error) { return struct{}{}, nil }
	// Hold the session's worker, so that Accept's access check queues.
	hold, held := make(chan struct{}), make(chan struct{})
	go objects.Do(ctx, stub, func(ctx context.Context, o *sessionObj, tx *objects.Tx) (struct{}, error) {
		close(held)
		<-hold
		return struct{}{}, nil
	})
	<-held
	accepted := make(chan error, 1)
	url := serveSession(t, svc, "local", s.ID, accepted)
	dialed, clientDone := make(chan *websocket.Conn, 1), make(chan struct{})
	go func() {
		defer close(clientDone)
		c, _, err := websocket.Dial(ctx, url, nil)
		dialed <- c
		if err != nil {
			return
		}
		for { // answers the server's close
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	}()
	defer func() {
		if c := <-dialed; c != nil {
			c.CloseNow()
		}
		<-clientDone
	}()
	checkFor(t, "Accept's check to queue", func() bool { return stub.Queued() == 1 })
	// Whatever Accept does between its check and the hand-over and needs
	// the owner's stream count waits, until Accept or Delete is done.
	svc.streams.mu.Lock()
	close(hold)
	if _, err := objects.Do(ctx, stub, noop); err != nil { // after the check
		svc.streams.mu.Unlock()
		t.Fatal(err)
	}
	deleted := make(chan error, 1)
	go func() { deleted <- svc.Delete(ctx, "local", s.ID) }()
	var acceptErr, deleteErr error
	select {
	case acceptErr = <-accepted:
		svc.streams.mu.Unlock()
		deleteErr = <-deleted
	case deleteErr = <-deleted:
		svc.streams.mu.Unlock()
		acceptErr = <-accepted
	}
	if deleteErr != nil {
		t.Fatal(deleteErr)
	}
	t.Logf("Accept: %v", acceptErr)
	checkFor(t, "the socket's stream slot and viewer to be released", func() bool {
		return svc.streamsOf("local") == 0 && len(viewersOf(svc, s.ID)) == 0
	})
	if ok, err := svc.sessions.Exists(ctx, s.ID); err != nil || ok {
		t.Fatalf("session exists after Delete: %v %v", ok, err)
	}
}

// A message on a socket of a session being deleted (its deletion has
// begun, its sockets not yet closed) closes the socket as the deletion
// does, 1000 "object deleted", not as a refusal (1008).
func TestSocketOfSessionBeingDeleted(t *testing.T) {
	ctx := context.Background()
	svc := startService(t, offlineRegistry(t, 0, ModelInfo{}))
	c, _, _ := pingDeleting(t, svc)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		_, _, err := c.Read(rctx)
		if err == nil {
			continue
		}
		if st, reason := websocket.CloseStatus(err), closeReason(err); st != websocket.StatusNormalClosure || reason != objects.ReasonDeleted {
			t.Fatalf("closed with %d %q (%v), want 1000 %q", st, reason, err, objects.ReasonDeleted)
		}
		return
	}
}

// closeReason returns the reason of the close frame err reports, if any.
func closeReason(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return ""
}

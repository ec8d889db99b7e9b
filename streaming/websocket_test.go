package streaming_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"sessiond/streaming"
)

// wsServer serves a WebSocket whose server side is a viewer handed to
// attach; it returns when the viewer is done.
func wsServer(tb testing.TB, opts *streaming.ViewerOptions, attach func(*streaming.Viewer)) *httptest.Server {
	tb.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := streaming.Accept(w, r, nil)
		if err != nil {
			return
		}
		// The web layer reads client messages; here nobody sends any.
		ctx := ws.Conn().CloseRead(context.Background())
		v := streaming.NewViewer(ws, opts)
		defer v.Close()
		attach(v)
		select {
		case <-v.Done():
		case <-ctx.Done():
		}
	}))
	tb.Cleanup(ts.Close)
	return ts
}

// acceptSink accepts a WebSocket and returns its sink: batched, one from
// streaming.Accept (a WriteFrame's messages in one write); otherwise one
// from streaming.NewWebSocket (a write per message).
func acceptSink(w http.ResponseWriter, r *http.Request, batched bool, opts *websocket.AcceptOptions) (*streaming.WebSocket, error) {
	if batched {
		return streaming.Accept(w, r, opts)
	}
	conn, err := websocket.Accept(w, r, opts)
	if err != nil {
		return nil, err
	}
	return streaming.NewWebSocket(conn), nil
}

func dialWS(tb testing.TB, url string) *websocket.Conn {
	tb.Helper()
	conn, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(url, "http"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.CloseNow() })
	return conn
}

// readAll reads text messages until the connection closes and returns them
// with the close status.
func readAll(tb testing.TB, conn *websocket.Conn) ([]string, websocket.StatusCode) {
	tb.Helper()
	var msgs []string
	for {
		typ, data, err := conn.Read(context.Background())
		if err != nil {
			return msgs, websocket.CloseStatus(err)
		}
		if typ != websocket.MessageText {
			tb.Fatalf("message type %v", typ)
		}
		msgs = append(msgs, string(data))
	}
}

func TestWebSocketSink(t *testing.T) {
	l := streaming.NewLog("g_1", nil)
	var want []string
	for _, w := range []string{"Hel", "lo"} {
		want = append(want, string(mustAppend(t, l, w).Data))
	}
	ts := wsServer(t, &streaming.ViewerOptions{CloseOnFinal: true}, func(v *streaming.Viewer) {
		if err := l.Subscribe(v, 0); err != nil {
			t.Error(err)
		}
	})
	conn := dialWS(t, ts.URL)
	checkFor(t, "the subscription", func() bool { return l.Subscribers() == 1 })
	want = append(want, string(mustAppend(t, l, ", world").Data))
	want = append(want, string(mustFinish(t, l).Data))

	msgs, code := readAll(t, conn)
	if code != streaming.CloseNormal {
		t.Fatalf("close status %v, want %d", code, streaming.CloseNormal)
	}
	if strings.Join(msgs, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(msgs, "\n"), strings.Join(want, "\n"))
	}
}

func TestWebSocketCloseCode(t *testing.T) {
	ts := wsServer(t, nil, func(v *streaming.Viewer) {
		if err := v.Send([]byte(`{"type":"resume_required","generation":"g_1","after":3}`)); err != nil {
			t.Error(err)
		}
		if err := v.CloseWith(streaming.CloseResumeRequired, "resume_required"); err != nil {
			t.Error(err)
		}
	})
	conn := dialWS(t, ts.URL)
	msgs, code := readAll(t, conn)
	if code != streaming.CloseResumeRequired {
		t.Fatalf("close status %v, want %d", code, streaming.CloseResumeRequired)
	}
	if len(msgs) != 1 || !strings.Contains(msgs[0], `"after":3`) {
		t.Fatalf("messages %q", msgs)
	}
}

// Closing an idle viewer whose sink has written before sends the close
// frame every time: the end of the viewer's context, which aborts a write
// in flight, must not race the close handshake to the connection.
func TestWebSocketCloseAfterWritesSendsCloseFrame(t *testing.T) {
	for i := range 40 {
		sent := make(chan struct{})
		ts := wsServer(t, nil, func(v *streaming.Viewer) {
			if err := v.Send([]byte(`{"type":"pong"}`)); err != nil {
				t.Error(err)
			}
			<-sent
			if err := v.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		conn := dialWS(t, ts.URL)
		if _, _, err := conn.Read(context.Background()); err != nil {
			t.Fatal(err)
		}
		close(sent)
		if _, code := readAll(t, conn); code != streaming.CloseGoingAway {
			t.Fatalf("round %d: close status %v, want %d", i, code, streaming.CloseGoingAway)
		}
		ts.Close()
	}
}

// A write stuck on a client that does not read ends, with the connection,
// when the context the sink was given ends; later writes under it fail at
// once. Both kinds of sink: one write per message, and messages batched
// into one write (two per WriteFrame here).
func TestWebSocketWriteEndsWithContext(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) {
			errc := make(chan error, 2)
			ctx, cancel := context.WithCancel(context.Background())
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				sink, err := acceptSink(w, r, batched, nil)
				if err != nil {
					return
				}
				frame := make([]byte, 1<<20)
				var werr error
				for range 128 { // far more than the socket buffers hold
					if werr = sink.WriteFrame(ctx, [][]byte{frame, frame}); werr != nil {
						break
					}
				}
				errc <- werr
				errc <- sink.WriteFrame(ctx, [][]byte{[]byte("after")})
			}))
			defer ts.Close()
			conn := dialWS(t, ts.URL) // never reads
			_ = conn
			time.Sleep(200 * time.Millisecond)
			cancel()
			select {
			case err := <-errc:
				if err == nil {
					t.Fatal("256 MiB written to a client that reads nothing")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the stuck write did not end with its context")
			}
			if err := <-errc; err == nil {
				t.Fatal("a write under an ended context succeeded")
			}
		})
	}
}

// A sink from Accept writes each WriteFrame's messages in one write; the
// client still reads them as separate messages, byte for byte and in
// order, also when they are larger than what is copied into one buffer,
// and when other goroutines write to the connection meanwhile: messages
// written directly through coder/websocket (large ones go to the socket
// in several writes, which the sink's messages must not land between),
// and the pongs answering the client's pings.
func TestWebSocketBatchedMessagesKeepOrder(t *testing.T) {
	const batches, direct = 200, 300
	big := strings.Repeat("x", 300<<10) // over what is copied
	batchMsg := func(b, i int) string {
		m := fmt.Sprintf("b%d.%d|", b, i)
		if b%50 == 7 && i == 1 {
			m += big
		}
		return m
	}
	directMsg := func(i int) string {
		m := fmt.Sprintf("d%d|", i)
		if i%37 == 5 {
			m += big
		}
		return m
	}
	done := make(chan error, 3) // the direct writer's, the batches', Close's
	pinged := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := streaming.Accept(w, r, nil)
		if err != nil {
			done <- err
			return
		}
		ctx := ws.Conn().CloseRead(context.Background()) // answers the pings
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range direct {
				if err := ws.Conn().Write(ctx, websocket.MessageText, []byte(directMsg(i))); err != nil {
					done <- err
					return
				}
			}
		})
		for b := range batches {
			if b == batches/2 {
				select { // the second half goes out while pongs are written
				case <-pinged:
				case <-time.After(10 * time.Second):
				}
			}
			frames := make([][]byte, 1+b%20)
			for i := range frames {
				frames[i] = []byte(batchMsg(b, i))
			}
			if err := ws.WriteFrame(ctx, frames); err != nil {
				done <- err
				return
			}
		}
		wg.Wait()
		done <- ws.Close(int(websocket.StatusNormalClosure), "done")
	}))
	defer ts.Close()
	conn := dialWS(t, ts.URL)
	conn.SetReadLimit(1 << 20)
	pingCtx, stopPings := context.WithCancel(context.Background())
	defer stopPings()
	var pings sync.WaitGroup
	var pongs atomic.Int64
	defer pings.Wait()
	pings.Go(func() {
		// Until the connection closes: a ping in flight then fails.
		for pingCtx.Err() == nil {
			ctx, cancel := context.WithTimeout(pingCtx, 5*time.Second)
			err := conn.Ping(ctx)
			cancel()
			if err != nil {
				return
			}
			if pongs.Add(1) == 1 {
				close(pinged)
			}
		}
	})
	// conn.Ping needs a reader: readAll is it.
	msgs, code := readAll(t, conn)
	stopPings()
	pings.Wait()
	if pongs.Load() == 0 {
		t.Fatal("no ping was answered")
	}
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
	if code != websocket.StatusNormalClosure {
		t.Fatalf("close status %v", code)
	}
	var gotBatch, gotDirect []string
	for _, m := range msgs {
		if strings.HasPrefix(m, "d") {
			gotDirect = append(gotDirect, m)
		} else {
			gotBatch = append(gotBatch, m)
		}
	}
	var wantBatch []string
	for b := range batches {
		for i := range 1 + b%20 {
			wantBatch = append(wantBatch, batchMsg(b, i))
		}
	}
	if len(gotBatch) != len(wantBatch) || len(gotDirect) != direct {
		t.Fatalf("%d batched and %d direct messages, want %d and %d", len(gotBatch), len(gotDirect), len(wantBatch), direct)
	}
	for i := range wantBatch {
		if gotBatch[i] != wantBatch[i] {
			t.Fatalf("batched message %d: %.40q, want %.40q", i, gotBatch[i], wantBatch[i])
		}
	}
	for i, m := range gotDirect {
		if m != directMsg(i) {
			t.Fatalf("direct message %d: %.40q", i, m)
		}
	}
}

// A close from another goroutine while a batch is being written reaches
// the client with its code, whether it comes between two batches or
// waits for one to be written.
func TestWebSocketCloseDuringBatch(t *testing.T) {
	const code = 4001
	for i := range 20 {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := streaming.Accept(w, r, nil)
			if err != nil {
				return
			}
			ctx := ws.Conn().CloseRead(context.Background())
			frames := make([][]byte, 10)
			for j := range frames {
				frames[j] = []byte(fmt.Sprintf(`{"n":%d}`, j))
			}
			writing := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				for n := 0; ; n++ {
					if n == 20 {
						close(writing)
					}
					if ws.WriteFrame(ctx, frames) != nil {
						return
					}
				}
			})
			<-writing
			ws.Conn().Close(code, "bye")
			wg.Wait()
		}))
		conn := dialWS(t, ts.URL)
		_, got := readAll(t, conn)
		ts.Close()
		if got != code {
			t.Fatalf("round %d: close status %v, want %d", i, got, code)
		}
	}
}

// AfterClose's function runs when the connection closes, whoever closes
// it (here the reader that saw the client go, as a runtime's does), and
// at once when registered after; a sink from NewWebSocket cannot watch.
func TestWebSocketAfterClose(t *testing.T) {
	closed := make(chan struct{})
	late := make(chan struct{})
	var plain atomic.Bool
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		batched := r.URL.Query().Get("plain") == ""
		ws, err := acceptSink(w, r, batched, nil)
		if err != nil {
			return
		}
		if !batched {
			plain.Store(!ws.AfterClose(func() {}))
			ws.Conn().CloseNow()
			return
		}
		if !ws.AfterClose(func() { close(closed) }) {
			t.Error("AfterClose refused a sink from Accept")
		}
		ws.Conn().Read(context.Background()) // fails when the client goes
		ws.Conn().CloseNow()                 // as a runtime's reader does then
		<-closed
		ws.AfterClose(func() { close(late) })
	}))
	defer ts.Close()
	c := dialWS(t, ts.URL)
	c.CloseNow()
	<-closed
	<-late
	c = dialWS(t, ts.URL+"?plain=1")
	c.Read(context.Background())
	c.CloseNow()
	checkFor(t, "the plain sink to refuse AfterClose", plain.Load)
}

// TestWebSocketKeepAliveSparesABusyReader: a server reader that stops
// reading for several ping intervals (as the runtime's does while a busy
// object's queue is full) leaves the client's pongs unread; the client is
// alive, so the keepalive must not drop it, and the connection works
// once the reader reads again.
func TestWebSocketKeepAliveSparesABusyReader(t *testing.T) {
	const interval = 100 * time.Millisecond
	closed := make(chan struct{})
	resumed := make(chan *streaming.WebSocket, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := streaming.Accept(w, r, nil)
		if err != nil {
			return
		}
		ws.AfterClose(func() { close(closed) })
		ws.KeepAlive(interval)
		time.Sleep(8 * interval) // the reader busy: pings go out, pongs wait unread
		resumed <- ws
		ws.Conn().Read(context.Background())
		ws.Conn().CloseNow()
	}))
	defer ts.Close()

	c := dialWS(t, ts.URL)
	got := make(chan string, 1)
	go func() { // reads, so it answers every ping
		_, data, err := c.Read(context.Background())
		if err != nil {
			got <- "read failed: " + err.Error()
			return
		}
		got <- string(data)
	}()
	ws := <-resumed
	select {
	case <-closed:
		t.Fatal("a live client was dropped while the server did not read its pongs")
	default:
	}
	time.Sleep(4 * interval) // the reader takes the pongs; pings go on, answered
	select {
	case <-closed:
		t.Fatal("a live client was dropped after the reader resumed")
	default:
	}
	if err := ws.WriteFrame(context.Background(), [][]byte{[]byte(`{"type":"x"}`)}); err != nil {
		t.Fatalf("write after the pause: %v", err)
	}
	if m := <-got; m != `{"type":"x"}` {
		t.Fatalf("client got %q", m)
	}
}

// TestWebSocketKeepAlive: a client that answers pings (by reading) stays
// connected across many ping intervals and still gets messages; one that
// never reads, and so never answers, is dropped, which releases what its
// connection held (AfterClose).
func TestWebSocketKeepAlive(t *testing.T) {
	// Long enough that a loaded machine answers a ping within two of
	// them: a late pong would drop the live client.
	const interval = 100 * time.Millisecond
	type served struct {
		ws     *streaming.WebSocket
		closed chan struct{}
	}
	conns := make(chan served, 2)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := streaming.Accept(w, r, nil)
		if err != nil {
			return
		}
		s := served{ws: ws, closed: make(chan struct{})}
		ws.AfterClose(func() { close(s.closed) })
		if !ws.KeepAlive(interval) {
			t.Error("KeepAlive refused a sink from Accept")
		}
		conns <- s
		// The server's reader, as the runtime's: pongs arrive through it.
		ws.Conn().Read(context.Background())
		ws.Conn().CloseNow()
	}))
	defer ts.Close()

	// A live client: it reads, so coder/websocket answers every ping.
	live := dialWS(t, ts.URL)
	got := make(chan string, 1)
	go func() {
		_, data, err := live.Read(context.Background())
		if err != nil {
			got <- "read failed: " + err.Error()
			return
		}
		got <- string(data)
	}()
	s := <-conns
	time.Sleep(6 * interval) // pings, each answered
	select {
	case <-s.closed:
		t.Fatal("a client answering pings was dropped")
	default:
	}
	if err := s.ws.WriteFrame(context.Background(), [][]byte{[]byte(`{"type":"x"}`)}); err != nil {
		t.Fatalf("write after pings: %v", err)
	}
	if m := <-got; m != `{"type":"x"}` {
		t.Fatalf("live client got %q", m)
	}

	// A silent client: it never reads, so it never answers a ping.
	silent := dialWS(t, ts.URL)
	_ = silent
	s = <-conns
	select {
	case <-s.closed:
	case <-time.After(10 * time.Second): // a hang guard, not a speed bound
		t.Fatal("a client that never answered a ping was not dropped")
	}

	// A plain sink cannot watch its connection, so it does not ping.
	ts2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := acceptSink(w, r, false, nil)
		if err != nil {
			return
		}
		if ws.KeepAlive(interval) {
			t.Error("KeepAlive accepted a sink that cannot watch its connection")
		}
		ws.Conn().CloseNow()
	}))
	defer ts2.Close()
	c := dialWS(t, ts2.URL)
	c.Read(context.Background())
}

// Close does not wait for an answer from a client that does not read (a
// phone gone offline) past closeAnswerWait: it drops the connection, and
// the client that reads later finds the close frame before the end. The
// wait here is far below coder/websocket's own 5 s, and the hang guard
// too.
func TestWebSocketCloseDropsAClientThatDoesNotAnswer(t *testing.T) {
	defer streaming.SetCloseAnswerWait(50 * time.Millisecond)()
	closed := make(chan error, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := streaming.Accept(w, r, nil)
		if err != nil {
			closed <- err
			return
		}
		closed <- ws.Close(int(websocket.StatusNormalClosure), "object deleted")
	}))
	defer ts.Close()
	conn := dialWS(t, ts.URL) // and never read until the server's Close returns
	select {
	case err := <-closed:
		if err != nil {
			t.Logf("close: %v", err) // the handshake was cut: reported, not a failure
		}
	case <-time.After(3 * time.Second): // a hang guard, below the 5 s of the old wait
		t.Fatal("Close still waits for a client that does not read")
	}
	if _, code := readAll(t, conn); code != websocket.StatusNormalClosure {
		t.Fatalf("the client read close status %v, want 1000 (the frame was written before the drop)", code)
	}
}

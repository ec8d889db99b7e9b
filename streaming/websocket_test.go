package streaming_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
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
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		// The web layer reads client messages; here nobody sends any.
		ctx := conn.CloseRead(context.Background())
		v := streaming.NewViewer(streaming.NewWebSocket(conn), opts)
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

// A write stuck on a client that does not read ends, with the connection,
// when the context the sink was given ends; later writes under it fail at
// once.
func TestWebSocketWriteEndsWithContext(t *testing.T) {
	errc := make(chan error, 2)
	ctx, cancel := context.WithCancel(context.Background())
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		sink := streaming.NewWebSocket(conn)
		frame := make([]byte, 1<<20)
		var werr error
		for range 256 { // far more than the socket buffers hold
			if werr = sink.WriteFrame(ctx, [][]byte{frame}); werr != nil {
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
}

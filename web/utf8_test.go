package web_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coder/websocket"

	"sessiond/web"
)

// The bytes of a body that is not UTF-8: RFC 8259 JSON must be, and so
// must a WebSocket text frame; stored, they came back in answers strict
// parsers refuse and in frames that closed every viewer's socket.
const notUTF8 = "raw \xff\xfe bytes"

// expectNotUTF8 sends body and wants 400 invalid_json saying where the
// body stops being UTF-8 (at the 0xff of notUTF8).
func expectNotUTF8(t *testing.T, s *server, method, path, body string) {
	t.Helper()
	var e apiErr
	st, raw := s.do(t, method, path, body, &e)
	want := "not valid UTF-8 at byte offset " + strconv.Itoa(strings.Index(body, "\xff"))
	if st != 400 || e.Error.Code != "invalid_json" || !strings.Contains(e.Error.Message, want) {
		t.Fatalf("%s %s %q: %d %s; want 400 invalid_json saying %q", method, path, body, st, raw, want)
	}
}

// getValid GETs path and wants a 200 answer that is UTF-8.
func getValid(t *testing.T, s *server, path string) string {
	t.Helper()
	st, raw := s.do(t, "GET", path, nil, nil)
	if st != 200 || !utf8.Valid(raw) {
		t.Fatalf("GET %s: %d %q, want 200 and UTF-8", path, st, raw)
	}
	return string(raw)
}

func TestPostTurnsRefusesInvalidUTF8(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	expectNotUTF8(t, s, "POST", "/v1/sessions/"+sess.ID+"/turns",
		`{"turns":[{"role":"user","content":"`+notUTF8+`"}],"generate":true}`)
	if got := getValid(t, s, "/v1/sessions/"+sess.ID+"/turns"); !strings.Contains(got, `"turns":[]`) {
		t.Fatalf("turns after a refused post: %s", got)
	}
}

func TestCreateRefusesInvalidUTF8(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	for _, body := range []string{
		`{"metadata":{"k":"` + notUTF8 + `"}}`,
		`{"title":"` + notUTF8 + `"}`, // was stored with U+FFFD for the bytes
		`{"system":"` + notUTF8 + `"}`,
	} {
		expectNotUTF8(t, s, "POST", "/v1/sessions", body)
	}
	if got := getValid(t, s, "/v1/sessions"); !strings.Contains(got, `"sessions":[]`) {
		t.Fatalf("sessions after refused creates: %s", got)
	}
}

func TestPatchRefusesInvalidUTF8(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, map[string]any{"title": "kept", "metadata": map[string]any{"k": "v"}})
	for _, body := range []string{
		`{"metadata":{"k":"` + notUTF8 + `"}}`,
		`{"title":"` + notUTF8 + `"}`,
	} {
		expectNotUTF8(t, s, "PATCH", "/v1/sessions/"+sess.ID, body)
	}
	if got := getValid(t, s, "/v1/sessions/"+sess.ID); !strings.Contains(got, `"title":"kept"`) || !strings.Contains(got, `"metadata":{"k":"v"}`) {
		t.Fatalf("session after refused patches: %s", got)
	}
}

func TestImportRefusesInvalidUTF8(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	for _, body := range []string{
		"{\"type\":\"session\",\"session\":{\"id\":\"abc\"}}\n{\"type\":\"turn\",\"turn\":{\"id\":1,\"role\":\"user\",\"content\":\"" + notUTF8 + "\"}}\n",
		"{\"type\":\"session\",\"session\":{\"id\":\"abd\",\"metadata\":{\"k\":\"" + notUTF8 + "\"}}}\n",
		"{\"type\":\"session\",\"session\":{\"id\":\"abe\",\"title\":\"" + notUTF8 + "\"}}\n",
	} {
		expectNotUTF8(t, s, "POST", "/v1/sessions/import", body)
	}
	if got := getValid(t, s, "/v1/sessions"); !strings.Contains(got, `"sessions":[]`) {
		t.Fatalf("sessions after refused imports: %s", got)
	}
}

// A send that is not UTF-8 is answered as one that is not JSON: an error
// invalid_json, the socket open, nothing stored, and the other viewers'
// frames stay UTF-8.
func TestWebSocketSendRefusesInvalidUTF8(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, nil)
	viewer := s.dial(t, sess.ID)
	defer viewer.CloseNow()
	send(t, viewer, map[string]any{"type": "hello"})
	recvUntil(t, viewer, "ready")
	c := s.dial(t, sess.ID)
	defer c.CloseNow()
	send(t, c, map[string]any{"type": "hello"})
	recvUntil(t, c, "ready")
	msg := `{"type":"send","turns":[{"role":"user","content":"` + notUTF8 + `"}],"idempotency_key":"k1"}`
	if err := c.Write(context.Background(), websocket.MessageText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	want := "not valid UTF-8 at byte offset " + strconv.Itoa(strings.Index(msg, "\xff"))
	if m := recv(t, c); m.Type != "error" || m.Code != "invalid_json" || !strings.Contains(m.Message, want) {
		t.Fatalf("a send that is not UTF-8 answered %+v; want an error invalid_json saying %q", m, want)
	}
	send(t, c, map[string]any{"type": "send", "turns": []any{map[string]any{"role": "user", "content": "kept"}}, "idempotency_key": "k2"})
	if m := recv(t, c); m.Type != "turn" || !strings.Contains(string(m.Turn), `"content":"kept"`) {
		t.Fatalf("the next send answered %+v", m)
	}
	// The viewer's next frame is that turn: nothing came before it.
	if m := recv(t, viewer); m.Type != "turn" || !strings.Contains(string(m.Turn), `"content":"kept"`) {
		t.Fatalf("the viewer got %+v first", m)
	}
	if got := getValid(t, s, "/v1/sessions/"+sess.ID+"/turns"); strings.Count(got, `"role":"user"`) != 1 {
		t.Fatalf("turns: %s", got)
	}
}

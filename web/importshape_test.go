package web_test

import (
	"strings"
	"testing"

	"sessiond/web"
)

// An import line that parses but does not fit its shape (a field it does
// not know, a value of the wrong JSON type) is refused as any JSON body
// is, 400 invalid_request; what is refused for its values (a status, a
// parent, a usage count) stays 422.
func TestImportLineShapeIs400(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	const head = `{"type":"session","session":{"title":"imp"}}` + "\n"
	for _, c := range []struct {
		body   string
		status int
		want   string // in the message
	}{
		{`{"type":"session","session":{"title":"imp","odd":1}}`, 400, `unknown field "odd"`},
		{`{"type":"session","odd":1}`, 400, `unknown field "odd"`},
		{head + `{"type":"turn","turn":{"id":1,"role":"user","content":"x","odd":1}}`, 400, `unknown field "odd"`},
		{`{"type":"session","session":{"title":5}}`, 400, `must be a string`},
		{head + `{"type":"turn","turn":{"id":"1","role":"user","content":"x"}}`, 400, `"turn.id" must be an integer`},
		{`[]`, 400, "must be an object"},
		{head + `{"type":"turn","turn":{"id":1,"role":"user","content":"x","created_at":5}}`, 400, "created_at"},
		{head + `{"type":"turn","turn":{"id":1,"role":"user","content":"x","status":"odd"}}`, 422, "status"},
		{head + `{"type":"turn","turn":{"id":1,"parent_id":7,"role":"user","content":"x"}}`, 422, "parent"},
		// The other line type's object is a field this line does not have
		// (it was dropped silently, a turn with it).
		{`{"type":"session","session":{},"turn":{"id":1,"role":"user","content":"x"}}`, 400, `a session line has no field "turn"`},
		{head + `{"type":"turn","turn":{"id":1,"role":"user","content":"x"},"session":{}}`, 400, `a turn line has no field "session"`},
		// An export cut short after a line: its session line names a
		// later last turn.
		{`{"type":"session","session":{"last_turn_id":2}}` + "\n" + `{"type":"turn","turn":{"id":1,"role":"user","content":"x"}}`, 422, "the export is incomplete"},
		{`{"type":"session","session":{"last_turn_id":2}}`, 422, "the import ends at turn 0"},
		// A head that names no turn would silently be the last turn.
		{`{"type":"session","session":{"head_turn_id":9}}` + "\n" + `{"type":"turn","turn":{"id":1,"role":"user","content":"x"}}`, 422, "head_turn_id 9 is not among the turns"},
		// Tool call ids are bounded (1 KiB), in calls and in results.
		{head + `{"type":"turn","turn":{"id":1,"role":"assistant","content":"","tool_calls":[{"id":"` + strings.Repeat("i", 1025) + `","type":"function","function":{"name":"f","arguments":"{}"}}]}}`, 422, "a tool call id over 1024 bytes"},
		{head + `{"type":"turn","turn":{"id":1,"role":"tool","tool_call_id":"` + strings.Repeat("i", 1025) + `","content":"x"}}`, 422, "a tool call id over 1024 bytes"},
	} {
		var e apiErr
		st, raw := s.do(t, "POST", "/v1/sessions/import", c.body, &e)
		if st != c.status || e.Error.Code != "invalid_request" || !strings.Contains(e.Error.Message, c.want) {
			t.Errorf("import %s: %d %s, want %d invalid_request saying %q", c.body, st, raw, c.status, c.want)
		}
	}
	// As a create's body with an unknown field is.
	s.expectError(t, "POST", "/v1/sessions", `{"title":"a","odd":1}`, 400, "invalid_request")
	// Field names are exact, and each is given once (encoding/json took
	// "Title" for title, and the last of two): on every body.
	created := s.createSession(t, nil)
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/sessions", `{"Title":"a"}`},
		{"POST", "/v1/sessions", `{"title":"a","title":"b"}`},
		{"PATCH", "/v1/sessions/" + created.ID, `{"TITLE":"a"}`},
		{"PATCH", "/v1/sessions/" + created.ID, `{"title":"a","title":"b"}`},
		{"POST", "/v1/sessions/" + created.ID + "/turns", `{"Turns":[{"role":"user","content":"x"}]}`},
		{"POST", "/v1/sessions/" + created.ID + "/turns", `{"turns":[{"role":"user","content":"x"}],"turns":[{"role":"user","content":"y"}]}`},
		{"POST", "/v1/sessions/" + created.ID + "/fork", `{"turn_id":1,"turn_id":1}`},
		{"POST", "/v1/tickets", `{"Session_ID":"` + created.ID + `"}`},
	} {
		s.expectError(t, c.method, c.path, c.body, 400, "invalid_request")
	}
	var after struct{ Title string }
	if st, raw := s.do(t, "GET", "/v1/sessions/"+created.ID, nil, &after); st != 200 || after.Title != "" {
		t.Fatalf("the session after refused bodies: %d %s, want untouched", st, raw)
	}
}

package web_test

import (
	"testing"

	"sessiond/session"
	"sessiond/web"
)

// postTurn posts one user turn (under parent when it is not nil) and
// returns it.
func (s *server) postTurn(tb testing.TB, id, text string, parent any) session.Turn {
	tb.Helper()
	body := map[string]any{"turns": []any{map[string]any{"role": "user", "content": text}}}
	if parent != nil {
		body["parent_id"] = parent
	}
	var res session.PostResult
	if st, raw := s.do(tb, "POST", "/v1/sessions/"+id+"/turns", body, &res); st != 201 || len(res.Turns) != 1 {
		tb.Fatalf("post %q under %v: %d %s", text, parent, st, raw)
	}
	return res.Turns[0]
}

// turnPage is GET /turns's answer.
type turnPage struct {
	Turns   []session.Turn `json:"turns"`
	HasMore bool           `json:"has_more"`
}

// ?branch= naming no turn is refused as an unknown parent_id is (422),
// whether the session has branches or not; before, a linear session
// answered its whole head branch and a branched one an empty page.
func TestTurnsUnknownBranchRefused(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	linear := s.createSession(t, nil)
	s.postTurn(t, linear.ID, "one", nil)
	s.postTurn(t, linear.ID, "two", nil)
	s.expectError(t, "GET", "/v1/sessions/"+linear.ID+"/turns?branch=999", nil, 422, "invalid_request")
	s.expectError(t, "GET", "/v1/sessions/"+linear.ID+"/turns?branch=999&after=0", nil, 422, "invalid_request")

	branched := s.createSession(t, nil)
	s.postTurn(t, branched.ID, "one", nil)
	s.postTurn(t, branched.ID, "two", nil)
	s.postTurn(t, branched.ID, "two, edited", 1)
	s.expectError(t, "GET", "/v1/sessions/"+branched.ID+"/turns?branch=999", nil, 422, "invalid_request")
	s.expectError(t, "GET", "/v1/sessions/"+branched.ID+"/turns?branch=999&after=0", nil, 422, "invalid_request")

	// A known leaf still pages its branch.
	var p turnPage
	if st, raw := s.do(t, "GET", "/v1/sessions/"+branched.ID+"/turns?branch=2", nil, &p); st != 200 || len(p.Turns) != 2 || p.Turns[1].ID != 2 {
		t.Fatalf("branch=2: %d %s", st, raw)
	}
}

// PATCH {"busy_policy": ""} is refused (422): the policy stays one of
// queue, reject and interrupt. On a create, "" still means the default.
func TestPatchEmptyBusyPolicyRefused(t *testing.T) {
	s := newServer(t, 0, web.Config{}, nil)
	sess := s.createSession(t, map[string]any{"busy_policy": "reject"})
	s.expectError(t, "PATCH", "/v1/sessions/"+sess.ID, `{"busy_policy": ""}`, 422, "invalid_request")
	var got session.Session
	s.do(t, "GET", "/v1/sessions/"+sess.ID, nil, &got)
	if got.BusyPolicy != "reject" {
		t.Fatalf("busy_policy after a refused PATCH: %q", got.BusyPolicy)
	}
	if d := s.createSession(t, map[string]any{"busy_policy": ""}); d.BusyPolicy != "queue" {
		t.Fatalf("create with busy_policy \"\": %q", d.BusyPolicy)
	}
}

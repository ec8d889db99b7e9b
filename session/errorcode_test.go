package session_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"sessiond/session"
)

// An error's message names the session as the caller did: the package's
// own prefix of its errors goes, not the text of a name that ends like it.
func TestErrorMessageKeepsSessionNames(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	for _, id := range []string{"no-such-session", "session", "x"} {
		_, err := e.svc.Get(ctx, "local", id)
		if !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("get %s: %v, want not found", id, err)
		}
		code, msg := session.ErrorCode(err)
		if want := fmt.Sprintf("session %s: not found", id); code != "not_found" || msg != want {
			t.Fatalf("ErrorCode(%v) = %s %q, want not_found %q", err, code, msg, want)
		}
	}
	if code, msg := session.ErrorCode(session.ErrConflict); code != "conflict" || msg != "conflict" {
		t.Fatalf("ErrorCode(ErrConflict) = %s %q", code, msg)
	}
}

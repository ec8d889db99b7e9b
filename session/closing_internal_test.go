package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"sessiond/objects"
	"sessiond/streaming"
)

// Once Close has begun, nothing joins a hub nor starts a generation: a hub
// made then would never be closed, and a generation launched then would
// add to the WaitGroup Close waits on. A post asking for a generation is
// refused as unavailable and stores nothing.
func TestNothingStartsOnceCloseBegan(t *testing.T) {
	ctx := context.Background()
	svc := startService(t, offlineRegistry(t, 0, ModelInfo{})) // its cleanup closes the runtime after the service
	s, err := svc.Create(ctx, "local", CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}

	// The runtime is still open (cmd/sessiond closes it after the
	// service): a socket's hello or a post can still reach the session.
	err = svc.withHub(s.ID, func(*streaming.Hub) error { return nil })
	if !errors.Is(err, objects.ErrClosed) {
		t.Fatalf("withHub after Close: %v, want ErrClosed", err)
	}
	content, _ := json.Marshal("hello")
	_, err = svc.Post(ctx, "local", s.ID, PostRequest{Turns: []NewTurn{{Role: RoleUser, Content: content}}, Generate: true})
	if code, _ := ErrorCode(err); code != "unavailable" {
		t.Fatalf("a post with generate after Close: %v (%s), want unavailable", err, code)
	}
	turns, _, err := svc.Turns(ctx, "local", s.ID, TurnQuery{Limit: 10})
	if err != nil || len(turns) != 0 {
		t.Fatalf("turns after the refused post: %+v %v, want none", turns, err)
	}
	svc.hubMu.Lock()
	n := len(svc.hubs)
	svc.hubMu.Unlock()
	if n != 0 {
		t.Fatalf("%d hubs made after Close, which Close will never close", n)
	}
}

// A runtime fenced after a failed disk flush is unavailable (503), with a
// message that says why, not an internal error.
func TestDiskFailedIsUnavailable(t *testing.T) {
	err := fmt.Errorf("session x: %w", fmt.Errorf("%w (input/output error)", objects.ErrDiskFailed))
	if code, msg := ErrorCode(err); code != "unavailable" || !strings.Contains(msg, "disk") {
		t.Fatalf("ErrorCode(%v) = %s %q, want unavailable naming the disk", err, code, msg)
	}
}

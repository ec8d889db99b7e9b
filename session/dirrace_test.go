package session_test

import (
	"context"
	"sync"
	"testing"

	"sessiond/session"
)

// Sessions deleted while their directory entries are being flushed (by
// lists and the background worker) stay unlisted: no update taken before
// a removal lands after it.
func TestDeletedSessionsStayUnlisted(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "", 0, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // flushes, as a client listing all the time would
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := e.svc.List(ctx, "local", "", 10); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 100 {
		s, err := e.svc.Create(ctx, "local", session.CreateRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Post(ctx, "local", s.ID, session.PostRequest{Turns: []session.NewTurn{user("hi")}}); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.Delete(ctx, "local", s.ID); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	list, _, err := e.svc.List(ctx, "local", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Fatalf("%d deleted sessions are listed, the first %+v", len(list), list[0])
	}
}

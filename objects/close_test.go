package objects_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"sessiond/objects"
)

// TestCloseRightAfterCalls closes the runtime the moment calls return, while
// their workers may still be finishing, and expects every database closed.
// Close used to take instances from under such workers (a data race and a
// nil dereference in the worker); that window is too small to hit on
// demand, so this test only sometimes shows it (TestAlarmSetGetDelete's
// cleanup did, under load).
func TestCloseRightAfterCalls(t *testing.T) {
	ctx := context.Background()
	for round := range 5 {
		rt, ns := newRuntime(t, "", func(rt *objects.Runtime) { rt.Spares = -1 })
		if err := rt.Open(ctx); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := add(ctx, stub(t, ns, fmt.Sprint("o", i)), 1); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if err := rt.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		if got := rt.Stats().OpenDatabases; got != 0 {
			t.Fatalf("round %d: %d databases open after Close", round, got)
		}
	}
}

// TestCloseCancelsStuckCalls: a call still running when ShutdownTimeout
// expires gets its context cancelled with cause ErrClosed, so Close returns
// once it does; so does a call queued behind it. Close used to wait on them
// forever.
func TestCloseCancelsStuckCalls(t *testing.T) {
	rt, ns := newRuntime(t, "", func(rt *objects.Runtime) { rt.ShutdownTimeout = 20 * time.Millisecond })
	if err := rt.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := stub(t, ns, "stuck")
	waitForCtx := func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		<-ctx.Done()
		return nil, context.Cause(ctx)
	}
	first := make(chan error, 1)
	entered := make(chan struct{})
	go func() {
		_, err := s.Call(context.Background(), func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			close(entered)
			return waitForCtx(ctx, obj, tx)
		})
		first <- err
	}()
	<-entered
	second := make(chan error, 1)
	go func() {
		_, err := s.Call(context.Background(), waitForCtx)
		second <- err
	}()
	checkFor(t, 5*time.Second, "second call queued", func() bool { return s.Queued() == 1 })
	closed := make(chan error, 1)
	go func() { closed <- rt.Close() }()
	for i, c := range []chan error{first, second} {
		select {
		case err := <-c:
			if !errors.Is(err, objects.ErrClosed) {
				t.Errorf("call %d returned %v, want ErrClosed", i+1, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("call %d still running 10 s after Close began (ShutdownTimeout 20 ms)", i+1)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

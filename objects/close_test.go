package objects_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

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

package session

import (
	"context"
	"errors"
	"testing"

	"sessiond/objects"
)

// startService opens a runtime in a temporary folder (durability normal)
// and a started service on it with the models of reg; both close with
// the test.
func startService(tb testing.TB, reg *Registry) *Service {
	tb.Helper()
	svc, _ := startServiceRuntime(tb, reg, nil)
	return svc
}

// startServiceRuntime is startService for a test that needs the runtime
// too; configure, if not nil, adjusts it before it opens. The test may
// close either itself: closing again at its end does nothing.
func startServiceRuntime(tb testing.TB, reg *Registry, configure func(*objects.Runtime)) (*Service, *objects.Runtime) {
	tb.Helper()
	rt := objects.NewRuntime(tb.TempDir())
	rt.Durability = objects.DurabilityNormal
	if configure != nil {
		configure(rt)
	}
	svc, err := NewService(rt, reg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := rt.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	svc.Start()
	tb.Cleanup(func() { svc.Close(); rt.Close() })
	return svc, rt
}

// startSession starts a service with the offline model (as fast as it
// can) and creates a session of the owner "local": the service, the
// session and its stub.
func startSession(tb testing.TB) (*Service, *Session, *objects.Stub) {
	tb.Helper()
	svc := startService(tb, offlineRegistry(tb, 0, ModelInfo{}))
	s, err := svc.Create(context.Background(), "local", CreateRequest{})
	if err != nil {
		tb.Fatal(err)
	}
	stub, err := svc.sessions.Get(s.ID)
	if err != nil {
		tb.Fatal(err)
	}
	return svc, s, stub
}

// offlineRegistry returns a registry of the offline model under the name
// "offline", at tps words a second, with info.
func offlineRegistry(tb testing.TB, tps float64, info ModelInfo) *Registry {
	tb.Helper()
	reg := NewRegistry()
	if err := reg.Register("offline", NewOfflineModel(tps), info); err != nil {
		tb.Fatal(err)
	}
	return reg
}

// A read that fails for another reason than a missing row (here: its
// caller's context ended) is not taken for a missing generation or an
// unused idempotency key.
func TestReadFailureIsNotNotFound(t *testing.T) {
	ctx := context.Background()
	_, _, stub := startSession(t)
	gone, cancel := context.WithCancel(ctx)
	cancel()
	_, err := objects.Do(ctx, stub, func(_ context.Context, o *sessionObj, tx *objects.Tx) (struct{}, error) {
		if _, err := o.generation(gone, tx, "g_x"); errors.Is(err, ErrNotFound) || !errors.Is(err, context.Canceled) {
			t.Errorf("generation: %v, want context.Canceled", err)
		}
		if _, found, err := o.replay(gone, tx, "k", "h"); found || !errors.Is(err, context.Canceled) {
			t.Errorf("replay: found %v, %v; want context.Canceled", found, err)
		}
		return struct{}{}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

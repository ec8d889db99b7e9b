package session

import (
	"context"
	"testing"

	"sessiond/objects"
)

// startService opens a runtime in a temporary folder (durability normal)
// and a started service on it with the models of reg; both close with
// the test.
func startService(tb testing.TB, reg *Registry) *Service {
	tb.Helper()
	rt := objects.NewRuntime(tb.TempDir())
	rt.Durability = objects.DurabilityNormal
	svc, err := NewService(rt, reg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := rt.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	svc.Start()
	tb.Cleanup(func() { svc.Close(); rt.Close() })
	return svc
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

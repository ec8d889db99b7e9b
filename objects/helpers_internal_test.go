package objects

import (
	"context"
	"testing"
)

// openTable opens a runtime on dir with one namespace "k" whose objects
// have a table v (x INTEGER) and are what newObj returns (an empty struct
// when nil); configure, if not nil, adjusts the runtime before it opens.
// The caller closes the runtime.
func openTable(tb testing.TB, dir string, configure func(*Runtime), newObj func() any) (*Runtime, *Namespace) {
	tb.Helper()
	rt := NewRuntime(dir)
	rt.Durability = DurabilityNormal
	if configure != nil {
		configure(rt)
	}
	ns, err := rt.Register("k", Class{
		Migrations: []string{`CREATE TABLE v (x INTEGER)`},
		New: func(ctx context.Context, h *Handle, tx *Tx) (any, error) {
			if newObj == nil {
				return struct{}{}, nil
			}
			return newObj(), nil
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := rt.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return rt, ns
}

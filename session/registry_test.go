package session_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"sessiond/session"
)

// fakeModel is a Model whose Stream is a function field.
type fakeModel struct {
	stream func(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error)
}

func (f *fakeModel) Stream(ctx context.Context, req *session.ModelRequest, emit func(session.Delta) error) (*session.ModelResult, error) {
	return f.stream(ctx, req, emit)
}

func TestRegistry(t *testing.T) {
	r := session.NewRegistry()
	if got := r.Default(); got != "" {
		t.Fatalf("empty registry Default() = %q, want \"\"", got)
	}
	offline := session.NewOfflineModel(0)
	other := &fakeModel{}
	if err := r.Register("offline", offline, session.ModelInfo{ContextTokens: 8192}); err != nil {
		t.Fatalf("Register offline: %v", err)
	}
	if err := r.Register("gpt", other, session.ModelInfo{ContextTokens: 128000}); err != nil {
		t.Fatalf("Register gpt: %v", err)
	}
	if got, want := r.Default(), "offline"; got != want {
		t.Fatalf("Default() = %q, want the first registered %q", got, want)
	}
	m, info, err := r.Get("gpt")
	if err != nil || m != session.Model(other) || info.ContextTokens != 128000 {
		t.Fatalf("Get(gpt) = %v, %+v, %v", m, info, err)
	}
	if got, want := r.Names(), []string{"gpt", "offline"}; !slices.Equal(got, want) {
		t.Fatalf("Names() = %q, want %q", got, want)
	}
	if err := r.SetDefault("gpt"); err != nil {
		t.Fatalf("SetDefault: %v", err)
	}
	if got, want := r.Default(), "gpt"; got != want {
		t.Fatalf("Default() = %q, want %q", got, want)
	}

	for _, tt := range []struct {
		name string
		m    session.Model
	}{{"", offline}, {"offline", other}, {"nil", nil}, {" gpt", other}, {"gpt\n", other}, {"a\x00b", other}, {"\xff", other}, {strings.Repeat("m", session.MaxModelNameBytes+1), other}} {
		if err := r.Register(tt.name, tt.m, session.ModelInfo{}); err == nil {
			t.Errorf("Register(%q, %v) = nil, want an error", tt.name, tt.m)
		}
	}
	if _, _, err := r.Get("nope"); !errors.Is(err, session.ErrUnknownModel) {
		t.Fatalf("Get(nope) err = %v, want ErrUnknownModel", err)
	}
	if err := r.SetDefault("nope"); !errors.Is(err, session.ErrUnknownModel) {
		t.Fatalf("SetDefault(nope) err = %v, want ErrUnknownModel", err)
	}
	if got, want := r.Default(), "gpt"; got != want {
		t.Fatalf("Default() after a refused SetDefault = %q, want %q", got, want)
	}
}

func TestRegistryConcurrentUse(t *testing.T) {
	r := session.NewRegistry()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			name := fmt.Sprintf("m%d", i)
			if err := r.Register(name, session.NewOfflineModel(0), session.ModelInfo{}); err != nil {
				t.Errorf("Register %s: %v", name, err)
			}
			if _, _, err := r.Get(name); err != nil {
				t.Errorf("Get %s: %v", name, err)
			}
			_ = r.Names()
			_ = r.Default()
		})
	}
	wg.Wait()
	if got := len(r.Names()); got != 8 {
		t.Fatalf("Names() has %d names, want 8", got)
	}
}

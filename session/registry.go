package session

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// ErrUnknownModel is returned (wrapped) by Registry.Get and
// Registry.SetDefault when no model is registered under the name.
var ErrUnknownModel = errors.New("session: unknown model")

// ModelInfo describes a registered model.
type ModelInfo struct {
	// ContextTokens is the size of the model's context window in tokens,
	// the budget for context assembly; 0 means unknown.
	ContextTokens int
}

// Registry maps model names, as sessions and API clients spell them, to
// models. It is filled at start-up by cmd/sessiond and read for every
// generation. It is safe for concurrent use.
type Registry struct {
	mu     sync.RWMutex
	models map[string]registered
	def    string
}

type registered struct {
	model Model
	info  ModelInfo
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{models: make(map[string]registered)}
}

// MaxModelNameBytes bounds a model's name, which clients send as "model".
const MaxModelNameBytes = 256

// checkModelName refuses a name a client could not send as it is shown, or
// would mistype: empty, longer than MaxModelNameBytes, not UTF-8, with
// spaces at either end, or with control characters.
func checkModelName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > MaxModelNameBytes:
		return fmt.Errorf("the name is %d bytes, more than %d", len(name), MaxModelNameBytes)
	case !utf8.ValidString(name):
		return errors.New("the name is not UTF-8")
	case strings.TrimSpace(name) != name:
		return errors.New("the name begins or ends with a space")
	case strings.ContainsFunc(name, unicode.IsControl):
		return errors.New("the name has a control character")
	}
	return nil
}

// Register adds m under name. It refuses a name checkModelName refuses
// (see MaxModelNameBytes), a nil model and a name that is already
// registered. The first model registered becomes the default unless
// SetDefault names another.
func (r *Registry) Register(name string, m Model, info ModelInfo) error {
	if err := checkModelName(name); err != nil {
		return fmt.Errorf("register model %q: %w", name, err)
	}
	if m == nil {
		return fmt.Errorf("register model %q: nil model", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.models[name]; ok {
		return fmt.Errorf("register model %q: name already registered", name)
	}
	r.models[name] = registered{model: m, info: info}
	if r.def == "" {
		r.def = name
	}
	return nil
}

// Get returns the model registered under name and its info. The error wraps
// ErrUnknownModel when there is none.
func (r *Registry) Get(name string) (Model, ModelInfo, error) {
	r.mu.RLock()
	reg, ok := r.models[name]
	r.mu.RUnlock()
	if !ok {
		return nil, ModelInfo{}, fmt.Errorf("get model %q: %w", name, ErrUnknownModel)
	}
	return reg.model, reg.info, nil
}

// SetDefault makes the model registered under name the default. The error
// wraps ErrUnknownModel when there is none.
func (r *Registry) SetDefault(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.models[name]; !ok {
		return fmt.Errorf("set default model %q: %w", name, ErrUnknownModel)
	}
	r.def = name
	return nil
}

// Default returns the name of the default model: the one given to
// SetDefault, else the first registered, else "" for an empty registry.
func (r *Registry) Default() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.def
}

// Names returns the registered names in sorted order, in a new slice.
func (r *Registry) Names() []string {
	r.mu.RLock()
	names := make([]string, 0, len(r.models))
	for name := range r.models {
		names = append(names, name)
	}
	r.mu.RUnlock()
	slices.Sort(names)
	return names
}

package objects

import (
	"log/slog"
)

// Handle is an object's view of the runtime: its identity, its sockets, and
// a way to stay awake while work outlives a call. Class.New receives it; the
// object may keep it. Safe for concurrent use.
type Handle struct {
	e         *entry
	unsettled bool
}

// Unsettled reports whether the object's previous instance ended unsettled:
// it had committed events (Tx.Publish) that the bus had not all taken
// when it stopped, a crash the usual cause. Work it left for after its
// commits, such as updates of other objects that its events stand for,
// may be undone: Class.New can redo it. Always false without a bus, and
// for an object that never publishes.
func (h *Handle) Unsettled() bool { return h.unsettled }

// Name returns the object's name.
func (h *Handle) Name() string { return h.e.name }

// Namespace returns the object's namespace name.
func (h *Handle) Namespace() string { return h.e.ns.name }

// Stub returns a stub for this object, for work that must call back into it
// from another goroutine (for example a model stream persisting its output).
func (h *Handle) Stub() *Stub { return &Stub{ns: h.e.ns, name: h.e.name} }

// Logger returns the runtime's logger with the object's identity.
func (h *Handle) Logger() *slog.Logger {
	return h.e.rt.logger().With("namespace", h.e.ns.name, "object", h.e.name)
}

// Hold keeps the object awake until release is called: use it for work that
// runs outside calls (a generation streaming from a model). release is
// idempotent.
func (h *Handle) Hold() (release func()) {
	e := h.e
	e.mu.Lock()
	e.holds++
	e.stopIdleLocked()
	e.mu.Unlock()
	var done bool
	return func() {
		e.mu.Lock()
		if done {
			e.mu.Unlock()
			return
		}
		done = true
		e.holds--
		e.settleLocked()
		e.mu.Unlock()
		e.rt.maybeDrop(e)
	}
}

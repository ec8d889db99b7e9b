package session

import (
	"fmt"
	"sync"
)

// streamCounts counts the streams each owner holds open (see
// Service.MaxStreamsPerOwner).
type streamCounts struct {
	mu sync.Mutex
	n  map[string]int
}

// OpenStream counts a stream of owner's that the caller holds open (an
// event stream, say) until it calls release, once; Accept counts the
// WebSockets it holds itself. It returns ErrTooManyStreams when owner holds
// Service.MaxStreamsPerOwner streams already: a client that opens streams
// without closing them cannot hold the server's memory and descriptors
// for everyone.
func (svc *Service) OpenStream(owner string) (release func(), err error) {
	limit := svc.MaxStreamsPerOwner
	if owner == "" || limit <= 0 {
		return func() {}, nil
	}
	c := &svc.streams
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[owner] >= limit {
		return nil, fmt.Errorf("%w: %d WebSockets and event streams are open for this owner, the most allowed; close one first", ErrTooManyStreams, limit)
	}
	if c.n == nil {
		c.n = make(map[string]int)
	}
	c.n[owner]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.n[owner]--; c.n[owner] <= 0 {
				delete(c.n, owner)
			}
		})
	}, nil
}

// genSignals wakes those waiting for a session's queued generation to
// start or end (Follow), rather than have them ask the session every few
// milliseconds: each question is a call that queues with the session's
// own work.
type genSignals struct {
	mu sync.Mutex
	m  map[string]chan struct{} // by session id; closed by signal
}

// wait returns a channel that signal(id) closes. Take it before reading
// the state it guards, so that a change in between is not missed.
func (g *genSignals) wait(id string) <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch, ok := g.m[id]
	if !ok {
		if g.m == nil {
			g.m = make(map[string]chan struct{})
		}
		ch = make(chan struct{})
		g.m[id] = ch
	}
	return ch
}

// signal wakes the waiters of session id: one of its queued generations
// started or ended (or the session is gone).
func (g *genSignals) signal(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ch, ok := g.m[id]; ok {
		close(ch)
		delete(g.m, id)
	}
}

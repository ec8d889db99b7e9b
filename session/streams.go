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
// own work. An entry lives while it has waiters and no signal.
type genSignals struct {
	mu sync.Mutex
	m  map[string]*genSignal // by session id
}

type genSignal struct {
	ch      chan struct{} // closed by signal
	waiters int
}

// wait returns a channel that signal(id) closes, and leave, to call once
// done waiting. Take it before reading the state it guards, so that a
// change in between is not missed.
func (g *genSignals) wait(id string) (ch <-chan struct{}, leave func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.m[id]
	if !ok {
		if g.m == nil {
			g.m = make(map[string]*genSignal)
		}
		s = &genSignal{ch: make(chan struct{})}
		g.m[id] = s
	}
	s.waiters++
	return s.ch, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if s.waiters--; s.waiters == 0 && g.m[id] == s {
			delete(g.m, id)
		}
	}
}

// signal wakes the waiters of session id: one of its queued generations
// started or ended.
func (g *genSignals) signal(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s, ok := g.m[id]; ok {
		close(s.ch)
		delete(g.m, id)
	}
}

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

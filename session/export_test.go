package session

import "time"

// SetFollowRecheck sets how often Follow reads a queued generation's state
// without a signal, until restore. Not concurrent with Follow.
func SetFollowRecheck(d time.Duration) (restore func()) {
	old := followRecheck
	followRecheck = d
	return func() { followRecheck = old }
}

// FollowWaiting reports whether a Follow waits for a queued generation of
// session id to start or end.
func FollowWaiting(svc *Service, id string) bool {
	svc.queued.mu.Lock()
	defer svc.queued.mu.Unlock()
	_, ok := svc.queued.m[id]
	return ok
}

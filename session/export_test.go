package session

import "time"

// SetFollowRecheck sets how often Follow reads a queued generation's state
// without a signal, until restore. Not concurrent with Follow.
func SetFollowRecheck(d time.Duration) (restore func()) {
	old := followRecheck
	followRecheck = d
	return func() { followRecheck = old }
}

// FollowWaiting returns how many Follows wait for a queued generation of
// session id to start or end, and how many sessions have such waiters.
func FollowWaiting(svc *Service, id string) (waiters, sessions int) {
	svc.queued.mu.Lock()
	defer svc.queued.mu.Unlock()
	if s, ok := svc.queued.m[id]; ok {
		waiters = s.waiters
	}
	return waiters, len(svc.queued.m)
}

// SetForkPageHook makes every Fork call f before it reads its page n of
// the source's branch (0 first), until restore. Not concurrent with Fork.
func SetForkPageHook(f func(n int)) (restore func()) {
	old := forkPageHook
	forkPageHook = f
	return func() { forkPageHook = old }
}

// SetDeletedObjectHook makes every Delete call f between the removal of
// the session's object and that of its list entry, until restore.
func SetDeletedObjectHook(f func(id string)) (restore func()) {
	old := deletedObjectHook
	deletedObjectHook = f
	return func() { deletedObjectHook = old }
}

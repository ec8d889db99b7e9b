package web

import "time"

// SetTransferLimits sets the grace and the least rate of request bodies
// and large answers (see deadline.go) until restore. Not concurrent with
// requests.
func SetTransferLimits(grace time.Duration, rate int64) (restore func()) {
	g, r := transferGrace, minTransferRate
	transferGrace, minTransferRate = grace, rate
	return func() { transferGrace, minTransferRate = g, r }
}

// OnBodiesHeld calls f with the bytes of request bodies held after each
// change of the budget, until restore. Set it before the server starts.
func OnBodiesHeld(f func(used int64)) (restore func()) {
	old := budgetHook
	budgetHook = f
	return func() { budgetHook = old }
}

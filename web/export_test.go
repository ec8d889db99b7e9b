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

package objects

import "testing"

// Checkpoint thresholds are spread from half to one and a half times
// checkpointFrames, so that objects loaded alike do not checkpoint at once.
func TestCheckpointThresholdsSpread(t *testing.T) {
	lo, hi := checkpointFrames, 0
	for range 2000 {
		n := checkpointThreshold(checkpointFrames)
		if n < checkpointFrames/2 || n >= checkpointFrames*3/2 {
			t.Fatalf("threshold %d outside [%d, %d)", n, checkpointFrames/2, checkpointFrames*3/2)
		}
		lo, hi = min(lo, n), max(hi, n)
	}
	// 2,000 draws from 1,000 values: the extremes are all but certain to
	// fall within 100 of the ends (a miss at either end has a probability below 1e-90).
	if lo >= checkpointFrames/2+100 || hi < checkpointFrames*3/2-100 {
		t.Fatalf("thresholds span only %d to %d: not spread", lo, hi)
	}
}

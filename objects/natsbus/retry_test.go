package natsbus_test

import (
	"testing"
	"time"

	"sessiond/objects/natsbus"
)

func TestRetryDelay(t *testing.T) {
	const s, m = time.Second, time.Minute
	for _, tc := range []struct {
		delivered  uint64
		first, max time.Duration
		want       time.Duration
	}{
		{0, s, m, s},
		{1, s, m, s},
		{2, s, m, 2 * s},
		{3, s, m, 4 * s},
		{6, s, m, 32 * s},
		{7, s, m, m},
		{1 << 40, s, m, m},
		{100, time.Nanosecond, time.Duration(1<<63 - 1), time.Duration(1<<63 - 1)},
	} {
		if got := natsbus.RetryDelay(tc.delivered, tc.first, tc.max); got != tc.want {
			t.Errorf("RetryDelay(%d, %v, %v) = %v, want %v", tc.delivered, tc.first, tc.max, got, tc.want)
		}
	}
}

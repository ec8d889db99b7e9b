package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sessiond/objects/natsbus"
)

// firstSeen records the first handling of each message id, in the order
// handlers ran: what a de-duplicating subscriber acts on.
type firstSeen struct {
	mu    sync.Mutex
	seen  map[string]bool
	order []natsbus.Msg
}

func (f *firstSeen) add(m natsbus.Msg) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = map[string]bool{}
	}
	if !f.seen[m.ID] {
		f.seen[m.ID] = true
		f.order = append(f.order, m)
	}
}

func (f *firstSeen) msgs() []natsbus.Msg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]natsbus.Msg(nil), f.order...)
}

// A node killed with messages fetched but not acknowledged (one in its
// handler, more in the prefetch buffer) must not have them overtaken, once
// it restarts, by later messages of the same publisher: they come first,
// without waiting for AckWait.
func TestConsumerRestartKeepsPublishOrder(t *testing.T) {
	checkNoLeaks(t)
	e := startEmbedded(t, natsbus.EmbeddedOptions{Dir: t.TempDir()})
	ctx := testCtx(t)
	pub := openBus(t, connectEmbedded(t, e), nil)
	const perPublisher = 12
	publishers := []string{"p1", "p2"}
	for i := range perPublisher {
		for _, p := range publishers {
			if _, err := pub.Publish(ctx, "ev."+p, []byte(strconv.Itoa(i)), fmt.Sprintf("%s-%d", p, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var got firstSeen
	opts := &natsbus.ConsumeOptions{AckWait: 3 * time.Second}

	// First run: five messages handled and acknowledged; the sixth hangs
	// in its handler when the process "dies": its connection goes, and
	// nothing it held is acknowledged or given back.
	nc1 := connectEmbedded(t, e)
	bus1 := openBus(t, nc1, nil)
	var dead atomic.Bool
	killed, release := make(chan struct{}), make(chan struct{})
	n := 0 // handlers run one at a time
	c1, err := bus1.Consume(ctx, "node", "", func(ctx context.Context, m natsbus.Msg) error {
		if dead.Load() {
			return errors.New("dead process")
		}
		if n++; n == 6 {
			dead.Store(true)
			close(killed)
			<-release
			return errors.New("dead process")
		}
		got.add(m)
		return nil
	}, opts)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-killed:
	case <-ctx.Done():
		t.Fatal("the sixth message never came")
	}
	nc1.Close()
	close(release)
	<-c1.Done()

	// Second run, same durable.
	start := time.Now()
	bus2 := openBus(t, connectEmbedded(t, e), nil)
	if _, err := bus2.Consume(ctx, "node", "", func(ctx context.Context, m natsbus.Msg) error {
		got.add(m)
		return nil
	}, opts); err != nil {
		t.Fatal(err)
	}
	all := perPublisher * len(publishers)
	checkFor(t, 20*time.Second, "every message handled", func() bool { return len(got.msgs()) == all })

	next := map[string]int{}
	for _, m := range got.msgs() {
		i, _ := strconv.Atoi(string(m.Data))
		if i != next[m.Subject] {
			t.Errorf("%s: handled #%d (stream seq %d) when #%d was next", m.Subject, i, m.StreamSeq, next[m.Subject])
		}
		next[m.Subject] = i + 1
	}
	if d := time.Since(start); d >= opts.AckWait {
		t.Errorf("the restarted consumer took %v, AckWait %v: the unacknowledged messages waited for it", d, opts.AckWait)
	}
}

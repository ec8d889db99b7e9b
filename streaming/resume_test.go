package streaming_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"sessiond/streaming"
)

// TestResumeExactlyOnceRandomised connects three viewers to a generation
// that is being produced, disconnects each at random points (before the
// first token, mid-stream, racing the end) and resumes it from the last
// offset it saw, through the hub or straight from the log. Across its
// reconnects each viewer must see every event exactly once, in order.
func TestResumeExactlyOnceRandomised(t *testing.T) {
	iterations := 300
	if testing.Short() {
		iterations = 40
	}
	baseline := runtime.NumGoroutine()
	defer func() {
		checkFor(t, "no goroutine left behind", func() bool { return runtime.NumGoroutine() <= baseline })
	}()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	for i := range iterations {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		runResumeIteration(t, rng, i)
		if t.Failed() {
			t.Fatalf("iteration %d failed (seed %d)", i, seed)
		}
	}
}

type viewerResult struct {
	text       strings.Builder
	offsets    []int64
	done       bool
	reconnects int
	err        error
}

func runResumeIteration(t *testing.T, rng *rand.Rand, iteration int) {
	const gen = "g_1"
	hub := streaming.NewHub(nil)
	defer hub.Close()

	n := 1 + rng.IntN(40)
	words := make([]string, n)
	for i := range words {
		words[i] = fmt.Sprintf("w%d ", i)
	}
	full := strings.Join(words, "")

	// Each goroutine gets its own generator: rand.Rand is not safe for
	// concurrent use.
	seeds := make([]uint64, 4)
	for i := range seeds {
		seeds[i] = rng.Uint64()
	}

	var wg sync.WaitGroup
	results := make([]*viewerResult, 3)
	for i := range results {
		res := &viewerResult{}
		results[i] = res
		vrng := rand.New(rand.NewPCG(seeds[i], 1))
		wg.Go(func() { res.err = watch(hub, gen, vrng, res) })
	}
	prng := rand.New(rand.NewPCG(seeds[3], 2))
	wg.Go(func() {
		yield(prng.IntN(20))
		l, err := hub.StartGeneration(gen)
		if err != nil {
			t.Errorf("StartGeneration: %v", err)
			return
		}
		for _, w := range words {
			yield(prng.IntN(3))
			if _, err := l.AppendText(w); err != nil {
				t.Errorf("AppendText: %v", err)
				return
			}
		}
		yield(prng.IntN(5))
		if _, err := l.Finish(testDone); err != nil {
			t.Errorf("Finish: %v", err)
		}
	})
	wg.Wait()

	for i, res := range results {
		if res.err != nil {
			t.Fatalf("iteration %d viewer %d: %v", iteration, i, res.err)
		}
		if !res.done {
			t.Fatalf("iteration %d viewer %d: no done", iteration, i)
		}
		if got := res.text.String(); got != full {
			t.Fatalf("iteration %d viewer %d (%d reconnects): text %q, want %q", iteration, i, res.reconnects, got, full)
		}
		if got, want := len(res.offsets), n+1; got != want {
			t.Fatalf("iteration %d viewer %d: %d events, want %d", iteration, i, got, want)
		}
	}
}

func yield(n int) {
	for range n {
		runtime.Gosched()
	}
}

// watch plays one client: connect, read a random number of events,
// disconnect, resume after the last offset seen, until the done event.
func watch(hub *streaming.Hub, gen string, rng *rand.Rand, res *viewerResult) error {
	var last int64
	for !res.done {
		sink := &recSink{}
		opts := &streaming.ViewerOptions{}
		if rng.IntN(2) == 0 {
			opts.FlushInterval = time.Duration(rng.IntN(200)) * time.Microsecond
		}
		if rng.IntN(2) == 0 {
			// A compacted backlog is then rebuilt and written a few events
			// at a time, while live events queue behind it.
			opts.FlushBytes = 1 + rng.IntN(300)
		}
		v := streaming.NewViewer(sink, opts)
		viaHub := rng.IntN(3) > 0
		if viaHub {
			// Before the generation starts this resume fails, and the viewer
			// follows it live from its first event instead.
			err := hub.AddViewer(v, &streaming.Position{Generation: gen, After: last})
			if err != nil && !(last == 0 && errors.Is(err, streaming.ErrGenerationNotFound)) {
				return fmt.Errorf("AddViewer after %d: %w", last, err)
			}
		} else {
			l, ok := hub.Log(gen)
			if !ok {
				v.Close()
				runtime.Gosched()
				continue
			}
			if err := l.Subscribe(v, last); err != nil {
				return fmt.Errorf("Subscribe after %d: %w", last, err)
			}
		}
		want := rng.IntN(8) // 0: disconnect at once
		for {
			frames, _ := sink.snapshot()
			if len(frames) >= want || hasFinalRaw(frames) {
				break
			}
			runtime.Gosched()
		}
		if err := v.Close(); err != nil {
			return fmt.Errorf("Close: %w", err)
		}
		if viaHub {
			hub.RemoveViewer(v)
		}
		frames, _ := sink.snapshot()
		for _, f := range frames {
			m, err := decodeMsg(f)
			if err != nil {
				return err
			}
			if m.Generation != gen {
				return fmt.Errorf("event of generation %q", m.Generation)
			}
			if m.Offset != last+1 {
				return fmt.Errorf("offset %d after %d (reconnect %d)", m.Offset, last, res.reconnects)
			}
			last = m.Offset
			res.offsets = append(res.offsets, m.Offset)
			switch m.Type {
			case streaming.TypeDelta:
				if res.done {
					return fmt.Errorf("delta %d after done", m.Offset)
				}
				res.text.WriteString(m.Text)
			case streaming.TypeDone:
				res.done = true
			default:
				return fmt.Errorf("unexpected %s", f)
			}
		}
		res.reconnects++
	}
	return nil
}

package objects_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sessiond/objects"
)

func TestCallPersistsAcrossRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rt, ns := newRuntime(t, dir, nil)
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	s := stub(t, ns, "a")
	for i := 1; i <= 5; i++ {
		n, err := add(ctx, s, 1)
		if err != nil {
			t.Fatal(err)
		}
		if n != int64(i) {
			t.Fatalf("add=%d, want %d", n, i)
		}
	}
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	rt2, ns2 := newRuntime(t, dir, nil)
	if err := rt2.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	if got, err := get(ctx, stub(t, ns2, "a")); err != nil || got != 5 {
		t.Fatalf("after restart n=%d err=%v, want 5", got, err)
	}
}

// TestSerialFIFO: calls to one object run one at a time, in the order they
// arrived. The arrival order is made known: a first call holds the object
// while the others queue one by one (each caller waits until its call is
// queued before the next one calls), across several batches. A call that
// ran while another was inside, or out of that order, fails the test; so
// does the stored log disagreeing with the execution order. Then many
// callers at once check the one-at-a-time rule under contention.
func TestSerialFIFO(t *testing.T) {
	ctx := context.Background()
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.MaxBatch = 4 })
	s := stub(t, ns, "fifo")
	var inside atomic.Int32
	var mu sync.Mutex
	var order []int // the calls' numbers, in execution order
	// record returns call n's body; hold, if not nil, runs once it is inside.
	record := func(n int, hold func()) objects.Func {
		return func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			if inside.Add(1) != 1 {
				t.Errorf("call %d ran while another call was inside the object", n)
			}
			defer inside.Add(-1)
			if hold != nil {
				hold()
			}
			if _, err := tx.Exec(ctx, `INSERT INTO log (body) VALUES (?)`, fmt.Sprint(n)); err != nil {
				return nil, err
			}
			mu.Lock()
			order = append(order, n)
			mu.Unlock()
			return nil, nil
		}
	}

	// Arrival order known: 0 holds the object, 1..queued queue behind it.
	const queued = 21 // several batches of MaxBatch, the last one short
	holding, releaseCh := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(releaseCh) })
	t.Cleanup(release) // before the runtime's Close, which waits for call 0
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := s.Call(ctx, record(0, func() { close(holding); <-releaseCh })); err != nil {
			t.Error(err)
		}
	})
	<-holding
	ran := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(order)
	}
	for n := 1; n <= queued; n++ {
		wg.Go(func() {
			if _, err := s.Call(ctx, record(n, nil)); err != nil {
				t.Error(err)
			}
		})
		// Queued, or already run, which fails the test below.
		checkFor(t, 10*time.Second, fmt.Sprintf("call %d to queue", n), func() bool { return s.Queued() == n || ran() > 0 })
	}
	release()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	want := make([]int, queued+1)
	for i := range want {
		want[i] = i
	}
	if !slices.Equal(order, want) {
		t.Fatalf("calls ran in the order %v, want their arrival order %v", order, want)
	}

	// Many callers at once: still one at a time, each caller's calls in its order.
	const callers, per = 16, 20
	order = nil
	for c := range callers {
		wg.Go(func() {
			for i := range per {
				if _, err := s.Call(ctx, record(1000+c*100+i, nil)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got, want := len(order), callers*per; got != want {
		t.Fatalf("ran %d calls, want %d", got, want)
	}
	last := map[int]int{}
	for _, v := range order {
		c, i := (v-1000)/100, v%100
		if prev, ok := last[c]; ok && i != prev+1 {
			t.Fatalf("caller %d: call %d ran after %d", c, i, prev)
		}
		last[c] = i
	}

	// The stored log is in execution order, both parts.
	all := slices.Concat(want, order)
	rows, err := objects.Do(ctx, s, func(ctx context.Context, _ *counter, tx *objects.Tx) ([]string, error) {
		r, err := tx.Query(ctx, `SELECT body FROM log ORDER BY seq`)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		var out []string
		for r.Next() {
			var b string
			if err := r.Scan(&b); err != nil {
				return nil, err
			}
			out = append(out, b)
		}
		return out, r.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(all) {
		t.Fatalf("%d rows stored, %d calls ran", len(rows), len(all))
	}
	for i, b := range rows {
		if b != fmt.Sprint(all[i]) {
			t.Fatalf("row %d=%s, executed %d", i, b, all[i])
		}
	}
}

// TestFIFOAcrossWake checks arrival order holds for calls that queue while
// the object is being created: its constructor blocks until released.
func TestFIFOAcrossWake(t *testing.T) {
	ctx := context.Background()
	gate := make(chan struct{})
	constructing := make(chan struct{})
	var slow *objects.Namespace
	_, _ = newOpenRuntime(t, func(rt *objects.Runtime) {
		var err error
		slow, err = rt.Register("slow", objects.Class{New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
			close(constructing)
			<-gate
			return &struct{}{}, nil
		}})
		if err != nil {
			t.Fatal(err)
		}
	})
	s := stub(t, slow, "wake-order")
	var got []int
	var mu sync.Mutex
	var wg sync.WaitGroup
	const n = 20
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
				mu.Lock()
				got = append(got, i)
				mu.Unlock()
				return nil, nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
		// The first call is taken by the worker, which blocks in the
		// constructor; each later one must be queued before the next starts.
		if i == 0 {
			<-constructing
		}
		checkFor(t, 5*time.Second, "call queued", func() bool { return s.Queued() == i })
	}
	close(gate)
	wg.Wait()
	for i, v := range got {
		if v != i {
			t.Fatalf("order %v, want 0..%d", got, n-1)
		}
	}
	if len(got) != n {
		t.Fatalf("ran %d calls, want %d", len(got), n)
	}
}

func TestCancelledQueuedCallNeverRuns(t *testing.T) {
	ctx := context.Background()
	_, ns := newOpenRuntime(t, nil)
	s := stub(t, ns, "cancel")
	unblock := blockObject(t, s)
	cctx, cancel := context.WithCancel(ctx)
	var ran atomic.Bool
	errc := make(chan error, 1)
	go func() {
		_, err := s.Call(cctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
			ran.Store(true)
			return nil, nil
		})
		errc <- err
	}()
	checkFor(t, 5*time.Second, "second call queued", func() bool { return s.Queued() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call returned %v", err)
	}
	unblock()
	// A later call runs after the cancelled one would have: it must not have run.
	if _, err := get(ctx, s); err != nil {
		t.Fatal(err)
	}
	if ran.Load() {
		t.Fatal("a call cancelled while queued ran")
	}
}

func TestOverloadFailsFast(t *testing.T) {
	ctx := context.Background()
	_, ns := newOpenRuntime(t, func(rt *objects.Runtime) { rt.QueueLimit = 4 })
	s := stub(t, ns, "busy")
	unblock := blockObject(t, s)
	var wg sync.WaitGroup
	var overloaded atomic.Int32
	var oerr atomic.Value
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := get(ctx, s)
			var o *objects.OverloadedError
			if errors.As(err, &o) {
				overloaded.Add(1)
				oerr.Store(o)
			}
		}()
	}
	checkFor(t, 5*time.Second, "overload errors", func() bool { return overloaded.Load() >= 6 })
	unblock()
	wg.Wait()
	if got := overloaded.Load(); got != 6 {
		t.Fatalf("%d calls overloaded, want 6 (10 callers, queue of 4)", got)
	}
	if o := oerr.Load().(*objects.OverloadedError); o.RetryAfter <= 0 {
		t.Fatalf("RetryAfter=%v, want > 0", o.RetryAfter)
	}
}

func TestBadNamesRefused(t *testing.T) {
	_, ns := newOpenRuntime(t, nil)
	for _, name := range []string{"", "a\x00b", "tab\there", "\x7f", string([]byte{0xff, 0xfe}), string(make([]byte, 257)), "a\u0085b", "\uFFFE"} {
		if _, err := ns.Get(name); !errors.Is(err, objects.ErrInvalidName) {
			t.Errorf("Get(%q) err=%v, want ErrInvalidName", name, err)
		}
	}
	for _, name := range []string{"a", "../../etc/passwd", "日本語", "with space", "01JD7ZK3"} {
		if _, err := ns.Get(name); err != nil {
			t.Errorf("Get(%q) err=%v", name, err)
		}
	}
}

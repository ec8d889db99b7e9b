// Command objload puts load on the durable-object runtime in package
// objects and prints throughput and latency, so that anyone can rerun the
// figures on their own machine:
//
//	go run ./cmd/objload -durability full -objects 1 -callers 64 -duration 10s
//	go run ./cmd/objload -durability normal -objects 1000 -callers 64
//
// Each call inserts one row of -row bytes into one object's database
// (-row 0: the call touches no storage). Callers pick objects round robin,
// each from its own offset. The objects are created before the clock
// starts. The run ends after -duration (at most 60 s) or -calls calls,
// whichever comes first.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"sessiond/objects"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "objload:", err)
		os.Exit(1)
	}
}

const maxDuration = 60 * time.Second

type config struct {
	dir        string
	durability objects.Durability
	objects    int
	callers    int
	duration   time.Duration
	calls      int64
	row        int
	maxBatch   int
}

func parse(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("objload", flag.ContinueOnError)
	fs.StringVar(&c.dir, "dir", "", "data folder (default: a temporary folder, removed afterwards)")
	durability := fs.String("durability", objects.DefaultDurability.String(), "commit durability: normal or full")
	fs.IntVar(&c.objects, "objects", 1, "number of objects the calls are spread over")
	fs.IntVar(&c.callers, "callers", 64, "concurrent callers")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long to run (at most 60s)")
	fs.Int64Var(&c.calls, "calls", 0, "stop after this many calls (0: run for -duration)")
	fs.IntVar(&c.row, "row", 500, "bytes of the row each call inserts (0: calls touch no storage)")
	fs.IntVar(&c.maxBatch, "maxbatch", objects.DefaultMaxBatch, "Runtime.MaxBatch (1 disables write coalescing)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	d, err := objects.ParseDurability(*durability)
	if err != nil {
		return c, err
	}
	c.durability = d
	switch {
	case c.objects < 1 || c.callers < 1:
		return c, errors.New("-objects and -callers must be at least 1")
	case c.duration <= 0 || c.duration > maxDuration:
		return c, fmt.Errorf("-duration must be in (0, %s]", maxDuration)
	case c.calls < 0 || c.row < 0 || c.maxBatch < 1:
		return c, errors.New("-calls and -row must not be negative, -maxbatch at least 1")
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	c, err := parse(args)
	if err != nil {
		return err
	}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "objload"); err != nil {
			return err
		}
		defer os.RemoveAll(c.dir)
	}
	rt := objects.NewRuntime(c.dir)
	rt.Durability = c.durability
	rt.MaxBatch = c.maxBatch
	rt.IdleTimeout = time.Hour // measure calls, not wakes
	rt.MaxOpen = max(objects.DefaultMaxOpen, c.objects+2*objects.DefaultSpares)
	rt.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ns, err := rt.Register("load", objects.Class{
		Migrations: []string{`CREATE TABLE rows (id INTEGER PRIMARY KEY, body BLOB NOT NULL)`},
		New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
			return struct{}{}, nil
		},
	})
	if err != nil {
		return err
	}
	if err := rt.Open(ctx); err != nil {
		return err
	}
	defer rt.Close()

	body := make([]byte, c.row)
	rand.Read(body)
	fn := func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		if c.row == 0 {
			return nil, nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO rows (body) VALUES (?)`, body)
		return nil, err
	}

	stubs := make([]*objects.Stub, c.objects)
	for i := range stubs {
		if stubs[i], err = ns.Get(fmt.Sprint("load-", i)); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := spread(ctx, min(16, c.objects), c.objects, func(i int) error {
		_, err := stubs[i].Call(ctx, fn)
		return err
	}); err != nil {
		return fmt.Errorf("create objects: %w", err)
	}
	fmt.Fprintf(stdout, "objload: %d objects (%s), %d callers, %d-byte rows, max batch %d, in %s\n",
		c.objects, c.durability, c.callers, c.row, c.maxBatch, c.dir)
	fmt.Fprintf(stdout, "created %d objects in %s\n", c.objects, time.Since(start).Round(time.Millisecond))

	commits := rt.Stats().Commits
	rctx, cancel := context.WithTimeout(ctx, c.duration)
	defer cancel()
	var issued atomic.Int64
	lat := make([][]time.Duration, c.callers)
	var errs atomic.Int64
	var firstErr firstError
	var wg sync.WaitGroup
	start = time.Now()
	for w := range c.callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; rctx.Err() == nil; i++ {
				if c.calls > 0 && issued.Add(1) > c.calls {
					return
				}
				s := stubs[(w*17+i*c.callers)%c.objects]
				t0 := time.Now()
				_, err := s.Call(context.Background(), fn)
				lat[w] = append(lat[w], time.Since(t0))
				if err != nil {
					errs.Add(1)
					firstErr.set(err)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	n := len(all)
	pct := func(p float64) time.Duration {
		if n == 0 {
			return 0
		}
		return all[min(n-1, int(float64(n)*p))]
	}
	commits = rt.Stats().Commits - commits
	fmt.Fprintf(stdout, "calls      %d in %s\n", n, elapsed.Round(time.Millisecond))
	fmt.Fprintf(stdout, "calls/s    %.0f\n", float64(n)/elapsed.Seconds())
	fmt.Fprintf(stdout, "latency    p50 %s  p99 %s  p99.9 %s  max %s\n", pct(0.5), pct(0.99), pct(0.999), pct(1))
	if commits > 0 {
		fmt.Fprintf(stdout, "commits    %d (%.1f calls/commit)\n", commits, float64(n)/float64(commits))
	}
	if e := errs.Load(); e > 0 {
		return fmt.Errorf("%d calls failed, the first with: %w", e, firstErr.get())
	}
	return nil
}

// spread runs f(0..n-1) on w goroutines and returns the first error.
func spread(ctx context.Context, w, n int, f func(i int) error) error {
	var wg sync.WaitGroup
	var first firstError
	for g := range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n && ctx.Err() == nil; i += w {
				if err := f(i); err != nil {
					first.set(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := first.get(); err != nil {
		return err
	}
	return ctx.Err()
}

// firstError keeps the first error set from any goroutine.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

package objects_test

// Benchmarks of the figures the runtime is judged by. Each reports its
// figure with b.ReportMetric (latencies as p50-ns/p99-ns from per-call
// samples, throughput as calls/s over the wall time of the run); ns/op is
// whatever the framework divides and is not the figure. Run them with
//
//	go test -run '^$' -bench 'CallActive|InsertOneCaller|Coalesced64|ManyObjects|Wake10k' -benchtime 3s ./objects/
//	go test -run '^$' -bench 'ColdStart' -benchtime 1000x ./objects/
//	go test -run '^$' -bench 'Memory' -benchtime 1x ./objects/
//
// ColdStart keeps every object it creates open (3 file descriptors each):
// give it an iteration count, not a duration.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sessiond/objects"
)

// rowsClass is the benchmarks' object: a table of rows. New does a small
// read (the highest id), as a real object reads some state on wake.
var rowsClass = objects.Class{
	Migrations: []string{`CREATE TABLE rows (id INTEGER PRIMARY KEY, body BLOB NOT NULL)`},
	New: func(ctx context.Context, h *objects.Handle, tx *objects.Tx) (any, error) {
		o := &rowsObject{}
		return o, tx.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM rows`).Scan(&o.last)
	},
}

type rowsObject struct{ last int64 }

// rowBody is the ~500-byte payload of one inserted row.
var rowBody = func() []byte {
	b := make([]byte, 500)
	rand.Read(b)
	return b
}()

func insertRow(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
	_, err := tx.Exec(ctx, `INSERT INTO rows (body) VALUES (?)`, rowBody)
	return nil, err
}

func noop(ctx context.Context, obj any, tx *objects.Tx) (any, error) { return nil, nil }

func newBenchRuntime(b *testing.B, d objects.Durability, configure func(*objects.Runtime)) (*objects.Runtime, *objects.Namespace) {
	b.Helper()
	rt := objects.NewRuntime(b.TempDir())
	rt.Durability = d
	if configure != nil {
		configure(rt)
	}
	ns, err := rt.Register("rows", rowsClass)
	if err != nil {
		b.Fatal(err)
	}
	if err := rt.Open(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rt.Close() })
	return rt, ns
}

var durabilities = []struct {
	name string
	d    objects.Durability
}{{"normal", objects.DurabilityNormal}, {"full", objects.DurabilityFull}}

// latencies collects per-call samples and reports percentiles.
type latencies []time.Duration

func (l latencies) report(b *testing.B, prefix string) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	pct := func(p float64) float64 { return float64(l[min(len(l)-1, int(float64(len(l))*p))].Nanoseconds()) }
	b.ReportMetric(pct(0.50), prefix+"p50-ns")
	b.ReportMetric(pct(0.99), prefix+"p99-ns")
}

// BenchmarkCallActive: one caller, one object already in memory, a call that
// touches no storage. Target p50 ≤ 5 µs.
func BenchmarkCallActive(b *testing.B) {
	ctx := context.Background()
	_, ns := newBenchRuntime(b, objects.DurabilityNormal, nil)
	s := stub(b, ns, "hot")
	if _, err := s.Call(ctx, noop); err != nil {
		b.Fatal(err)
	}
	var lat latencies
	for b.Loop() {
		t0 := time.Now()
		if _, err := s.Call(ctx, noop); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	lat.report(b, "")
}

// BenchmarkInsertOneCaller: one object, one caller, one ~500-byte row
// INSERT per call, so one commit per call.
//
// The sqlite-* cases are the floor on this machine at the same moment: the
// same INSERT through database/sql and modernc.org/sqlite alone (WAL, one
// connection, no runtime). The disk's sync latency moves by a third from one
// minute to the next here, so compare the runtime with the floor of the
// same run, not with a figure from another day.
func BenchmarkInsertOneCaller(b *testing.B) {
	for _, mode := range []string{"NORMAL", "FULL"} {
		b.Run("sqlite-"+strings.ToLower(mode), func(b *testing.B) {
			db, err := sql.Open("sqlite", "file:"+filepath.Join(b.TempDir(), "floor.db")+"?_pragma=journal_mode(WAL)&_pragma=synchronous("+mode+")")
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			db.SetMaxOpenConns(1)
			if _, err := db.Exec(`CREATE TABLE rows (id INTEGER PRIMARY KEY, body BLOB NOT NULL)`); err != nil {
				b.Fatal(err)
			}
			ins, err := db.Prepare(`INSERT INTO rows (body) VALUES (?)`)
			if err != nil {
				b.Fatal(err)
			}
			defer ins.Close()
			var lat latencies
			start := time.Now()
			for b.Loop() {
				t0 := time.Now()
				if _, err := ins.Exec(rowBody); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.ReportMetric(float64(len(lat))/time.Since(start).Seconds(), "calls/s")
			lat.report(b, "")
		})
	}
	for _, d := range durabilities {
		b.Run(d.name, func(b *testing.B) {
			ctx := context.Background()
			_, ns := newBenchRuntime(b, d.d, nil)
			s := stub(b, ns, "one")
			if _, err := s.Call(ctx, insertRow); err != nil {
				b.Fatal(err)
			}
			var lat latencies
			start := time.Now()
			for b.Loop() {
				t0 := time.Now()
				if _, err := s.Call(ctx, insertRow); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.ReportMetric(float64(len(lat))/time.Since(start).Seconds(), "calls/s")
			lat.report(b, "")
		})
	}
}

// concurrently runs calls from n callers until b.Loop ends, one call per
// iteration, and reports calls/s over the wall time. pick chooses the
// stub of a caller's i-th call.
func concurrently(b *testing.B, n int, pick func(caller, i int) *objects.Stub, fn objects.Func) {
	ctx := context.Background()
	tickets := make(chan struct{})
	var wg sync.WaitGroup
	var calls atomic.Int64
	var failed atomic.Pointer[error]
	for c := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := 0
			for range tickets {
				if _, err := pick(c, i).Call(ctx, fn); err != nil {
					failed.Store(&err)
				}
				calls.Add(1)
				i++
			}
		}()
	}
	start := time.Now()
	for b.Loop() {
		tickets <- struct{}{}
	}
	close(tickets)
	wg.Wait()
	elapsed := time.Since(start)
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	b.ReportMetric(float64(calls.Load())/elapsed.Seconds(), "calls/s")
}

// BenchmarkCoalesced64: one object, 64 concurrent callers, one row INSERT
// per call. Queued calls share a transaction and a commit (one fsync with
// DurabilityFull). Target ≥ 20,000 calls/s in full.
func BenchmarkCoalesced64(b *testing.B) {
	for _, d := range durabilities {
		b.Run(d.name, func(b *testing.B) {
			rt, ns := newBenchRuntime(b, d.d, nil)
			s := stub(b, ns, "shared")
			if _, err := s.Call(context.Background(), insertRow); err != nil {
				b.Fatal(err)
			}
			commits := rt.Stats().Commits
			concurrently(b, 64, func(int, int) *objects.Stub { return s }, insertRow)
			b.ReportMetric(float64(b.N)/float64(rt.Stats().Commits-commits), "calls/commit")
		})
	}
}

// BenchmarkManyObjects: 1,000 objects (created before the clock starts),
// 64 concurrent callers spreading row INSERTs over them.
func BenchmarkManyObjects(b *testing.B) {
	for _, d := range durabilities {
		b.Run(d.name, func(b *testing.B) {
			const objectsN, callers = 1000, 64
			rt, ns := newBenchRuntime(b, d.d, func(rt *objects.Runtime) { rt.IdleTimeout = time.Hour })
			stubs := make([]*objects.Stub, objectsN)
			var wg sync.WaitGroup
			for w := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < objectsN; i += 16 {
						stubs[i] = stub(b, ns, fmt.Sprint("obj-", i))
						if _, err := stubs[i].Call(context.Background(), insertRow); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if st := rt.Stats(); st.Active != objectsN {
				b.Fatalf("stats %+v, want %d active objects", st, objectsN)
			}
			before := rt.Stats()
			// Caller c's i-th call goes to object (c*17 + i*64) mod 1000:
			// callers rarely meet on an object, and all objects are used.
			concurrently(b, callers, func(c, i int) *objects.Stub { return stubs[(c*17+i*callers)%objectsN] }, insertRow)
			after := rt.Stats()
			b.ReportMetric(float64(b.N)/float64(after.Commits-before.Commits), "calls/commit")
			if syncs := after.Syncs - before.Syncs; syncs > 0 {
				b.ReportMetric(float64(after.SyncedCommits-before.SyncedCommits)/float64(syncs), "commits/sync")
			}
		})
	}
}

// BenchmarkColdStart: the first call to a new object (database created or a
// spare taken, schema in place, first call answered). "paced-*" create one
// object per period, "backtoback" as fast as they can, so spares run out
// and databases are made and migrated on the request path. no-spare-ratio
// is the share of creations that found no spare ready (approximate: read
// from Stats just before the call).
func BenchmarkColdStart(b *testing.B) {
	for _, mode := range []struct {
		name string
		gap  time.Duration
	}{{"paced-5ms", 5 * time.Millisecond}, {"paced-20ms", 20 * time.Millisecond}, {"backtoback", 0}} {
		b.Run(mode.name, func(b *testing.B) {
			ctx := context.Background()
			rt, ns := newBenchRuntime(b, objects.DurabilityNormal, func(rt *objects.Runtime) {
				rt.MaxOpen = 1 << 20 // no eviction on the request path
				rt.IdleTimeout = time.Hour
			})
			checkFor(b, 10*time.Second, "spares ready", func() bool { return rt.Stats().OpenDatabases == objects.DefaultSpares })
			var lat latencies
			noSpare := 0
			i := 0
			for b.Loop() {
				if mode.gap > 0 {
					b.StopTimer()
					time.Sleep(mode.gap)
					b.StartTimer()
				}
				s := stub(b, ns, fmt.Sprint("new-", i))
				i++
				if st := rt.Stats(); st.OpenDatabases == int64(st.Active) {
					noSpare++
				}
				t0 := time.Now()
				if _, err := s.Call(ctx, insertRow); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			lat.report(b, "")
			b.ReportMetric(float64(noSpare)/float64(len(lat)), "no-spare-ratio")
		})
	}
}

// BenchmarkWake10k: the first call to a hibernated object holding 10,000
// rows of ~500 bytes: index lookup, database opened, New's small read, the
// call answered. The object is put back to sleep between iterations (off
// the clock) with a 1 ms idle timeout.
func BenchmarkWake10k(b *testing.B) {
	ctx := context.Background()
	rt, ns := newBenchRuntime(b, objects.DurabilityNormal, func(rt *objects.Runtime) { rt.IdleTimeout = time.Millisecond })
	s := stub(b, ns, "big")
	if _, err := s.Call(ctx, func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		for range 10_000 {
			if _, err := tx.Exec(ctx, `INSERT INTO rows (body) VALUES (?)`, rowBody); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}); err != nil {
		b.Fatal(err)
	}
	read := func(ctx context.Context, obj any, tx *objects.Tx) (any, error) {
		var body []byte
		return nil, tx.QueryRow(ctx, `SELECT body FROM rows WHERE id = ?`, obj.(*rowsObject).last).Scan(&body)
	}
	var lat latencies
	opens := rt.Stats().ObjectOpens
	for b.Loop() {
		b.StopTimer()
		// Entries, not Active: an instance stops counting as active when
		// its sleep begins, and the sleep (a checkpoint and two fsyncs in
		// SQLite's close) is still running then. A wake that queued behind
		// it measured the disk's sync latency, not the wake.
		for rt.Stats().Entries != 0 {
			time.Sleep(100 * time.Microsecond)
		}
		b.StartTimer()
		t0 := time.Now()
		if _, err := s.Call(ctx, read); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	if got := rt.Stats().ObjectOpens - opens; got != int64(len(lat)) {
		b.Fatalf("%d wakes from disk for %d calls", got, len(lat))
	}
	lat.report(b, "")
}

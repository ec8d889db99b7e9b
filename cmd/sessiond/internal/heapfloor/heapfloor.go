package heapfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// active is set while a floor is on: the GC percentage is the process's,
// so there is at most one.
var active atomic.Bool

const (
	// maxPercent caps the percentage a floor may set: with a nearly empty
	// heap (at start-up) the floor is reached at this percentage, not at
	// the floor.
	maxPercent = 10000
	// DefaultQuiet is how often a raised goal checks whether the process
	// has gone quiet: allocated less than a 64th of the floor since the
	// last look. Then the goal is dropped and its memory returned.
	DefaultQuiet = time.Second
	// quietShare is the part of the floor a process may allocate in one
	// quiet interval and still count as quiet.
	quietShare = 64
)

// Floor holds the heap goal at or above a number of bytes until Stop.
// Create one with Start; a nil *Floor is no floor.
type Floor struct {
	bytes uint64
	base  int // the GC percentage without the floor (GOGC)
	quiet time.Duration

	mu       sync.Mutex
	stopped  bool
	raised   bool             // the percentage is the floor's, not base
	watching bool             // watch is armed
	auto     uint64           // collections the runtime started itself, at the last adjust
	allocs   uint64           // bytes allocated since the process started, at the last look
	sample   []metrics.Sample // see start
	watch    *time.Timer      // runs check every quiet while raised
}

// Start sets a floor of bytes under the heap goal, dropped when a
// DefaultQuiet interval passes with little allocation. It returns nil, and
// changes nothing, when bytes is 0, the collector is off (GOGC=off), the
// runtime lacks the metrics it reads, or another floor is on (one process,
// one GC percentage: the first floor keeps it until its Stop).
func Start(bytes uint64) *Floor {
	return start(bytes, DefaultQuiet)
}

func start(bytes uint64, quiet time.Duration) *Floor {
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if bytes == 0 || base < 0 || !active.CompareAndSwap(false, true) {
		return nil
	}
	f := &Floor{
		bytes: bytes,
		base:  base,
		quiet: quiet,
		sample: []metrics.Sample{
			{Name: "/gc/heap/live:bytes"},
			{Name: "/gc/gogc:percent"},
			{Name: "/gc/cycles/automatic:gc-cycles"},
			{Name: "/gc/heap/allocs:bytes"},
		},
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.read() {
		active.Store(false)
		return nil
	}
	// Count the start as a collection of the runtime's: raise at once.
	f.auto = f.sample[2].Value.Uint64() - 1
	f.watch = time.AfterFunc(time.Hour, f.check)
	f.watch.Stop()
	f.adjustLocked()
	f.arm()
	return f
}

// Stop removes the floor: the GC percentage goes back to GOGC's. It is safe
// to call more than once.
func (f *Floor) Stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	f.stopped = true
	f.watch.Stop()
	debug.SetGCPercent(f.base)
	active.Store(false)
}

// arm registers a cleanup that runs after the next collection frees a
// sentinel: one adjustment per collection, in the runtime's cleanup
// goroutine, and none once stopped.
func (f *Floor) arm() {
	// 32 bytes: larger than the tiny allocator's blocks, so the sentinel
	// is freed by the first collection after this one.
	s := new([32]byte)
	runtime.AddCleanup(s, func(f *Floor) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if !f.stopped {
			f.adjustLocked()
			f.arm()
		}
	}, f)
}

// read reads the metrics, and reports whether the runtime has them.
func (f *Floor) read() bool {
	metrics.Read(f.sample)
	for _, s := range f.sample {
		if s.Value.Kind() != metrics.KindUint64 {
			return false
		}
	}
	return true
}

// adjustLocked sets the GC percentage for the live heap the last collection
// found, if the runtime started that collection itself (allocation, not
// runtime.GC or the floor's own drop), and starts watching for quiet.
func (f *Floor) adjustLocked() {
	if !f.read() {
		return
	}
	live, cur, auto := f.sample[0].Value.Uint64(), int(f.sample[1].Value.Uint64()), f.sample[2].Value.Uint64()
	if auto == f.auto {
		return // forced: not a sign of load
	}
	f.auto = auto
	p := percentFor(live, f.bytes, f.base)
	// Small changes are not worth a new goal: the live heap wobbles
	// between collections.
	if p != cur && (p == f.base || diff(p, cur)*20 > cur) {
		debug.SetGCPercent(p)
	}
	f.raised = p != f.base
	if f.raised && !f.watching {
		f.watching = true
		f.allocs = f.sample[3].Value.Uint64()
		f.watch.Reset(f.quiet)
	}
}

// check runs every quiet interval while the goal is raised. If the process
// allocated less than a quietShare of the floor since the last look, the
// load has stopped: the percentage goes back to GOGC's, and the heap the
// floor let grow is collected and returned to the system. (Collections
// alone say nothing: with the floor they come seconds apart under load.)
// The collection this forces does not raise the goal again; the next one
// the runtime starts itself does (in an idle process, its collection every
// two minutes: raised, then dropped a second later).
func (f *Floor) check() {
	f.mu.Lock()
	if f.stopped || !f.raised || !f.read() {
		f.watching = false
		f.mu.Unlock()
		return
	}
	allocs := f.sample[3].Value.Uint64()
	if allocs-f.allocs >= f.bytes/quietShare {
		f.allocs = allocs
		f.watch.Reset(f.quiet)
		f.mu.Unlock()
		return
	}
	f.raised, f.watching = false, false
	debug.SetGCPercent(f.base)
	f.mu.Unlock()
	debug.FreeOSMemory()
}

// minHeap is the live heap the runtime assumes before its first collection
// (its goal is then 4 MiB × GOGC/100).
const minHeap = 4 << 20

// percentFor returns the GC percentage whose goal, for a live heap of live
// bytes, is floor bytes, or base if base's goal is higher.
func percentFor(live, floor uint64, base int) int {
	live = max(live, minHeap)
	if live >= floor {
		return base
	}
	p := (floor - live) * 100 / live
	if p > maxPercent {
		return maxPercent
	}
	return max(int(p), base)
}

func diff(a, b int) int {
	if a > b {
		return a - b
	}
	return b - a
}

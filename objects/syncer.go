package objects

import (
	"errors"
	"os"
	"sync"
)

// syncer groups the WAL syncs of commits in full durability. A commit
// waits for a sync that started after it; when several wait at once, one
// syncfs(2) covers them all (one journal commit and one disk-cache flush
// instead of one each), and where syncfs is missing or only one waits, each
// file gets its own fdatasync.
//
// There is no goroutine of its own: the first waiter to find no sync running
// leads one round for everyone queued so far, then hands the lead to the
// first waiter that queued meanwhile, so that no caller's result waits on
// rounds for others. Grouping also keeps Go's scheduler out of the way: at
// most one goroutine sits in a sync system call (and holds a processor until
// the runtime notices) rather than one per object.
type syncer struct {
	mu      sync.Mutex
	leading bool
	pending []*syncWait
	rounds  int64 // sync system calls made, for tests and benchmarks
	files   int64 // files covered by them
	// flushFn replaces flush in tests.
	flushFn func(batch []*syncWait) error
}

type syncWait struct {
	f    *os.File
	dev  uint64 // the filesystem f is on (fileDev)
	done chan error
}

// errLead tells a waiter that it leads the next round.
var errLead = errors.New("objects: lead the next sync round")

var syncWaitPool = sync.Pool{New: func() any { return &syncWait{done: make(chan error, 1)} }}

// sync returns once f's data written so far is on the disk. dev is the
// filesystem f is on (fileDev): one syncfs covers a round only when all its
// files share one.
func (s *syncer) sync(f *os.File, dev uint64) error {
	w := syncWaitPool.Get().(*syncWait)
	w.f, w.dev = f, dev
	defer func() { w.f = nil; syncWaitPool.Put(w) }()
	s.mu.Lock()
	s.pending = append(s.pending, w)
	if s.leading {
		s.mu.Unlock()
		if err := <-w.done; err != errLead {
			return err
		}
		s.mu.Lock()
	}
	s.leading = true
	batch := s.pending
	s.pending = nil
	s.mu.Unlock()

	err := s.flush(batch)

	s.mu.Lock()
	s.rounds++
	s.files += int64(len(batch))
	if len(s.pending) > 0 {
		s.pending[0].done <- errLead // it stays queued and leads the next round
	} else {
		s.leading = false
	}
	s.mu.Unlock()
	for _, o := range batch {
		if o != w {
			o.done <- err
		}
	}
	return err
}

// flush makes the files of one round durable.
func (s *syncer) flush(batch []*syncWait) error {
	if s.flushFn != nil {
		return s.flushFn(batch)
	}
	if len(batch) > 1 && sameDev(batch) {
		if supported, err := syncfs(batch[0].f); supported {
			return err
		}
	}
	var first error
	for _, w := range batch {
		if err := fdatasync(w.f); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func sameDev(batch []*syncWait) bool {
	for _, w := range batch[1:] {
		if w.dev != batch[0].dev || w.dev == 0 {
			return false
		}
	}
	return true
}

// stats returns the sync system calls made and the files they covered.
func (s *syncer) stats() (rounds, files int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rounds, s.files
}

package objects

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// While one sync round runs, every commit that asks meanwhile waits and is
// covered by the next round, all at once; a round's error reaches every
// waiter of that round and no other.
func TestSyncerGroupsWaiters(t *testing.T) {
	dir := t.TempDir()
	files := make([]*os.File, 11)
	for i := range files {
		f, err := os.Create(filepath.Join(dir, string(rune('a'+i))))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files[i] = f
	}
	release := make(chan struct{})
	var rounds [][]*os.File
	boom := errors.New("disk on fire")
	s := &syncer{}
	s.flushFn = func(batch []*syncWait) error {
		var fs []*os.File
		for _, w := range batch {
			fs = append(fs, w.f)
		}
		rounds = append(rounds, fs) // rounds never overlap: no lock needed
		if len(rounds) == 1 {
			<-release
			return nil
		}
		return boom
	}
	first := make(chan error, 1)
	go func() { first <- s.sync(files[0], 1) }()
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.leading })
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	for i := 1; i < len(files); i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.sync(files[i], 1) }()
	}
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.pending) == len(files)-1 })
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first round: %v", err)
	}
	wg.Wait()
	if len(rounds) != 2 || len(rounds[0]) != 1 || len(rounds[1]) != len(files)-1 {
		t.Fatalf("rounds of %v files, want [1 %d]", lens(rounds), len(files)-1)
	}
	for i, err := range errs[1:] {
		if !errors.Is(err, boom) {
			t.Errorf("waiter %d of the failed round got %v", i+1, err)
		}
	}
	if r, f := s.stats(); r != 2 || f != int64(len(files)) {
		t.Errorf("stats: %d rounds, %d files; want 2, %d", r, f, len(files))
	}
	if s.leading || len(s.pending) != 0 {
		t.Errorf("after the rounds: leading=%v, %d pending", s.leading, len(s.pending))
	}
}

// Many goroutines syncing real files at once all return, and the real
// system calls (syncfs or fdatasync) succeed.
func TestSyncerConcurrentRealFiles(t *testing.T) {
	dir := t.TempDir()
	s := &syncer{}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Create(filepath.Join(dir, string(rune('a'+g))))
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			for i := range 20 {
				if _, err := f.Write([]byte{byte(i)}); err != nil {
					t.Error(err)
					return
				}
				if err := s.sync(f, fileDev(f)); err != nil {
					t.Errorf("sync: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rounds, files := s.stats()
	if files != 16*20 || rounds < 1 || rounds > files {
		t.Fatalf("%d rounds covering %d files, want 320 files", rounds, files)
	}
	t.Logf("%d rounds for %d syncs", rounds, files)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

func lens(rounds [][]*os.File) []int {
	var n []int
	for _, r := range rounds {
		n = append(n, len(r))
	}
	return n
}

// One syncfs covers a round only when every file is on one known
// filesystem; otherwise each file is flushed on its own.
func TestSyncerSameDev(t *testing.T) {
	w := func(dev uint64) *syncWait { return &syncWait{dev: dev} }
	for _, c := range []struct {
		batch []*syncWait
		want  bool
	}{
		{[]*syncWait{w(5), w(5), w(5)}, true},
		{[]*syncWait{w(5), w(6)}, false},
		{[]*syncWait{w(0), w(0)}, false}, // unknown
		{[]*syncWait{w(5)}, true},
	} {
		if got := sameDev(c.batch); got != c.want {
			t.Errorf("sameDev(%v) = %v, want %v", c.batch, got, c.want)
		}
	}
}

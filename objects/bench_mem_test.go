package objects_test

// Memory benchmarks: each builds its state once, measures, and reports per
// object or per socket. Run once each:
//
//	go test -run '^$' -bench 'Memory' -benchtime 1x ./objects/

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"sessiond/objects"
)

// footprint is what the process holds at one moment, after a full GC that
// returns freed memory to the OS.
type footprint struct {
	rss, heap  int64 // bytes
	fds        int
	goroutines int
}

func measure(b *testing.B) footprint {
	b.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f := footprint{heap: int64(ms.HeapAlloc), goroutines: runtime.NumGoroutine()}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status:", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			f.rss = kb << 10
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		b.Fatal(err)
	}
	f.fds = len(fds)
	return f
}

func (f footprint) per(b *testing.B, before footprint, n int, unit string) {
	b.ReportMetric(float64(f.rss-before.rss)/float64(n), "RSS-B/"+unit)
	b.ReportMetric(float64(f.heap-before.heap)/float64(n), "heap-B/"+unit)
	b.ReportMetric(float64(f.fds-before.fds)/float64(n), "fds/"+unit)
	b.ReportMetric(float64(f.goroutines-before.goroutines)/float64(n), "goroutines/"+unit)
}

// createObjects makes n objects of ns (obj-from…), each with one row, 16
// at a time.
func createObjects(b *testing.B, ns *objects.Namespace, from, n int) {
	b.Helper()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := from + w; i < from+n; i += 16 {
				if _, err := stub(b, ns, fmt.Sprint("obj-", i)).Call(context.Background(), insertRow); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// waitFor polls cond without a deadline the framework would count.
func waitFor(b *testing.B, what string, cond func() bool) {
	b.Helper()
	checkFor(b, 5*time.Minute, what, cond)
}

func BenchmarkMemory(b *testing.B) {
	const objectsN = 1000

	// A hibernated object without sockets holds nothing: no entry, no open
	// database, no file descriptor, no heap. RSS is measured over a second
	// batch of objects too: memory the allocators keep after the first
	// batch (SQLite's allocations are not returned to the OS) is reused.
	b.Run("hibernated", func(b *testing.B) {
		rt, ns := newBenchRuntime(b, objects.DurabilityNormal, func(rt *objects.Runtime) { rt.IdleTimeout = 5 * time.Millisecond })
		settled := func() bool {
			st := rt.Stats()
			return st.Entries == 0 && st.OpenDatabases == objects.DefaultSpares && st.Workers == 0
		}
		waitFor(b, "spares ready", settled)
		before := measure(b)
		createObjects(b, ns, 0, objectsN)
		waitFor(b, "all hibernated", settled)
		first := measure(b)
		createObjects(b, ns, objectsN, objectsN)
		waitFor(b, "all hibernated", settled)
		second := measure(b)
		st := rt.Stats()
		for b.Loop() { // measured once above; b.Loop would drop metrics reported before it
		}
		b.ReportMetric(float64(st.Entries), "entries")
		b.ReportMetric(float64(st.OpenDatabases-objects.DefaultSpares), "open-dbs")
		first.per(b, before, objectsN, "object")
		b.ReportMetric(float64(second.rss-first.rss)/objectsN, "RSS-B/object-2nd-batch")
		b.ReportMetric(float64(second.heap-first.heap)/objectsN, "heap-B/object-2nd-batch")
	})

	// An active object: its database open (one connection, WAL, page cache
	// of up to CacheKiB), its instance and entry.
	b.Run("active", func(b *testing.B) {
		rt, ns := newBenchRuntime(b, objects.DurabilityNormal, func(rt *objects.Runtime) { rt.IdleTimeout = time.Hour })
		waitFor(b, "spares ready", func() bool { return rt.Stats().OpenDatabases == objects.DefaultSpares })
		before := measure(b)
		createObjects(b, ns, 0, objectsN)
		after := measure(b)
		if st := rt.Stats(); st.Active != objectsN {
			b.Fatalf("stats %+v, want %d active", st, objectsN)
		}
		for b.Loop() {
		}
		after.per(b, before, objectsN, "object")
	})

	// Idle sockets held for hibernated objects: 10,000 loopback WebSockets
	// on 1,000 objects. The clients run in a child process, so this process
	// holds only the server ends (and the fd limit of 20,000 is not hit).
	b.Run("sockets", func(b *testing.B) {
		const socketsN = 10_000
		rt, ns := newBenchRuntime(b, objects.DurabilityNormal, func(rt *objects.Runtime) { rt.IdleTimeout = 5 * time.Millisecond })
		var accepted atomic.Int64
		attachment := bytes.Repeat([]byte("a"), 32)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			s, err := ns.Get(r.URL.Query().Get("obj"))
			if err == nil {
				_, err = s.AcceptWebSocket(r.Context(), c, &objects.SocketOptions{Tags: []string{"viewer"}, Attachment: attachment})
			}
			if err != nil {
				c.Close(websocket.StatusInternalError, err.Error())
				return
			}
			accepted.Add(1)
		}))
		defer srv.Close()
		createObjects(b, ns, 0, objectsN)
		waitFor(b, "all hibernated", func() bool { return rt.Stats().Entries == 0 })
		before := measure(b)

		cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
		cmd.Env = append(os.Environ(),
			wsClientsEnv+"=ws"+strings.TrimPrefix(srv.URL, "http")+"/",
			wsClientsNEnv+"="+strconv.Itoa(socketsN),
			wsClientsObjectsEnv+"="+strconv.Itoa(objectsN))
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() {
			stdin.Close() // the child closes its sockets and exits
			cmd.Wait()
		}()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() && sc.Text() != "ready" {
		}
		waitFor(b, "sockets accepted", func() bool { return accepted.Load() == socketsN })
		waitFor(b, "objects asleep", func() bool { return rt.Stats().Active == 0 })
		after := measure(b)
		st := rt.Stats()
		for b.Loop() {
		}
		b.ReportMetric(float64(st.Entries), "entries")
		b.ReportMetric(float64(st.Active), "active")
		after.per(b, before, socketsN, "socket")
		rt.Close() // 1001 to every client while they still read
	})
}

// Environment of the socket benchmark's client process.
const (
	wsClientsEnv        = "OBJECTS_WS_CLIENTS"         // ws:// URL of the server; set: run as the clients
	wsClientsNEnv       = "OBJECTS_WS_CLIENTS_N"       // how many sockets
	wsClientsObjectsEnv = "OBJECTS_WS_CLIENTS_OBJECTS" // spread over this many objects (obj-0…)
)

// wsClients dials the sockets (socket i to object i mod objects), reads
// each one in its own goroutine (so close handshakes complete), prints
// "ready" and holds them until stdin closes.
func wsClients(base string) int {
	n, err1 := strconv.Atoi(os.Getenv(wsClientsNEnv))
	objs, err2 := strconv.Atoi(os.Getenv(wsClientsObjectsEnv))
	if err1 != nil || err2 != nil || objs <= 0 {
		fmt.Fprintln(os.Stderr, "ws clients: bad environment")
		return 2
	}
	ctx := context.Background()
	conns := make([]*websocket.Conn, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			dctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			c, _, err := websocket.Dial(dctx, base+"?obj=obj-"+strconv.Itoa(i%objs), nil)
			if err != nil {
				failed.Store(&err)
				return
			}
			conns[i] = c
			go func() {
				for {
					if _, _, err := c.Read(ctx); err != nil {
						return
					}
				}
			}()
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		fmt.Fprintln(os.Stderr, "ws clients:", *err)
		return 1
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.CloseNow()
	}
	return 0
}

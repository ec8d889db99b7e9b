package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// socketFloorMsg is the size of one token's message in the socket floor:
// about a delta's WebSocket message.
const socketFloorMsg = 80

// socketFloorCase is the kernel's floor under a fan-out: n plain loopback
// TCP connections, one thread that writes each token's message to every
// one of them (with write(2) per socket, or with io_uring, one submission
// for up to 1,024 sockets) and one thread that reads them all through
// epoll, on another CPU when there is one. No WebSocket, no Go scheduler,
// no server: what is left is the system calls and the loopback. The row is
// ws-fanout's, with the writer's CPU per message.
func socketFloorCase(ctx context.Context, n, tokens int, rate float64, mode string) (row, error) {
	if tokens <= 0 || rate <= 0 {
		return row{}, errors.New("-sockets needs -tokens and -rate above 0")
	}
	var send func(fds []int, msg []byte) error
	switch mode {
	case "write":
		send = writeEach
	case "io_uring":
		r, err := newURing(1024)
		if err != nil {
			return row{}, err
		}
		defer r.close()
		send = r.sendAll
	default:
		return row{}, fmt.Errorf("socket floor: unknown mode %q", mode)
	}
	srv, cli, err := socketPairs(n)
	defer closeFDs(srv)
	defer closeFDs(cli)
	if err != nil {
		return row{}, err
	}
	sent := make([]int64, tokens) // ns since start when token k's writes began
	start := time.Now()
	rctx, cancel := context.WithCancel(ctx)
	res := make(chan socketReading, 1)
	go func() { res <- readSockets(rctx, cli, tokens, start, sent) }()
	defer func() { // the reader is done with cli before it is closed
		cancel()
		<-res
	}()

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if runtime.NumCPU() > 1 {
		if err := setAffinity(0, maskOf([]int{0})); err != nil {
			return row{}, err
		}
		defer setAffinity(0, maskOf(allCPUs()))
	}
	msg := make([]byte, socketFloorMsg)
	period := time.Duration(float64(time.Second) / rate)
	cpu0 := threadCPU()
	for k := 0; k < tokens && ctx.Err() == nil; k++ {
		time.Sleep(time.Until(start.Add(time.Duration(k+1) * period)))
		atomic.StoreInt64(&sent[k], int64(time.Since(start)))
		if err := send(srv, msg); err != nil {
			return row{}, err
		}
	}
	writerCPU := threadCPU() - cpu0
	rd := <-res
	res <- socketReading{} // for the deferred wait
	if rd.err != nil {
		return row{}, rd.err
	}
	r := row{Case: fmt.Sprintf("sockets %s viewers=%d tokens=%d", mode, n, tokens)}
	r.addLatency("last-viewer ", &rd.last)
	r.add("any-viewer p50", ms(rd.each.quantile(0.5)), "ms")
	r.add("any-viewer p99", ms(rd.each.quantile(0.99)), "ms")
	r.add("viewers complete", float64(rd.complete), "")
	r.add("writer cpu/message", float64(writerCPU)/float64(time.Microsecond)/float64(tokens*n), "µs")
	return r, nil
}

func allCPUs() []int {
	cpus := make([]int, runtime.NumCPU())
	for i := range cpus {
		cpus[i] = i
	}
	return cpus
}

// threadCPU is the calling thread's CPU time so far, to the nanosecond
// and up to now: getrusage(RUSAGE_THREAD) counts only to the last tick or
// context switch, and a burst of writes between two (a writer scheduled
// late, whose paced sleeps had all expired) read as no CPU at all.
func threadCPU() time.Duration {
	const clockThreadCPUTimeID = 3 // CLOCK_THREAD_CPUTIME_ID: always there on Linux
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Nano())
}

// socketPairs opens n loopback TCP connections and returns the
// non-blocking descriptors of both ends, the accepted ones first.
func socketPairs(n int) (srv, cli []int, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return srv, cli, err
		}
		s, err := ln.Accept()
		if err != nil {
			c.Close()
			return srv, cli, err
		}
		for _, p := range []struct {
			conn net.Conn
			fds  *[]int
		}{{s, &srv}, {c, &cli}} {
			f, err := p.conn.(*net.TCPConn).File() // a dup: the descriptor outlives conn
			p.conn.Close()
			if err != nil {
				return srv, cli, err
			}
			fd, err := syscall.Dup(int(f.Fd()))
			f.Close()
			if err != nil {
				return srv, cli, err
			}
			*p.fds = append(*p.fds, fd)
			if err := syscall.SetNonblock(fd, true); err != nil {
				return srv, cli, err
			}
		}
	}
	return srv, cli, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

func writeEach(fds []int, msg []byte) error {
	for _, fd := range fds {
		if w, err := syscall.Write(fd, msg); err != nil || w != len(msg) {
			return fmt.Errorf("socket floor: write(2): %d bytes, %v", w, err)
		}
	}
	return nil
}

type socketReading struct {
	last, each samples
	complete   int
	err        error
}

// readSockets reads every fd through epoll, on CPU 1 when there are two,
// until each has received tokens messages, ctx ends or nothing has come
// for 10 s, and times each message against sent.
func readSockets(ctx context.Context, fds []int, tokens int, start time.Time, sent []int64) (rd socketReading) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if runtime.NumCPU() > 1 {
		if err := setAffinity(0, maskOf([]int{1})); err != nil {
			return socketReading{err: err}
		}
		defer setAffinity(0, maskOf(allCPUs()))
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return socketReading{err: fmt.Errorf("socket floor: epoll: %w", err)}
	}
	defer syscall.Close(ep)
	for i, fd := range fds {
		if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(i)}); err != nil {
			return socketReading{err: fmt.Errorf("socket floor: epoll_ctl: %w", err)}
		}
	}
	got := make([]int, len(fds))    // bytes received per socket
	count := make([]int, tokens)    // sockets that have token k
	lastAt := make([]int64, tokens) // when the last of them got it
	buf := make([]byte, 64<<10)
	evs := make([]syscall.EpollEvent, 1024)
	quiet := time.Now()
	for rd.complete < len(fds) && time.Since(quiet) < 10*time.Second && ctx.Err() == nil {
		m, err := syscall.EpollWait(ep, evs, 100)
		if err != nil {
			continue // EINTR
		}
		if m > 0 {
			quiet = time.Now()
		}
		for _, e := range evs[:m] {
			i := int(e.Fd)
			k, err := syscall.Read(fds[i], buf)
			if err != nil || k <= 0 {
				continue
			}
			now := int64(time.Since(start))
			before := got[i] / socketFloorMsg
			got[i] += k
			after := min(got[i]/socketFloorMsg, tokens)
			for t := before; t < after; t++ {
				rd.each.add(time.Duration(now - atomic.LoadInt64(&sent[t])))
				if count[t]++; count[t] == len(fds) {
					lastAt[t] = now
				}
			}
			if after == tokens && before < tokens {
				rd.complete++
			}
		}
	}
	for t := range tokens {
		if count[t] == len(fds) {
			rd.last.add(time.Duration(lastAt[t] - atomic.LoadInt64(&sent[t])))
		}
	}
	return rd
}

// uRing is an io_uring instance used for one thing: sending one message to
// many sockets in as few system calls as the ring's size allows.
type uRing struct {
	fd                     int
	mem, sqeMem            []byte
	sqTail, sqMask         *uint32
	sqArray                []uint32
	sqes                   []uringSQE
	cqHead, cqTail, cqMask *uint32
	cqes                   []uringCQE
	entries                int
}

// uringSQE and uringCQE are struct io_uring_sqe and io_uring_cqe.
type uringSQE struct {
	opcode   uint8
	flags    uint8
	ioprio   uint16
	fd       int32
	off      uint64
	addr     uint64
	len      uint32
	msgFlags uint32
	userData uint64
	_        [3]uint64
}

type uringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

// uringParams is struct io_uring_params; sqOff and cqOff are its
// io_sqring_offsets and io_cqring_offsets.
type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	_                                                                      [3]uint32
	sqOff                                                                  [10]uint32
	cqOff                                                                  [10]uint32
}

const (
	sysIOURingSetup   = 425
	sysIOURingEnter   = 426
	uringOpSend       = 26
	uringEnterGetEvts = 1
	uringFeatSingleMM = 1
	uringOffSQEs      = 0x10000000
)

func newURing(entries uint32) (*uRing, error) {
	var p uringParams
	fd, _, errno := syscall.Syscall(sysIOURingSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("socket floor: io_uring_setup: %w", errno)
	}
	r := &uRing{fd: int(fd), entries: int(p.sqEntries)}
	if p.features&uringFeatSingleMM == 0 {
		r.close()
		return nil, errors.New("socket floor: io_uring without IORING_FEAT_SINGLE_MMAP")
	}
	size := max(p.sqOff[6]+p.sqEntries*4, p.cqOff[5]+p.cqEntries*uint32(unsafe.Sizeof(uringCQE{})))
	var err error
	if r.mem, err = syscall.Mmap(r.fd, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		r.close()
		return nil, fmt.Errorf("socket floor: mmap rings: %w", err)
	}
	if r.sqeMem, err = syscall.Mmap(r.fd, uringOffSQEs, int(p.sqEntries)*int(unsafe.Sizeof(uringSQE{})), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		r.close()
		return nil, fmt.Errorf("socket floor: mmap SQEs: %w", err)
	}
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&r.mem[off])) }
	r.sqTail, r.sqMask = at(p.sqOff[1]), at(p.sqOff[2])
	r.sqArray = unsafe.Slice(at(p.sqOff[6]), p.sqEntries)
	r.cqHead, r.cqTail, r.cqMask = at(p.cqOff[0]), at(p.cqOff[1]), at(p.cqOff[2])
	r.cqes = unsafe.Slice((*uringCQE)(unsafe.Pointer(&r.mem[p.cqOff[5]])), p.cqEntries)
	r.sqes = unsafe.Slice((*uringSQE)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	return r, nil
}

// sendAll sends msg to every fd, the ring's size at a time, each batch one
// io_uring_enter that waits for its completions.
func (r *uRing) sendAll(fds []int, msg []byte) error {
	defer runtime.KeepAlive(msg)
	for len(fds) > 0 {
		k := min(len(fds), r.entries)
		tail := atomic.LoadUint32(r.sqTail)
		for i, fd := range fds[:k] {
			idx := (tail + uint32(i)) & *r.sqMask
			r.sqes[idx] = uringSQE{opcode: uringOpSend, fd: int32(fd), addr: uint64(uintptr(unsafe.Pointer(&msg[0]))),
				len: uint32(len(msg)), msgFlags: syscall.MSG_DONTWAIT, userData: uint64(i)}
			r.sqArray[idx] = idx
		}
		atomic.StoreUint32(r.sqTail, tail+uint32(k))
		if _, _, errno := syscall.Syscall6(sysIOURingEnter, uintptr(r.fd), uintptr(k), uintptr(k), uringEnterGetEvts, 0, 0); errno != 0 {
			return fmt.Errorf("socket floor: io_uring_enter: %w", errno)
		}
		head, ctail := atomic.LoadUint32(r.cqHead), atomic.LoadUint32(r.cqTail)
		var bad error
		for ; head != ctail; head++ {
			if c := r.cqes[head&*r.cqMask]; c.res != int32(len(msg)) && bad == nil {
				bad = fmt.Errorf("socket floor: io_uring send: %d bytes, errno %d", c.res, -c.res)
			}
		}
		atomic.StoreUint32(r.cqHead, head)
		if bad != nil {
			return bad
		}
		fds = fds[k:]
	}
	return nil
}

func (r *uRing) close() {
	if r.sqeMem != nil {
		syscall.Munmap(r.sqeMem)
	}
	if r.mem != nil {
		syscall.Munmap(r.mem)
	}
	syscall.Close(r.fd)
}

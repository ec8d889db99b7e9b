package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// leanConnState is one connection of the lean client.
type leanConnState struct {
	fd      int
	out     []byte // request being written
	written int
	in      []byte // answer bytes read so far
	t0      time.Time
	busy    bool // a call is in flight
}

// leanSocket opens a connected, non-blocking TCP socket to addr
// (host:port, numeric or resolvable).
func leanSocket(ctx context.Context, addr string) (int, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		tcp, rerr := net.DefaultResolver.LookupNetIP(ctx, "ip4", hostOf(addr))
		if rerr != nil || len(tcp) == 0 {
			return -1, fmt.Errorf("lean client: resolve %s: %v", addr, rerr)
		}
		_, port, _ := net.SplitHostPort(addr)
		ap, err = netip.ParseAddrPort(net.JoinHostPort(tcp[0].String(), port))
		if err != nil {
			return -1, err
		}
	}
	var sa syscall.Sockaddr
	family := syscall.AF_INET
	if ap.Addr().Is4() {
		sa = &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("lean client: socket: %w", err)
	}
	// A blocking connect: on loopback it completes at once, unless a
	// signal (the Go runtime's preemption) interrupts it; it then goes on
	// in the background, and connecting again says when it is done.
	err = syscall.Connect(fd, sa)
	for err == syscall.EINTR || err == syscall.EALREADY {
		time.Sleep(100 * time.Microsecond)
		err = syscall.Connect(fd, sa)
	}
	if err != nil && err != syscall.EISCONN {
		syscall.Close(fd)
		return -1, fmt.Errorf("lean client: connect %s: %w", addr, err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("lean client: TCP_NODELAY: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("lean client: non-blocking: %w", err)
	}
	return fd, nil
}

func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}

// runEpoll drives spec.conns connections from one locked OS thread.
func runEpoll(ctx context.Context, spec loopSpec, addr string, want int, req leanRequest) (*loopResult, error) {
	ctx, cancel := context.WithTimeout(ctx, spec.warmup+spec.duration)
	defer cancel()
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("lean client: epoll: %w", err)
	}
	defer syscall.Close(ep)
	conns := make(map[int32]*leanConnState, spec.conns)
	defer func() {
		for _, c := range conns {
			syscall.Close(c.fd)
		}
	}()
	open := func() (*leanConnState, error) {
		fd, err := leanSocket(ctx, addr)
		if err != nil {
			return nil, err
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
		if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
			syscall.Close(fd)
			return nil, fmt.Errorf("lean client: epoll_ctl: %w", err)
		}
		c := &leanConnState{fd: fd, in: make([]byte, 0, 4096)}
		conns[int32(fd)] = c
		return c, nil
	}
	for range spec.conns {
		if _, err := open(); err != nil {
			return nil, err
		}
	}

	start := time.Now()
	measureFrom := start.Add(spec.warmup)
	res := &loopResult{}
	var meters sync.WaitGroup
	var server, self *cpuMeter
	meters.Go(func() { server, self = meterAt(ctx, measureFrom, spec.pid) })

	started := 0
	fail := func(c *leanConnState, err error) {
		if c.busy && !c.t0.Before(measureFrom) && ctx.Err() == nil {
			res.errors++
			res.lastErr = err
		}
		c.busy = false
	}
	// send starts the next call on c, if the loop is still going.
	send := func(c *leanConnState) {
		if started >= spec.n || ctx.Err() != nil {
			return
		}
		started++
		c.out = req(c.out[:0], addr, started)
		c.written, c.busy, c.t0 = 0, true, time.Now()
		c.in = c.in[:0]
		for c.written < len(c.out) {
			n, err := syscall.Write(c.fd, c.out[c.written:])
			if err == syscall.EAGAIN {
				// The socket buffer is full: finish when it is writable.
				ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP, Fd: int32(c.fd)}
				if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_MOD, c.fd, &ev); err != nil {
					fail(c, err)
				}
				return
			}
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				fail(c, fmt.Errorf("write: %w", err))
				return
			}
			c.written += n
		}
	}
	// reopen replaces a broken connection and starts its next call.
	reopen := func(c *leanConnState) error {
		syscall.Close(c.fd) // also removes it from the epoll set
		delete(conns, int32(c.fd))
		if ctx.Err() != nil {
			return nil
		}
		nc, err := open()
		if err != nil {
			return err
		}
		send(nc)
		return nil
	}

	loopErr := func() error {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for _, c := range conns {
			send(c)
		}
		events := make([]syscall.EpollEvent, 128)
		buf := make([]byte, 64<<10)
		for ctx.Err() == nil {
			busy := false
			for _, c := range conns {
				busy = busy || c.busy
			}
			if !busy {
				return nil // n calls made
			}
			n, err := syscall.EpollWait(ep, events, 20)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("lean client: epoll_wait: %w", err)
			}
			for _, ev := range events[:n] {
				c := conns[ev.Fd]
				if c == nil {
					continue
				}
				if ev.Events&syscall.EPOLLOUT != 0 && c.written < len(c.out) {
					w, err := syscall.Write(c.fd, c.out[c.written:])
					if err != nil && err != syscall.EAGAIN && err != syscall.EINTR {
						fail(c, fmt.Errorf("write: %w", err))
						if err := reopen(c); err != nil {
							return err
						}
						continue
					}
					c.written += max(w, 0)
					if c.written == len(c.out) {
						ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(c.fd)}
						syscall.EpollCtl(ep, syscall.EPOLL_CTL_MOD, c.fd, &ev)
					}
				}
				if ev.Events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) == 0 {
					continue
				}
				r, err := syscall.Read(c.fd, buf)
				if err == syscall.EAGAIN || err == syscall.EINTR {
					continue
				}
				if err != nil || r == 0 {
					if err == nil {
						err = errors.New("connection closed by the server")
					}
					fail(c, err)
					if err := reopen(c); err != nil {
						return err
					}
					continue
				}
				c.in = append(c.in, buf[:r]...)
				status, used, perr := parseAnswer(c.in)
				if perr == errIncomplete {
					continue
				}
				if perr == nil && len(c.in) != used {
					perr = fmt.Errorf("%d bytes after the answer", len(c.in)-used)
				}
				if perr != nil {
					fail(c, perr)
					if err := reopen(c); err != nil {
						return err
					}
					continue
				}
				if !c.t0.Before(measureFrom) {
					if status == want {
						res.lat.add(time.Since(c.t0))
					} else {
						res.errors++
						res.lastErr = fmt.Errorf("status %d", status)
					}
				}
				c.busy = false
				send(c)
			}
		}
		return nil
	}()
	cancel() // stops the meters if the loop ended early
	meters.Wait()
	res.calls = res.lat.len()
	res.elapsed = time.Since(measureFrom)
	res.serverCores, res.selfCores = server.coresOr(-1), self.coresOr(-1)
	return res, loopErr
}

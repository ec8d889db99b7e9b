package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"time"
)

// leanViewer is one WebSocket client connection of the lean reader: a raw
// socket past the handshake, read with the others from one OS thread
// through epoll (leanRead). It is the viewers' counterpart of the lean HTTP
// client: the fan-out and gens figures measure the server's delivery to
// 1,000 sockets, and 1,000 reader goroutines of coder/websocket cost the
// shared cores as much CPU per token as the server spends.
type leanViewer struct {
	fd   int
	in   []byte // bytes read and not yet parsed: a window of buf
	buf  []byte // in's storage, from its start
	frag []byte // a fragmented message being assembled
}

// fill appends b to the unparsed bytes, first moving them to the front of
// their storage, so that a viewer's buffer is reused read after read.
func (v *leanViewer) fill(b []byte) {
	n := copy(v.buf[:cap(v.buf)], v.in) // overlapping: copy is a memmove
	v.in = append(v.buf[:n], b...)
	v.buf = v.in[:0]
}

// Close closes the socket.
func (v *leanViewer) Close() {
	if v.fd >= 0 {
		syscall.Close(v.fd)
		v.fd = -1
	}
}

// leanWSDial opens a WebSocket to addr (host:port) at path (with its
// query), sends first (each a text message), and reads until ready
// returns true for a text message. The socket is non-blocking on return;
// bytes read past the ready message stay in v.in for leanRead.
func leanWSDial(ctx context.Context, addr, path string, first [][]byte, ready func(msg []byte) bool) (*leanViewer, error) {
	fd, err := leanSocket(ctx, addr)
	if err != nil {
		return nil, err
	}
	v := &leanViewer{fd: fd}
	fail := func(err error) (*leanViewer, error) {
		v.Close()
		return nil, fmt.Errorf("lean websocket %s%s: %w", addr, path, err)
	}
	// The handshake blocks, bounded by the context's deadline.
	if err := syscall.SetNonblock(fd, false); err != nil {
		return fail(err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	tv := syscall.NsecToTimeval(max(time.Until(deadline), time.Millisecond).Nanoseconds())
	for _, opt := range []int{syscall.SO_RCVTIMEO, syscall.SO_SNDTIMEO} {
		if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, opt, &tv); err != nil {
			return fail(err)
		}
	}
	var key [16]byte
	rand.Read(key[:])
	req := fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, addr, base64.StdEncoding.EncodeToString(key[:]))
	if err := writeAll(fd, req); err != nil {
		return fail(err)
	}
	buf := make([]byte, 16<<10)
	for {
		end := bytes.Index(v.in, headerEnd)
		if end >= 0 {
			if !bytes.HasPrefix(v.in, []byte("HTTP/1.1 101 ")) {
				return fail(fmt.Errorf("handshake answered %q", truncate(v.in[:end], 80)))
			}
			v.in = v.in[end+len(headerEnd):]
			break
		}
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			// A socket with a receive timeout answers a signal (the Go
			// runtime's preemption) with EINTR whatever SA_RESTART says.
			continue
		}
		if err != nil || n == 0 {
			return fail(fmt.Errorf("read handshake answer: %v", errOrEOF(err)))
		}
		v.fill(buf[:n])
	}
	sendFirst := func() error {
		for _, m := range first {
			if err := writeAll(fd, appendClientFrame(nil, 0x1, m)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := sendFirst(); err != nil {
		return fail(err)
	}
	// Like dial, say the first messages again when no ready came after
	// helloRetry (counted in helloRetries).
	retry := syscall.NsecToTimeval(helloRetry.Nanoseconds())
	if len(first) > 0 && time.Until(deadline) > helloRetry {
		if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &retry); err != nil {
			return fail(err)
		}
	}
	for {
		msg, more, err := v.next()
		if err != nil {
			return fail(err)
		}
		if msg != nil && ready(msg) {
			break
		}
		if more {
			continue
		}
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN && len(first) > 0 && time.Now().Before(deadline) {
			helloRetries.Add(1)
			if err := sendFirst(); err != nil {
				return fail(err)
			}
			continue
		}
		if err != nil || n == 0 {
			return fail(fmt.Errorf("wait for ready: %v", errOrEOF(err)))
		}
		v.fill(buf[:n])
	}
	var zero syscall.Timeval
	for _, opt := range []int{syscall.SO_RCVTIMEO, syscall.SO_SNDTIMEO} {
		syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, opt, &zero)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		return fail(err)
	}
	return v, nil
}

func errOrEOF(err error) error {
	if err == nil {
		return errors.New("connection closed")
	}
	return err
}

// writeAll writes b to a blocking socket, or retries a non-blocking one
// that is momentarily full (only small control and client messages are
// written here).
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if err == syscall.EAGAIN || err == syscall.EINTR {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		b = b[n:]
	}
	return nil
}

// send writes one text message.
func (v *leanViewer) send(msg []byte) error {
	return writeAll(v.fd, appendClientFrame(nil, 0x1, msg))
}

// appendClientFrame appends a final client frame (masked, as RFC 6455
// requires of clients) of opcode op with payload p.
func appendClientFrame(dst []byte, op byte, p []byte) []byte {
	dst = append(dst, 0x80|op)
	switch n := len(p); {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, p...)
	for i := range p {
		dst[start+i] ^= mask[i&3]
	}
	return dst
}

// errClosedByServer: the server sent a close frame.
var errClosedByServer = errors.New("closed by the server")

// next parses the next frame in v.in. It returns a whole text or binary
// message (aliasing v.in or v.frag, valid until the next call), more =
// true when v.in may hold further frames, or an error. Pings are answered.
func (v *leanViewer) next() (msg []byte, more bool, err error) {
	b := v.in
	if len(b) < 2 {
		return nil, false, nil
	}
	fin, op := b[0]&0x80 != 0, b[0]&0x0f
	if b[1]&0x80 != 0 {
		return nil, false, errors.New("masked frame from the server")
	}
	n, h := int(b[1]&0x7f), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return nil, false, nil
		}
		n, h = int(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return nil, false, nil
		}
		n, h = int(binary.BigEndian.Uint64(b[2:])), 10
	}
	if len(b) < h+n {
		return nil, false, nil
	}
	p := b[h : h+n]
	v.in = b[h+n:]
	switch op {
	case 0x8:
		return nil, false, errClosedByServer
	case 0x9:
		return nil, true, writeAll(v.fd, appendClientFrame(nil, 0xA, p))
	case 0xA:
		return nil, true, nil
	case 0x1, 0x2:
		if fin {
			return p, true, nil
		}
		v.frag = append(v.frag[:0], p...)
		return nil, true, nil
	case 0x0:
		v.frag = append(v.frag, p...)
		if fin {
			return v.frag, true, nil
		}
		return nil, true, nil
	default:
		return nil, false, fmt.Errorf("frame opcode %d", op)
	}
}

// leanRead reads every viewer from one locked OS thread until each is
// finished (onMsg returned true, or its socket failed) or ctx ends. onMsg
// gets viewer i's text and binary messages, with the time the read that
// completed them returned; msg is only valid during the call. onFail is
// called once for a viewer whose socket failed before it finished.
func leanRead(ctx context.Context, viewers []*leanViewer, onMsg func(i int, at time.Time, msg []byte) (finished bool), onFail func(i int, err error)) error {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("lean websocket: epoll: %w", err)
	}
	defer syscall.Close(ep)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	live := 0
	finished := make([]bool, len(viewers))
	finish := func(i int, err error) {
		if finished[i] {
			return
		}
		finished[i] = true
		live--
		syscall.EpollCtl(ep, syscall.EPOLL_CTL_DEL, viewers[i].fd, nil)
		if err != nil {
			onFail(i, err)
		}
	}
	// drain handles every whole message buffered for viewer i.
	drain := func(i int, at time.Time) {
		v := viewers[i]
		for !finished[i] {
			msg, more, err := v.next()
			if err != nil {
				finish(i, err)
				return
			}
			if msg != nil && onMsg(i, at, msg) {
				finish(i, nil)
				return
			}
			if !more {
				break
			}
		}
	}
	for i, v := range viewers {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(i)}
		if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, v.fd, &ev); err != nil {
			return fmt.Errorf("lean websocket: epoll_ctl: %w", err)
		}
		live++
	}
	now := time.Now()
	for i := range viewers {
		drain(i, now) // what the handshake read past ready
	}
	events := make([]syscall.EpollEvent, 256)
	buf := make([]byte, 256<<10)
	for live > 0 && ctx.Err() == nil {
		n, err := syscall.EpollWait(ep, events, 20)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("lean websocket: epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			i := int(ev.Fd)
			if finished[i] {
				continue
			}
			v := viewers[i]
			r, err := syscall.Read(v.fd, buf)
			at := time.Now()
			if err == syscall.EAGAIN || err == syscall.EINTR {
				continue
			}
			if err != nil || r == 0 {
				finish(i, errOrEOF(err))
				continue
			}
			v.fill(buf[:r])
			drain(i, at)
		}
	}
	return nil
}

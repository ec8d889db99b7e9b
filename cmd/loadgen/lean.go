package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
)

// The lean client is loadgen's second HTTP client, for the closed loops of
// post-turns: the loopback counterpart of a load generator written in C.
// One OS thread drives every connection through epoll; requests are built
// into reused buffers, answers parsed in place; no goroutine, header map or
// body wrapper per call.
//
// It exists because loadgen shares two cores with the server: Go's
// net/http client spends ~50 µs of CPU per call here, which the server then
// lacks. post-turns reports both clients side by side, so the difference
// stays visible. The lean client speaks only what sessiond answers: a
// status line, headers and a Content-Length body. It is Linux-only
// (lean_linux.go).

// leanAddr returns the host:port of base (http://host:port).
func leanAddr(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return "", fmt.Errorf("lean client: %q is not an http://host:port address", base)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return "", fmt.Errorf("lean client: %q: %w", base, err)
	}
	return u.Host, nil
}

// appendRequest appends an HTTP/1.1 request with a JSON body (nil for
// none) to dst.
func appendRequest(dst []byte, method, host, path string, body []byte) []byte {
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	if body != nil {
		dst = append(dst, "\r\nContent-Type: application/json\r\nContent-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(body)), 10)
	}
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, body...)
}

var (
	headerEnd     = []byte("\r\n\r\n")
	contentLength = []byte("\r\ncontent-length:")
)

// errIncomplete: the bytes so far are not yet a whole answer.
var errIncomplete = errors.New("incomplete answer")

// parseAnswer reads one whole HTTP/1.1 answer from the start of b and
// returns its status and length in b, or errIncomplete when b holds only
// part of it. Answers must carry Content-Length (sessiond's JSON answers
// do; a chunked one is an error here).
func parseAnswer(b []byte) (status, n int, err error) {
	end := bytes.Index(b, headerEnd)
	if end < 0 {
		if len(b) > 64<<10 {
			return 0, 0, errors.New("answer header over 64 KiB")
		}
		return 0, 0, errIncomplete
	}
	// "HTTP/1.1 201 Created\r\n"
	if end < 12 || !bytes.HasPrefix(b, []byte("HTTP/1.")) || b[8] != ' ' {
		return 0, 0, fmt.Errorf("bad status line %q", truncate(b[:min(end, 40)], 40))
	}
	status, err = strconv.Atoi(string(b[9:12]))
	if err != nil {
		return 0, 0, fmt.Errorf("bad status line %q", truncate(b[:min(end, 40)], 40))
	}
	head := b[:end+2] // through the last header's CRLF
	i := indexFold(head, contentLength)
	if i < 0 {
		return 0, 0, fmt.Errorf("answer %d without Content-Length", status)
	}
	v := head[i+len(contentLength):]
	v = v[:bytes.IndexByte(v, '\r')]
	length, err := strconv.Atoi(string(bytes.TrimSpace(v)))
	if err != nil || length < 0 {
		return 0, 0, fmt.Errorf("bad Content-Length %q", v)
	}
	n = end + len(headerEnd) + length
	if len(b) < n {
		return 0, 0, errIncomplete
	}
	return status, n, nil
}

// indexFold is bytes.Index, ASCII case-insensitive; sep is lower case.
func indexFold(s, sep []byte) int {
	for i := 0; i+len(sep) <= len(s); i++ {
		j := 0
		for ; j < len(sep); j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != sep[j] {
				break
			}
		}
		if j == len(sep) {
			return i
		}
	}
	return -1
}

// leanRequest builds call i's request to host (its Host header) into dst,
// appending.
type leanRequest func(dst []byte, host string, i int) []byte

// runLeanLoop is runLoop with the lean client: spec.conns connections to
// base, each making call after call (built by req) until spec.n calls were
// started or spec.duration passed. An answer other than want counts as an
// error.
func runLeanLoop(ctx context.Context, spec loopSpec, base string, want int, req leanRequest) (*loopResult, error) {
	addr, err := leanAddr(base)
	if err != nil {
		return nil, err
	}
	return runEpoll(ctx, spec, addr, want, req)
}

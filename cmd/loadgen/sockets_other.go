//go:build !linux

package main

import (
	"context"
	"errors"
)

func socketFloorCase(ctx context.Context, n, tokens int, rate float64, mode string) (row, error) {
	return row{}, errors.New("-sockets needs Linux (epoll, io_uring)")
}

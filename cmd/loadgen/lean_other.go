//go:build !linux

package main

import (
	"context"
	"errors"
)

func runEpoll(ctx context.Context, spec loopSpec, addr string, want int, req leanRequest) (*loopResult, error) {
	return nil, errors.New("the lean client (-client lean) needs Linux's epoll; use -client std")
}

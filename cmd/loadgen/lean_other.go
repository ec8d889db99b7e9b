//go:build !linux

package main

import (
	"context"
	"errors"
	"time"
)

// The lean clients use Linux's epoll; elsewhere -client lean fails with
// errLeanLinux.
var errLeanLinux = errors.New("the lean clients (-client lean) need Linux's epoll; use -client std")

func runEpoll(ctx context.Context, spec loopSpec, addr string, want int, req leanRequest) (*loopResult, error) {
	return nil, errLeanLinux
}

type leanViewer struct{}

func (v *leanViewer) Close() {}

func (v *leanViewer) send(msg []byte) error { return errLeanLinux }

func leanWSDial(ctx context.Context, addr, path string, first [][]byte, ready func(msg []byte) bool) (*leanViewer, error) {
	return nil, errLeanLinux
}

func leanRead(ctx context.Context, viewers []*leanViewer, onMsg func(i int, at time.Time, msg []byte) (finished bool), onFail func(i int, err error)) error {
	return errLeanLinux
}

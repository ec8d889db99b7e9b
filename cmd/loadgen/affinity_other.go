//go:build !linux

package main

import (
	"errors"
	"os/exec"
)

var errPinLinux = errors.New("-pin needs Linux's sched_setaffinity")

func pinProcess(cpus []int) error { return errPinLinux }

func startOn(cmd *exec.Cmd, cpus []int) error {
	if len(cpus) > 0 {
		return errPinLinux
	}
	return cmd.Start()
}

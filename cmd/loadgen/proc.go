package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100
// on every Linux ABI Go supports).
const userHZ = 100

// errNoPID is returned by the /proc readers when the server's pid is
// unknown (-url without -pid).
var errNoPID = errors.New("the server's pid is unknown: use -spawn, or -url with -pid")

// cpuTime returns the user plus system CPU time process pid has used.
func cpuTime(pid int) (time.Duration, error) {
	if pid <= 0 {
		return 0, errNoPID
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after its ')'
	// start at field 3 (state). utime and stime are fields 14 and 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// rssKiB returns VmRSS of process pid in KiB.
func rssKiB(pid int) (int64, error) {
	if pid <= 0 {
		return 0, errNoPID
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d", &kb); err != nil {
				return 0, err
			}
			return kb, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// openFDs counts the open file descriptors of process pid (-1 if unknown).
func openFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// cpuMeter measures the CPU a process uses over a window, in cores.
type cpuMeter struct {
	pid  int
	cpu0 time.Duration
	at0  time.Time
}

func startCPU(pid int) (*cpuMeter, error) {
	c, err := cpuTime(pid)
	if err != nil {
		return nil, err
	}
	return &cpuMeter{pid: pid, cpu0: c, at0: time.Now()}, nil
}

// cores is the CPU used since start divided by the wall time since start.
func (m *cpuMeter) cores() (float64, error) {
	c, err := cpuTime(m.pid)
	if err != nil {
		return 0, err
	}
	return (c - m.cpu0).Seconds() / time.Since(m.at0).Seconds(), nil
}

// coresOr is cores(), or def for a nil meter or a failed reading.
func (m *cpuMeter) coresOr(def float64) float64 {
	if m == nil {
		return def
	}
	c, err := m.cores()
	if err != nil {
		return def
	}
	return c
}

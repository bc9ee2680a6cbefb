package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The tool shares the machine with the broker it measures, so a run reports
// the CPU both spent over the send window: what a message costs each side,
// and how much of the machine the tool itself took.

// clockTick is Linux's USER_HZ, the unit of /proc/PID/stat times: 100 on
// every architecture Go supports there (it is part of the kernel ABI).
const clockTick = 10 * time.Millisecond

// procCPU is the user+system CPU time process pid has used so far (Linux).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields that follow start after its last ')'. utime and stime are
	// fields 14 and 15 of proc(5), so 11 and 12 after the state (3).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// selfCPU is the user+system CPU time this process has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter reads the broker's (when its pid is known) and the tool's CPU.
type cpuMeter struct {
	pids        []int
	broker, own time.Duration
	brokerErr   error
}

// brokerCPU is the CPU the broker processes pids (0s ignored) have used.
func brokerCPU(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		if pid > 0 {
			d, err := procCPU(pid)
			if err != nil {
				return 0, err
			}
			sum += d
		}
	}
	return sum, nil
}

func startCPU(pids ...int) *cpuMeter {
	m := &cpuMeter{own: selfCPU()}
	for _, pid := range pids {
		if pid > 0 {
			m.pids = append(m.pids, pid)
		}
	}
	if len(m.pids) > 0 {
		m.broker, m.brokerErr = brokerCPU(m.pids)
	}
	return m
}

// stop fills res's CPU figures for the window since startCPU.
func (m *cpuMeter) stop(res *Result) {
	per := func(d time.Duration) float64 {
		if res.Delivered == 0 {
			return 0
		}
		return float64(d.Microseconds()) / float64(res.Delivered)
	}
	own := selfCPU() - m.own
	res.ToolCPUSecs, res.ToolCPUPerMsg = own.Seconds(), per(own)
	if len(m.pids) > 0 && m.brokerErr == nil {
		if now, err := brokerCPU(m.pids); err == nil {
			d := now - m.broker
			res.BrokerCPUSecs, res.BrokerCPUPerMsg = d.Seconds(), per(d)
		}
	}
}

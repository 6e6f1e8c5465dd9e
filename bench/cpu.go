package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is USER_HZ, the unit of /proc's CPU times: 100 on every Linux architecture Go
// supports.
const clockTick = 10 * time.Millisecond

// cpuSnap is a reading of where the machine's CPU time has gone so far: this process (the
// simulator and the baselines run in it), the local PostgreSQL server's processes (including
// the backends it has reaped), and the machine as a whole.
type cpuSnap struct {
	self, pg, busy time.Duration
}

func readCPU() cpuSnap {
	var s cpuSnap
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	s.pg = postgresCPU()
	s.busy = machineBusy()
	return s
}

// cpuDelta is the CPU time spent between two readings, split by owner; other is what the rest
// of the machine spent (a noisy neighbour), given the child's own time.
type cpuDelta struct {
	self, pg, busy time.Duration
}

func (a cpuSnap) to(b cpuSnap) cpuDelta {
	return cpuDelta{self: b.self - a.self, pg: b.pg - a.pg, busy: b.busy - a.busy}
}

// other is the machine's busy time not spent by this process, PostgreSQL or child.
func (d cpuDelta) other(child time.Duration) time.Duration {
	return max(0, d.busy-d.self-d.pg-child)
}

// postgresCPU sums user and system time of every process named postgres, with the time of
// their reaped children (the postmaster's reaped backends), from /proc. 0 when PostgreSQL does
// not run on this machine.
func postgresCPU() time.Duration {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	var ticks int64
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if lp < 0 || rp < lp || s[lp+1:rp] != "postgres" {
			continue
		}
		f := strings.Fields(s[rp+1:])
		// After the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
		if len(f) < 15 {
			continue
		}
		for _, i := range []int{11, 12, 13, 14} {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += v
		}
	}
	return time.Duration(ticks) * clockTick
}

// machineBusy is every CPU's non-idle time since boot, from /proc/stat.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	// user nice system idle iowait irq softirq steal ...
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest times are in user already
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * clockTick
}

// loadAvg is the 1-minute load average, to show how busy the machine was.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// vmHWM is a process's VmHWM from its /proc status file (path), in bytes: the peak resident set
// of its own memory since its exec; 0 if it cannot be read (the process has ended).
func vmHWM(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kib << 10
		}
	}
	return 0
}

// watchPeakRSS reads process pid's VmHWM every 10 ms until the returned function is called,
// after the process was waited for; that function returns the highest reading in bytes (0 if
// none). The rusage's Maxrss would not do: Go starts children with clone(CLONE_VM|CLONE_VFORK),
// so the kernel carries the parent's peak RSS at the exec over into the child's maxrss, and a
// child of this test process (race detector and all) would report this process's RSS. The
// memory of the imports and exports measured here is flat for seconds, so a 10 ms poll does not
// miss its peak.
func watchPeakRSS(pid int) func() int64 {
	path := fmt.Sprintf("/proc/%d/status", pid)
	var peak atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if v := vmHWM(path); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-done
		return peak.Load()
	}
}

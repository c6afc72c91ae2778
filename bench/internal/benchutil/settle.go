package benchutil

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Settle returns once the machine's CPUs have been mostly idle (under 20 %
// busy) for two samples of 250 ms in a row, or after max. Removing many
// network namespaces leaves the kernel tearing them down in the background
// (cleanup_net) for seconds: a scenario started meanwhile would measure
// that work, not the plugins. It returns how long it waited.
func Settle(ctx context.Context, max time.Duration) time.Duration {
	start := time.Now()
	quiet := 0
	prevBusy, prevTotal, err := cpuTimes()
	for err == nil && time.Since(start) < max && quiet < 2 {
		select {
		case <-ctx.Done():
			return time.Since(start)
		case <-time.After(250 * time.Millisecond):
		}
		busy, total, e := cpuTimes()
		if e != nil {
			break
		}
		if total > prevTotal && float64(busy-prevBusy)/float64(total-prevTotal) < 0.20 {
			quiet++
		} else {
			quiet = 0
		}
		prevBusy, prevTotal = busy, total
	}
	return time.Since(start)
}

// cpuTimes reads the busy and total jiffies of all CPUs from /proc/stat.
func cpuTimes() (busy, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
		total += v
		// user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return busy, total, nil
}

package bench

// Formatting of the figures, for the reports that shmlane bench prints.

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

// SpreadWarning is the warning for a row whose rounds disagree by more
// than SpreadLimit on its headline figure, "" for one whose rounds
// agree or that ran once.
func SpreadWarning(r Result) string {
	if r.RoundsSpread == nil || *r.RoundsSpread <= SpreadLimit || len(r.RoundsRange) != 2 {
		return ""
	}
	lo, hi := r.RoundsRange[0], r.RoundsRange[1]
	figure := fmt.Sprintf("msgs/s %s..%s", FormatRate(lo), FormatRate(hi))
	if r.RTTP50 != nil {
		name := "p50"
		if r.Mode == ModePingpong {
			name = "p50 RTT"
		}
		figure = fmt.Sprintf("%s %s..%s", name, FormatLatency(int64(lo)), FormatLatency(int64(hi)))
	}
	return fmt.Sprintf("warning: %s %s %s: rounds disagree %.1fx (%s): the machine is noisy or the case is bimodal",
		r.Mode, FormatSize(r.Size), r.Transport, *r.RoundsSpread, figure)
}

// Machine describes the host for the table's header.
func Machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := runtime.GOOS
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = "Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d CPUs (GOMAXPROCS %d), %s, %s, %s %s/%s", runtime.NumCPU(), runtime.GOMAXPROCS(0), model, kernel, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// FormatRate formats a rate with a metric prefix.
func FormatRate(x float64) string {
	switch {
	case x >= 1e9:
		return fmt.Sprintf("%.2fG", x/1e9)
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

// FormatLatency formats a latency in nanoseconds: in microseconds below
// a millisecond, in milliseconds below a second, in seconds above.
func FormatLatency(ns int64) string {
	switch {
	case ns < 1e6:
		return fmt.Sprintf("%.2fµs", float64(ns)/1e3)
	case ns < 1e9:
		return fmt.Sprintf("%.2fms", float64(ns)/1e6)
	}
	return fmt.Sprintf("%.2fs", float64(ns)/1e9)
}

// FormatSize formats a byte count, with a binary suffix when exact.
func FormatSize(n int) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// FormatPerMsg formats a syscalls-per-message figure, "-" when unmeasured.
func FormatPerMsg(x *float64) string {
	switch {
	case x == nil:
		return "-"
	case *x == 0:
		return "0"
	case *x < 0.01:
		return fmt.Sprintf("%.1e", *x)
	default:
		return fmt.Sprintf("%.2f", *x)
	}
}

package bench

// Latencies: the round trips of pingpong, the events of the out-of-band
// modes and the hub's wakes, each recorded as it is measured into an
// HdrHistogram instead of kept as samples: the memory is fixed whatever
// the rate, and a quantile comes out within 0.1% of the value recorded.

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// The range and precision of a latency histogram: 1 ns to 10 s, three
// significant digits. A latency past maxLatency is recorded as
// maxLatency.
const (
	maxLatency    = 10 * time.Second
	latencyDigits = 3
)

// latencies is a histogram of latencies in nanoseconds. It is not safe
// for concurrent use; see syncLatencies.
type latencies struct{ h *hdrhistogram.Histogram }

// newLatencies returns an empty histogram whose counts have all been
// written once, so that recording faults in no page inside a case's
// timed loop.
func newLatencies() *latencies {
	h := hdrhistogram.New(1, int64(maxLatency), latencyDigits)
	h.Reset()
	return &latencies{h: h}
}

// record adds a latency of d, clamped to [0, maxLatency]: in that range
// RecordValue cannot fail.
func (l *latencies) record(d time.Duration) {
	l.h.RecordValue(int64(min(max(d, 0), maxLatency)))
}

// count is how many latencies were recorded.
func (l *latencies) count() int64 { return l.h.TotalCount() }

// latencySummary is what a report shows of a histogram, in nanoseconds:
// each value is the highest of those the histogram cannot tell from the
// one at that rank.
type latencySummary struct {
	P50  int64 `json:"p50"`
	P99  int64 `json:"p99"`
	P999 int64 `json:"p999"`
	Max  int64 `json:"max"`
}

// summary returns the median, the 99th and 99.9th percentiles and the
// maximum; nil when nothing was recorded.
func (l *latencies) summary() *latencySummary {
	if l == nil || l.h.TotalCount() == 0 {
		return nil
	}
	return &latencySummary{
		P50:  l.h.ValueAtQuantile(50),
		P99:  l.h.ValueAtQuantile(99),
		P999: l.h.ValueAtQuantile(99.9),
		Max:  l.h.Max(),
	}
}

// syncLatencies is a latency histogram that goroutines record into at
// once (the hub server's connections).
type syncLatencies struct {
	mu sync.Mutex
	l  *latencies
}

// record adds a latency of d.
func (s *syncLatencies) record(d time.Duration) {
	s.mu.Lock()
	s.l.record(d)
	s.mu.Unlock()
}

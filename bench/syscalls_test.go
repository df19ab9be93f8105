package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shmlane/shmlane/tracing"
)

// One eBPF probe for the test binary, started when first needed.
var probe struct {
	once sync.Once
	p    *tracing.Probe
	err  error
}

func syscallProbe() (*tracing.Probe, error) {
	probe.once.Do(func() { probe.p, probe.err = tracing.Start(nil) })
	return probe.p, probe.err
}

// watchSyscalls starts counting the system calls of both processes of a
// cross-process link. The function it returns ends the window, to be
// called right after the b.Loop loop (before the link is closed and the
// child exits); the function that one returns reports, per message,
// "producer-syscalls/op": this process, the test binary, every thread of
// it (the b.Loop goroutine and the runtime's, and whatever else the
// testing package runs meanwhile), less the probe's own bpf(2) calls; and
// "consumer-syscalls/op": the child. Nothing is reported for an
// in-process link or where the probe cannot run.
func watchSyscalls(b *testing.B, l *link) (endWindow func() (report func(msgs uint64))) {
	none := func() func(uint64) { return func(uint64) {} }
	p, err := syscallProbe()
	if err != nil || l.pid == os.Getpid() {
		return none
	}
	self := os.Getpid()
	if p.Watch(self) != nil || p.Watch(l.pid) != nil {
		return none
	}
	before, err := p.Snapshot()
	if err != nil {
		return none
	}
	return func() func(uint64) {
		after, err := p.Snapshot()
		p.Unwatch(l.pid)
		if err != nil {
			return func(uint64) {}
		}
		d := after.Sub(before)
		return func(msgs uint64) {
			if msgs == 0 {
				return
			}
			b.ReportMetric(float64(workSyscalls(d, self))/float64(msgs), "producer-syscalls/op")
			b.ReportMetric(float64(workSyscalls(d, l.pid))/float64(msgs), "consumer-syscalls/op")
		}
	}
}

// workSyscalls is the number of system calls d counted for pid, less, for
// this process, its bpf(2) calls: the probe's Snapshot reading its maps at
// the two ends of the window.
func workSyscalls(d tracing.Counts, pid int) uint64 {
	n := d.Total(pid)
	if pid == os.Getpid() {
		for nr, k := range d.ByPID[pid].BySyscall {
			if tracing.SyscallName(nr) == "bpf" {
				n -= k
			}
		}
	}
	return n
}

// TestSyscallFree streams 64-byte messages from this process to a child at
// saturation for about a second and counts each side's system calls during
// that window with the eBPF probe: through the SPSC ring (SendBatch of 32
// here, RecvBatch in the child) each side must make fewer than one per
// 1,000 messages; through a pipe (one write per message, one read per
// message) at least one per message.
func TestSyscallFree(t *testing.T) {
	p, err := syscallProbe()
	if errors.Is(err, tracing.ErrPermission) || errors.Is(err, tracing.ErrNotSupported) {
		t.Skipf("skipping: the eBPF probe cannot run here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	const (
		size     = 64
		batchLen = 32
		warmUp   = 50 * time.Millisecond
		window   = time.Second
	)
	for _, tc := range []struct {
		name    string
		newLink func(testing.TB, int) *link
		ok      func(perMsg float64) bool
		want    string
	}{
		{"ring", ringCrossProcess, func(x float64) bool { return x < 0.001 }, "< 0.001"},
		{"pipe", pipeCrossProcess, func(x float64) bool { return x >= 1 }, ">= 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.newLink(t, size)
			self := os.Getpid()
			for _, pid := range []int{self, l.pid} {
				if err := p.Watch(pid); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() { p.Unwatch(l.pid) })
			batch := make([][]byte, batchLen)
			for i := range batch {
				batch[i] = make([]byte, size)
			}
			var seq uint64
			// stream sends until the clock passes end, in batches of
			// batchLen (the ring: one SendBatch; the pipe: a write each),
			// and returns how many messages it sent.
			stream := func(end time.Time) uint64 {
				start := seq
				for time.Now().Before(end) {
					for i, m := range batch {
						binary.LittleEndian.PutUint64(m, seq+uint64(i))
					}
					if l.sendBatch != nil {
						n, err := l.sendBatch(batch)
						seq += uint64(n)
						if err != nil {
							t.Fatalf("send message %d: %v", seq, err)
						}
						continue
					}
					for _, m := range batch {
						if err := l.send(m); err != nil {
							t.Fatalf("send message %d: %v", seq, err)
						}
						seq++
					}
				}
				return seq - start
			}
			// Warm up outside the window: pages touched, the child's
			// consumer running.
			stream(time.Now().Add(warmUp))
			before, err := p.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			n := stream(time.Now().Add(window))
			after, err := p.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			got, err := l.finish()
			if err != nil || got != seq {
				t.Fatalf("consumer received %d messages (%v), want %d", got, err, seq)
			}
			d := after.Sub(before)
			for _, side := range []struct {
				name string
				pid  int
			}{{"producer (this process)", self}, {"consumer (child)", l.pid}} {
				calls := workSyscalls(d, side.pid)
				per := float64(calls) / float64(n)
				note := ""
				if side.pid == self {
					note = " (bpf: the probe's own, not counted)"
				}
				t.Logf("%s %s: %d system calls for %d messages in %v (%.2g per message):%s%s", tc.name, side.name, calls, n, window, per, syscallTable(d, side.pid), note)
				if !tc.ok(per) {
					t.Errorf("%s %s: %.3g system calls per message, want %s", tc.name, side.name, per, tc.want)
				}
			}
		})
	}
}

// syscallTable lists a process's system calls by name, most frequent
// first.
func syscallTable(c tracing.Counts, pid int) string {
	var b strings.Builder
	for _, s := range c.ByPID[pid].Sorted() {
		fmt.Fprintf(&b, " %s=%d", tracing.SyscallName(s.Nr), s.Count)
	}
	return b.String()
}

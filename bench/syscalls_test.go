package bench

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shmlane/shmlane/tracing"
)

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
		t    *Transport
		ok   func(perMsg float64) bool
		want string
	}{
		{ringTransport, func(x float64) bool { return x < 0.001 }, "< 0.001"},
		{pipeTransport, func(x float64) bool { return x >= 1 }, ">= 1"},
	} {
		t.Run(tc.t.Name, func(t *testing.T) {
			l := openLink(t, tc.t, size, false)
			self, child := os.Getpid(), l.lc.peer.pid()
			for _, pid := range []int{self, child} {
				if err := p.Watch(pid); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() { p.Unwatch(child) })
			bs, _ := l.s.(batchSender)
			batch := newBatch(batchLen, size)
			var seq uint64
			// stream sends until the clock passes end, in batches of
			// batchLen (the ring: one SendBatch; the pipe: a write each),
			// and returns how many messages it sent.
			stream := func(end time.Time) uint64 {
				start := seq
				for time.Now().Before(end) {
					stampBatch(batch, seq, 0)
					if bs != nil {
						n, err := bs.SendBatch(batch)
						seq += uint64(n)
						if err != nil {
							t.Fatalf("send message %d: %v", seq, err)
						}
						continue
					}
					for _, m := range batch {
						if err := l.s.Send(m); err != nil {
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
			if err := l.finish(seq); err != nil {
				t.Fatal(err)
			}
			d := after.Sub(before)
			for _, side := range []struct {
				name string
				pid  int
			}{{"producer (this process)", self}, {"consumer (child)", child}} {
				calls := sideSyscalls(d, []int{side.pid})
				per := float64(calls) / float64(n)
				note := ""
				if side.pid == self {
					note = " (bpf: the probe's own, not counted)"
				}
				t.Logf("%s %s: %d system calls for %d messages in %v (%.2g per message):%s%s", tc.t.Name, side.name, calls, n, window, per, syscallTable(d, side.pid), note)
				if !tc.ok(per) {
					t.Errorf("%s %s: %.3g system calls per message, want %s", tc.t.Name, side.name, per, tc.want)
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

package bench

import (
	"errors"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

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
// cross-process link; the function it returns reports them per message as
// "producer-syscalls/op" (this process: the test binary, all its threads)
// and "consumer-syscalls/op" (the child). It does nothing for an
// in-process link or where the probe cannot run.
func watchSyscalls(b *testing.B, l *link) func(msgs uint64) {
	p, err := syscallProbe()
	if err != nil || l.pid == os.Getpid() {
		return func(uint64) {}
	}
	self := os.Getpid()
	if p.Watch(self) != nil || p.Watch(l.pid) != nil {
		return func(uint64) {}
	}
	before, err := p.Snapshot()
	if err != nil {
		return func(uint64) {}
	}
	return func(msgs uint64) {
		after, err := p.Snapshot()
		p.Unwatch(l.pid)
		if err != nil || msgs == 0 {
			return
		}
		d := after.Sub(before)
		b.ReportMetric(float64(d.Total(self))/float64(msgs), "producer-syscalls/op")
		b.ReportMetric(float64(d.Total(l.pid))/float64(msgs), "consumer-syscalls/op")
	}
}

// TestSyscallFree streams 64-byte messages between two processes at
// saturation and counts each side's system calls with the eBPF probe: the
// ring must make fewer than one per 1,000 messages on each side, a pipe at
// least one per message on each side.
func TestSyscallFree(t *testing.T) {
	p, err := syscallProbe()
	if errors.Is(err, tracing.ErrPermission) || errors.Is(err, tracing.ErrNotSupported) {
		t.Skipf("skipping: the eBPF probe cannot run here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	const msgs = 2_000_000
	for _, tc := range []struct {
		name    string
		newLink func(testing.TB, int) *link
		check   func(perMsg float64) bool
		want    string
	}{
		{"ring", ringCrossProcess, func(x float64) bool { return x < 0.001 }, "< 0.001"},
		// The consumer side of a pipe may still have up to a pipe buffer
		// (64 KiB: 1,024 of these messages, 0.5% of the window's) to read
		// when the window closes; its reads of them fall after the window.
		{"pipe", pipeCrossProcess, func(x float64) bool { return x >= 0.99 }, ">= 0.99 (one read per message, less what the pipe still buffers)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := uint64(msgs)
			if tc.name == "pipe" {
				n = 200_000 // about a second through a pipe
			}
			l := tc.newLink(t, 64)
			self := os.Getpid()
			if err := p.Watch(self); err != nil {
				t.Fatal(err)
			}
			if err := p.Watch(l.pid); err != nil {
				t.Fatal(err)
			}
			msg := make([]byte, 64)
			// Warm up (first pages touched, goroutines started) outside the
			// window.
			var seq uint64
			send := func(k uint64) {
				for end := seq + k; seq < end; seq++ {
					msg[0], msg[1], msg[2], msg[3] = byte(seq), byte(seq>>8), byte(seq>>16), byte(seq>>24)
					msg[4], msg[5], msg[6], msg[7] = byte(seq>>32), byte(seq>>40), byte(seq>>48), byte(seq>>56)
					if err := l.send(msg); err != nil {
						t.Fatalf("send message %d: %v", seq, err)
					}
				}
			}
			send(10_000)
			before, err := p.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			send(n)
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
			}{{"producer", self}, {"consumer", l.pid}} {
				per := float64(d.Total(side.pid)) / float64(n)
				if tc.name == "pipe" && side.name == "producer" && per < 1 {
					t.Errorf("pipe producer: %.3g system calls per message, want >= 1 (one write each)", per)
				}
				t.Logf("%s %s: %d system calls for %d messages (%.2g per message): %s", tc.name, side.name, d.Total(side.pid), n, per, syscallTable(d, side.pid))
				if !tc.check(per) {
					t.Errorf("%s %s: %.3g system calls per message, want %s", tc.name, side.name, per, tc.want)
				}
			}
		})
	}
}

// syscallTable lists a process's system calls by name, most frequent
// first.
func syscallTable(c tracing.Counts, pid int) string {
	pc := c.ByPID[pid]
	type kv struct {
		name string
		n    uint64
	}
	var rows []kv
	for nr, n := range pc.BySyscall {
		rows = append(rows, kv{tracing.SyscallName(nr), n})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].n > rows[j].n })
	var b strings.Builder
	for i, r := range rows {
		if i == 6 {
			b.WriteString(" ...")
			break
		}
		b.WriteString(" " + r.name + "=" + itoaU(r.n))
	}
	return b.String()
}

func itoaU(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

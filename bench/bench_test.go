package bench

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/shmlane/shmlane/ring"
)

// TestMain lets the test binary be the harness's peers: they are copies of
// it, started with SHMLANE_BENCH_PEER set.
func TestMain(m *testing.M) {
	RunPeerIfChild()
	os.Exit(m.Run())
}

// sizes are the message sizes of every benchmark, in bytes (at least 8:
// each message carries its whole sequence number).
var sizes = []int{8, 64, 1024, 65536}

// capacity is the ring's data area: its MaxMessage must carry the largest
// size.
const capacity = 1 << 20

// A testLink is a stream case of the harness, set up: this process sends on
// its end, and the consumer (a peer process, or a goroutine for an
// in-process link) checks every message.
type testLink struct {
	lc *linkCase
	s  sender
	// check, if set, checks the consumer's report further.
	check func(rep peerReport, sent uint64) error
}

// links are the benchmarks' links, by name.
var links = []struct {
	name      string
	t         *Transport
	inProcess bool
}{
	{"RingCrossProcess", ringTransport, false},
	{"RingInProcess", ringTransport, true},
	{"PipeCrossProcess", pipeTransport, false},
}

func BenchmarkRingCrossProcess(b *testing.B) { forSizes(b, links[0].t, links[0].inProcess) }
func BenchmarkRingInProcess(b *testing.B)    { forSizes(b, links[1].t, links[1].inProcess) }
func BenchmarkPipeCrossProcess(b *testing.B) { forSizes(b, links[2].t, links[2].inProcess) }

// openLink sets up a stream of messages of size bytes over t, with one
// Send a message; the case ends when tb does.
func openLink(tb testing.TB, t *Transport, size int, inProcess bool) *testLink {
	tb.Helper()
	c := &caseSpec{
		transport: t, mode: ModeStream, size: size, capacity: capacity, batch: 1, producers: 1, consumers: 1,
		inProcess: inProcess,
		// The loop is the test's; the duration only bounds the case (see
		// limit), far beyond any benchmark.
		duration: time.Hour,
	}
	lc := &linkCase{c: c, role: roleStream}
	tb.Cleanup(func() { lc.close() })
	if err := lc.setup(); err != nil {
		tb.Fatalf("set up %s: %v", t.Name, err)
	}
	return &testLink{lc: lc, s: lc.l.local.s}
}

// finish closes the producing side after sent messages, waits for the
// consumer to reach the end of the stream and checks its report: every
// message arrived, intact and in order.
func (l *testLink) finish(sent uint64) error {
	l.s.Close()
	rep, err := l.lc.awaitCount("consumer received", sent)
	if err == nil && l.check != nil {
		err = l.check(rep, sent)
	}
	return err
}

// forSizes runs the benchmark of t at every size.
func forSizes(b *testing.B, t *Transport, inProcess bool) {
	for _, size := range sizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			benchLink(b, size, openLink(b, t, size, inProcess))
		})
	}
}

// benchLink sends one message per b.Loop iteration, then closes the
// producing side and checks that the consumer received every message
// intact. The consumer's draining of what the transport still buffers when
// the loop ends is timed too: the figure is the rate at which messages
// reach the consumer, not the rate at which the producer fills a buffer.
//
// Run as root (or with CAP_BPF and CAP_PERFMON), a cross-process link also
// reports per message, over the b.Loop loop, "producer-syscalls/op": this
// process, the test binary, every thread of it (the b.Loop goroutine and
// the runtime's, and whatever else the testing package runs meanwhile),
// less the probe's own bpf(2) calls; and "consumer-syscalls/op": the
// child.
func benchLink(b *testing.B, size int, l *testLink) {
	b.SetBytes(int64(size))
	b.ReportAllocs()
	msg := payload(size)
	var seq uint64
	w := &window{c: l.lc.c, pids: l.lc.pids()}
	w.open()
	for b.Loop() {
		stamp(msg, seq)
		if err := l.s.Send(msg); err != nil {
			b.Fatalf("send message %d: %v", seq, err)
		}
		seq++
	}
	w.close(seq)
	b.StartTimer()
	err := l.finish(seq)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	var r Result
	w.apply(&r)
	if sc := r.SyscallsPerMsg; sc.Producer != nil && !l.lc.c.inProcess {
		b.ReportMetric(*sc.Producer, "producer-syscalls/op")
		b.ReportMetric(*sc.Consumer, "consumer-syscalls/op")
	}
}

// TestLinks runs every benchmark's link briefly: the cross-process
// plumbing and the consumers' checks work without -bench.
func TestLinks(t *testing.T) {
	if m := ring.MaxMessage(capacity); m < slices.Max(sizes) {
		t.Fatalf("ring.MaxMessage(%d) = %d, want at least %d", capacity, m, slices.Max(sizes))
	}
	for _, tc := range links {
		for _, size := range []int{8, 65536} {
			t.Run(fmt.Sprintf("%s/size=%d", tc.name, size), func(t *testing.T) {
				l := openLink(t, tc.t, size, tc.inProcess)
				if self, pid := os.Getpid(), l.lc.peer.pid(); (pid == self) != tc.inProcess {
					t.Fatalf("consumer's pid %d, this process's %d: want the same only in process", pid, self)
				}
				const n = 1000
				msg := make([]byte, size)
				for seq := range uint64(n) {
					stamp(msg, seq)
					if err := l.s.Send(msg); err != nil {
						t.Fatalf("send message %d: %v", seq, err)
					}
				}
				if err := l.finish(n); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestLinksCatchBadMessages checks that every consumer reports a message
// out of sequence instead of counting it.
func TestLinksCatchBadMessages(t *testing.T) {
	for _, tc := range links {
		t.Run(tc.name, func(t *testing.T) {
			l := openLink(t, tc.t, 64, tc.inProcess)
			msg := make([]byte, 64)
			for _, seq := range []uint64{0, 1, 3} {
				stamp(msg, seq)
				if err := l.s.Send(msg); err != nil {
					t.Fatalf("send message %d: %v", seq, err)
				}
			}
			if err := l.finish(3); err == nil {
				t.Fatal("finish(3) = nil; want an error for message 2 carrying sequence number 3")
			} else {
				t.Log(err)
			}
		})
	}
}

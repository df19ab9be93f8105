package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/shmlane/shmlane/ring"
)

// sizes are the message sizes of every benchmark, in bytes (at least 8:
// each message carries its sequence number).
var sizes = []int{8, 64, 1024, 65536}

// capacity is the ring's data area: its MaxMessage must carry the largest
// size.
const capacity = 1 << 20

func BenchmarkRingCrossProcess(b *testing.B) { forSizes(b, ringCrossProcess) }
func BenchmarkRingInProcess(b *testing.B)    { forSizes(b, ringInProcess) }
func BenchmarkPipeCrossProcess(b *testing.B) { forSizes(b, pipeCrossProcess) }

func forSizes(b *testing.B, newLink func(testing.TB, int) *link) {
	for _, size := range sizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			benchLink(b, size, newLink(b, size))
		})
	}
}

// benchLink sends one message per b.Loop iteration, then closes the
// producing side and checks that the consumer received every message
// intact. The consumer's draining of what the transport still buffers when
// the loop ends is timed too: the figure is the rate at which messages
// reach the consumer, not the rate at which the producer fills a buffer.
func benchLink(b *testing.B, size int, l *link) {
	b.SetBytes(int64(size))
	b.ReportAllocs()
	msg := make([]byte, size)
	var seq uint64
	endWindow := watchSyscalls(b, l)
	for b.Loop() {
		binary.LittleEndian.PutUint64(msg, seq)
		if err := l.send(msg); err != nil {
			b.Fatalf("send message %d: %v", seq, err)
		}
		seq++
	}
	report := endWindow()
	b.StartTimer()
	got, err := l.finish()
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if got != seq {
		b.Fatalf("consumer received %d messages, want %d", got, seq)
	}
	report(seq)
}

// TestLinks runs every benchmark's link briefly: the cross-process
// plumbing and the consumers' checks work without -bench.
func TestLinks(t *testing.T) {
	if m := ring.MaxMessage(capacity); m < slicesMax(sizes) {
		t.Fatalf("ring.MaxMessage(%d) = %d, want at least %d", capacity, m, slicesMax(sizes))
	}
	for _, tc := range []struct {
		name    string
		newLink func(testing.TB, int) *link
	}{
		{"RingCrossProcess", ringCrossProcess},
		{"RingInProcess", ringInProcess},
		{"PipeCrossProcess", pipeCrossProcess},
	} {
		for _, size := range []int{8, 65536} {
			t.Run(fmt.Sprintf("%s/size=%d", tc.name, size), func(t *testing.T) {
				l := tc.newLink(t, size)
				const n = 1000
				msg := make([]byte, size)
				for seq := range uint64(n) {
					binary.LittleEndian.PutUint64(msg, seq)
					if err := l.send(msg); err != nil {
						t.Fatalf("send message %d: %v", seq, err)
					}
				}
				got, err := l.finish()
				if err != nil {
					t.Fatal(err)
				}
				if got != n {
					t.Fatalf("consumer received %d messages, want %d", got, n)
				}
			})
		}
	}
}

// TestLinksCatchBadMessages checks that every consumer reports a message
// out of sequence instead of counting it.
func TestLinksCatchBadMessages(t *testing.T) {
	for _, tc := range []struct {
		name    string
		newLink func(testing.TB, int) *link
	}{
		{"RingCrossProcess", ringCrossProcess},
		{"RingInProcess", ringInProcess},
		{"PipeCrossProcess", pipeCrossProcess},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.newLink(t, 64)
			msg := make([]byte, 64)
			for _, seq := range []uint64{0, 1, 3} {
				binary.LittleEndian.PutUint64(msg, seq)
				if err := l.send(msg); err != nil {
					t.Fatalf("send message %d: %v", seq, err)
				}
			}
			if n, err := l.finish(); err == nil {
				t.Fatalf("finish() = %d, nil; want an error for message 2 carrying sequence number 3", n)
			} else {
				t.Log(err)
			}
		})
	}
}

// TestRingHotPathAllocs checks that sending and receiving (RecvBatch with a
// copy) allocate nothing per message.
func TestRingHotPathAllocs(t *testing.T) {
	l := ringInProcess(t, 64)
	msg := make([]byte, 64)
	var seq uint64
	allocs := testing.AllocsPerRun(10000, func() {
		binary.LittleEndian.PutUint64(msg, seq)
		if err := l.send(msg); err != nil {
			t.Fatal(err)
		}
		seq++
	})
	got, err := l.finish()
	if err != nil {
		t.Fatal(err)
	}
	if got != seq {
		t.Fatalf("consumer received %d messages, want %d", got, seq)
	}
	if allocs != 0 {
		t.Errorf("allocations per message = %v, want 0", allocs)
	}
}

func slicesMax(s []int) int {
	m := 0
	for _, v := range s {
		m = max(m, v)
	}
	return m
}

// A link is a producer connected to a consumer that checks every message.
type link struct {
	send func(msg []byte) error
	// sendBatch sends msgs with one publication (the ring's SendBatch);
	// nil where the transport has none (a pipe: one write per message).
	sendBatch func(msgs [][]byte) (int, error)
	// finish closes the producing side, waits for the consumer to reach
	// the end of the stream, and returns how many messages it received;
	// an error if one was out of order or the wrong size.
	finish func() (uint64, error)
	// pid is the consumer's process: a child for the cross-process links,
	// this process otherwise.
	pid int
}

// counter is a consumer's bookkeeping: it copies each message out, as a
// real consumer would, and checks its size and sequence number.
type counter struct {
	buf []byte
	n   uint64
	err error
}

func newCounter(size int) *counter { return &counter{buf: make([]byte, size)} }

func (c *counter) take(msg []byte) {
	copy(c.buf, msg)
	c.check(len(msg))
}

// check checks the n-byte message in buf.
func (c *counter) check(n int) {
	if c.err == nil && (n != len(c.buf) || binary.LittleEndian.Uint64(c.buf) != c.n) {
		c.err = fmt.Errorf("message %d: %d bytes with sequence number %d, want %d bytes with %d", c.n, n, binary.LittleEndian.Uint64(c.buf), len(c.buf), c.n)
	}
	c.n++
}

func ringCrossProcess(tb testing.TB, size int) *link {
	seg, err := ring.Create(&ring.Config{Capacity: capacity, Name: "shmlane-bench"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { seg.Close() })
	p, err := seg.Producer(nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	f, err := seg.File()
	if err != nil {
		tb.Fatal(err)
	}
	// If the child dies, closing the producer ends a Send waiting for room.
	c := startChild(tb, "ring-consumer", size, func() { p.Close() }, f)
	return &link{
		send:      p.Send,
		sendBatch: p.SendBatch,
		finish: func() (uint64, error) {
			p.Close()
			return c.result()
		},
		pid: c.pid,
	}
}

func ringInProcess(tb testing.TB, size int) *link {
	seg, err := ring.Create(&ring.Config{Capacity: capacity, Name: "shmlane-bench"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { seg.Close() })
	p, err := seg.Producer(nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	cons, err := seg.Consumer(nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cons.Close() })
	done := make(chan error, 1)
	cnt := newCounter(size)
	go func() { done <- consumeRing(cons, cnt) }()
	return &link{
		send: p.Send,
		finish: func() (uint64, error) {
			p.Close()
			err := <-done
			return cnt.n, err
		},
		pid: os.Getpid(),
	}
}

// consumeRing takes every message until the end of the stream, in batches.
func consumeRing(c *ring.Consumer, cnt *counter) error {
	take := cnt.take
	for {
		if _, err := c.RecvBatch(0, take); err != nil {
			if errors.Is(err, io.EOF) {
				return cnt.err
			}
			return fmt.Errorf("receive message %d: %w", cnt.n, err)
		}
	}
}

func pipeCrossProcess(tb testing.TB, size int) *link {
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { w.Close() })
	// Blocking descriptors (Fd switches them): a full or empty pipe
	// sleeps in the kernel rather than going through the poller.
	r.Fd()
	w.Fd()
	c := startChild(tb, "pipe-consumer", size, nil, r)
	return &link{
		send: func(msg []byte) error {
			_, err := w.Write(msg)
			return err
		},
		finish: func() (uint64, error) {
			w.Close()
			return c.result()
		},
		pid: c.pid,
	}
}

// Cross-process benchmarks re-execute the test binary as the consumer: the
// child runs TestHelperProcess with SHMLANE_BENCH_HELPER naming its role,
// and gets these descriptors:
//
//	3  report pipe (written): "ready\n" once attached, then the number of
//	   messages received, or "error: " and what went wrong
//	4  lifeline pipe (read): end of file means the benchmark died
//	5  the transport: the ring's segment or the pipe's read end
const (
	helperEnv = "SHMLANE_BENCH_HELPER"
	sizeEnv   = "SHMLANE_BENCH_SIZE"
)

type child struct {
	pid    int
	report *bufio.Reader
	exited chan struct{}
	err    error // the exit, once exited is closed
}

// startChild starts the consumer child with file as its descriptor 5 (it
// closes file here) and waits until it is ready. onExit, if not nil, runs
// when the child exits. The child is killed, if it still runs, and waited
// for when tb ends.
func startChild(tb testing.TB, role string, size int, onExit func(), file *os.File) *child {
	tb.Helper()
	defer file.Close()
	rr, rw, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rr.Close() })
	defer rw.Close()
	lr, lw, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { lw.Close() })
	defer lr.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+role, sizeEnv+"="+strconv.Itoa(size))
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = []*os.File{rw, lr, file}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c := &child{pid: cmd.Process.Pid, report: bufio.NewReader(rr), exited: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
		if onExit != nil {
			onExit()
		}
	}()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-c.exited
	})
	if line, err := c.report.ReadString('\n'); err != nil || line != "ready\n" {
		<-c.exited
		tb.Fatalf("%s child did not get ready: %q, %v (exit: %v)", role, line, err, c.err)
	}
	return c
}

// result reads the child's count and waits for its exit.
func (c *child) result() (uint64, error) {
	line, err := c.report.ReadString('\n')
	<-c.exited
	if err != nil {
		return 0, fmt.Errorf("read the child's report: %w (exit: %v)", err, c.err)
	}
	line = strings.TrimSuffix(line, "\n")
	if msg, ok := strings.CutPrefix(line, "error: "); ok {
		return 0, fmt.Errorf("child: %s", msg)
	}
	n, err := strconv.ParseUint(line, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("child's report %q: %w", line, err)
	}
	if c.err != nil {
		return n, fmt.Errorf("child: %w", c.err)
	}
	return n, nil
}

func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperEnv)
	if role == "" {
		t.Skip("helper process of the cross-process benchmarks: runs only when one starts it")
	}
	os.Exit(helperMain(role))
}

func helperMain(role string) int {
	report, lifeline, file := os.NewFile(3, "report"), os.NewFile(4, "lifeline"), os.NewFile(5, "transport")
	for _, f := range []*os.File{report, lifeline, file} {
		if _, err := f.Stat(); err != nil {
			fmt.Fprintf(os.Stderr, "helper: descriptor from the benchmark: %v\n", err)
			return 2
		}
	}
	go func() {
		io.Copy(io.Discard, lifeline)
		os.Exit(3) // the benchmark died
	}()
	size, err := strconv.Atoi(os.Getenv(sizeEnv))
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper: %s: %v\n", sizeEnv, err)
		return 2
	}
	n, err := consumeChild(role, size, file, func() error {
		_, err := io.WriteString(report, "ready\n")
		return err
	})
	if err != nil {
		fmt.Fprintf(report, "error: %v\n", err)
		return 1
	}
	fmt.Fprintf(report, "%d\n", n)
	return 0
}

// consumeChild is the child's consumer: it attaches to file, calls ready,
// and takes messages until the end of the stream.
func consumeChild(role string, size int, file *os.File, ready func() error) (uint64, error) {
	cnt := newCounter(size)
	switch role {
	case "ring-consumer":
		seg, err := ring.Open(file)
		file.Close()
		if err != nil {
			return 0, err
		}
		defer seg.Close()
		c, err := seg.Consumer(nil)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		if err := ready(); err != nil {
			return 0, err
		}
		err = consumeRing(c, cnt)
		return cnt.n, err
	case "pipe-consumer":
		defer file.Close()
		if err := ready(); err != nil {
			return 0, err
		}
		for {
			n, err := io.ReadFull(file, cnt.buf)
			if errors.Is(err, io.EOF) {
				return cnt.n, cnt.err
			}
			if err != nil {
				return cnt.n, fmt.Errorf("read message %d: %w", cnt.n, err)
			}
			cnt.check(n)
		}
	}
	return 0, fmt.Errorf("unknown role %q", role)
}

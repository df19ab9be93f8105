//go:build linux

package ring

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmlane/shmlane/internal/futex"
)

// TestIdleConsumersAtScale holds 10,000 idle consumers in one process,
// each asleep in Recv on its own ring, and checks that the process needs
// at most 64 OS threads for them (sleepers past internal/futex.ThreadWaits
// are parked in io_uring, not in a thread each); then it wakes every one
// with a message. Idle, they cost the process a few per cent of a CPU
// (it fails at half a CPU).
func TestIdleConsumersAtScale(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 2000
	}
	if !futex.Parking() {
		t.Skipf("skipping: this kernel does not let waits park in io_uring (IORING_OP_FUTEX_WAIT, Linux 6.7; or seccomp, kernel.io_uring_disabled), so each of %d sleepers would hold a thread", n)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < uint64(n)+1000 {
		t.Skipf("skipping: %d rings need %d descriptors, RLIMIT_NOFILE is %d", n, n+1000, lim.Cur)
	}
	type pair struct {
		seg *Segment
		p   *Producer
		c   *Consumer
	}
	pairs := make([]pair, n)
	for i := range pairs {
		seg, err := Create(&Config{Capacity: MinCapacity})
		if err != nil {
			t.Fatalf("ring %d: %v", i, err)
		}
		p, err := seg.Producer(nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := seg.Consumer(&Options{SpinTime: -1})
		if err != nil {
			t.Fatal(err)
		}
		pairs[i] = pair{seg, p, c}
	}
	defer func() {
		for _, pr := range pairs {
			pr.c.Close()
			pr.p.Close()
			pr.seg.Close()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, pr := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr.c.SetDeadline(time.Now().Add(60 * time.Second))
			buf := make([]byte, 8)
			if n, err := pr.c.Recv(buf); err != nil || string(buf[:n]) != "hi" {
				errs <- err
			}
		}()
	}
	// Every consumer announces itself before it sleeps.
	deadline := time.Now().Add(30 * time.Second)
	for _, pr := range pairs {
		for pr.seg.Stats().ConsumerSleeps == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the consumers did not all go to sleep within 30 s")
			}
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond)
	threads := threadCount(t)
	t.Logf("%d idle consumers asleep: %d OS threads", n, threads)
	if threads > 64 {
		t.Errorf("%d idle consumers hold %d OS threads, want at most 64", n, threads)
	}
	// Idle, each sleeper looks at its ring once a poll interval (1 s):
	// what that costs the process.
	const idle = 2 * time.Second
	var r0, r1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &r0)
	time.Sleep(idle)
	unix.Getrusage(unix.RUSAGE_SELF, &r1)
	cpu := time.Duration(unix.TimevalToNsec(r1.Utime) + unix.TimevalToNsec(r1.Stime) - unix.TimevalToNsec(r0.Utime) - unix.TimevalToNsec(r0.Stime))
	share := cpu.Seconds() / idle.Seconds()
	t.Logf("idle for %v: %v of CPU (%.1f%% of one CPU)", idle, cpu, 100*share)
	if share > 0.5 && !raceEnabled {
		t.Errorf("%d idle consumers use %.0f%% of a CPU", n, 100*share)
	}
	start := time.Now()
	for _, pr := range pairs {
		if err := pr.p.Send([]byte("hi")); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	t.Logf("woke %d sleeping consumers in %v", n, time.Since(start))
	close(errs)
	for err := range errs {
		t.Fatalf("Recv() = %v", err)
	}
}

// threadCount reads this process's OS thread count from /proc.
func threadCount(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads: line in /proc/self/status")
	return 0
}

//go:build linux

package futex_test

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shmlane/shmlane/internal/futex"
)

// parkAll makes every wait of the test park in io_uring (none in the
// system call), or skips the test where io_uring cannot be used.
func parkAll(t *testing.T) {
	t.Helper()
	if !futex.ParkerUsable() {
		t.Skip("skipping: io_uring futex waits are not available here (kernel < 6.7, seccomp or kernel.io_uring_disabled)")
	}
	old := futex.ThreadWaits
	futex.ThreadWaits = 0
	t.Cleanup(func() { futex.ThreadWaits = old })
}

// TestParkedWaitWake parks a wait and wakes it, then times one out, then
// parks and wakes again: a withdrawn wait leaves nothing behind.
func TestParkedWaitWake(t *testing.T) {
	parkAll(t)
	w := word(mapAnon(t), 0)
	woken := make(chan error, 1)
	go func() { woken <- futex.Wait(w, 0, patience) }()
	time.Sleep(20 * time.Millisecond) // parked by now, or it sees the store
	w.Store(1)
	if _, err := futex.Wake(w, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-woken:
		if err != nil {
			t.Fatalf("Wait() = %v, want nil after a wake", err)
		}
	case <-time.After(patience):
		t.Fatal("a parked wait was not woken")
	}

	start := time.Now()
	if err := futex.Wait(w, 1, 30*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Wait() with nobody waking = %v, want os.ErrDeadlineExceeded", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("the wait timed out after %v, before its 30 ms", d)
	}

	go func() { woken <- futex.Wait(w, 1, patience) }()
	time.Sleep(20 * time.Millisecond)
	w.Store(2)
	futex.Wake(w, 1)
	select {
	case err := <-woken:
		if err != nil {
			t.Fatalf("Wait() after a timed-out wait = %v", err)
		}
	case <-time.After(patience):
		t.Fatal("a wait parked after a withdrawn one was not woken")
	}
}

// TestParkedCrossProcess: a parked wait on a memfd page is woken by
// another process's FUTEX_WAKE, as a sleeping thread would be.
func TestParkedCrossProcess(t *testing.T) {
	parkAll(t)
	f := newMemfd(t)
	w := word(mapFile(t, f), offFutex)
	wait := startHelper(t, f, "wake")
	deadline := time.Now().Add(patience)
	for w.Load() == 0 {
		if err := futex.Wait(w, 0, max(time.Until(deadline), 0)); err != nil {
			t.Fatalf("Wait(val=0) = %v, want a wake from the other process within %v", err, patience)
		}
	}
	if err := wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
}

// TestParkedNoThreads parks 10,000 waits, each on its own word, and checks
// that the process holds at most 64 OS threads meanwhile; then wakes them
// all.
func TestParkedNoThreads(t *testing.T) {
	parkAll(t)
	const n = 10000
	mem, err := unix.Mmap(-1, 0, 4*n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	words := make([]*atomic.Uint32, n)
	for i := range words {
		words[i] = (*atomic.Uint32)(unsafe.Pointer(&mem[4*i]))
	}
	var wg sync.WaitGroup
	var returned atomic.Int32
	errs := make(chan error, n)
	for _, w := range words {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := futex.Wait(w, 0, patience)
			returned.Add(1)
			if err != nil {
				errs <- err
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // all parked: each one is a submission
	if r := returned.Load(); r != 0 {
		t.Errorf("%d parked waits returned with their word unchanged and nobody waking", r)
	}
	threads := osThreads(t)
	t.Logf("%d parked waits, %d OS threads", n, threads)
	if threads > 64 {
		t.Errorf("%d parked waits hold %d OS threads, want at most 64", n, threads)
	}
	start := time.Now()
	for _, w := range words {
		w.Store(1)
		futex.Wake(w, 1)
	}
	wg.Wait()
	t.Logf("woke %d parked waits in %v", n, time.Since(start))
	close(errs)
	for err := range errs {
		t.Fatalf("Wait() = %v", err)
	}
}

// TestParkerFallback: where the kernel refuses the io_uring operation,
// waits go to the system call.
func TestParkerFallback(t *testing.T) {
	parkAll(t)
	defer futex.BreakParker()()
	w := word(mapAnon(t), 0)
	woken := make(chan error, 1)
	go func() { woken <- futex.Wait(w, 0, patience) }()
	time.Sleep(20 * time.Millisecond)
	w.Store(1)
	futex.Wake(w, 1)
	if err := <-woken; err != nil {
		t.Fatalf("Wait() = %v", err)
	}
}

// osThreads reads this process's thread count.
func osThreads(t *testing.T) int {
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

// BenchmarkWakePingPong measures a wake's latency: two goroutines take
// turns on two words, each sleeping until the other wakes it, so that
// every round trip is two wakes of a sleeper. "thread" sleeps in the
// system call, "parked" in io_uring.
func BenchmarkWakePingPong(b *testing.B) {
	for _, mode := range []struct {
		name    string
		threads int32
	}{{"thread", 1 << 20}, {"parked", 0}} {
		b.Run(mode.name, func(b *testing.B) {
			if mode.threads == 0 && !futex.ParkerUsable() {
				b.Skip("io_uring futex waits are not available here")
			}
			old := futex.ThreadWaits
			futex.ThreadWaits = mode.threads
			defer func() { futex.ThreadWaits = old }()
			mem, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Munmap(mem)
			ping, pong := word(mem, 0), word(mem, 64)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := uint32(1); ; i++ {
					for ping.Load() < i {
						futex.Wait(ping, i-1, patience)
					}
					if ping.Load() == ^uint32(0) {
						return
					}
					pong.Store(i)
					futex.Wake(pong, 1)
				}
			}()
			i := uint32(0)
			for b.Loop() {
				i++
				ping.Store(i)
				futex.Wake(ping, 1)
				for pong.Load() < i {
					futex.Wait(pong, i-1, patience)
				}
			}
			ping.Store(^uint32(0))
			futex.Wake(ping, 1)
			<-done
		})
	}
}

//go:build linux

package futex_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shmlane/shmlane/internal/futex"
)

// Every test bounds its waits: a futex bug must fail a test, never hang it.
const patience = 10 * time.Second

// word returns the atomic view of the u32 at off in a mapping.
func word(mem []byte, off int) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&mem[off]))
}

// mapAnon returns an anonymous MAP_SHARED page.
func mapAnon(t *testing.T) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatalf("mmap anonymous: %v", err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

// newMemfd returns a one-page memfd.
func newMemfd(t *testing.T) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("futex-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatalf("memfd_create: %v", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:futex-test")
	t.Cleanup(func() { f.Close() })
	if err := unix.Ftruncate(fd, int64(os.Getpagesize())); err != nil {
		t.Fatalf("ftruncate: %v", err)
	}
	return f
}

// mapFile maps the first page of f shared.
func mapFile(t *testing.T, f *os.File) []byte {
	t.Helper()
	mem, err := unix.Mmap(int(f.Fd()), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap memfd: %v", err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

var mappings = []struct {
	name string
	mmap func(t *testing.T) []byte
}{
	{"anonymous", mapAnon},
	{"memfd", func(t *testing.T) []byte { return mapFile(t, newMemfd(t)) }},
}

func TestWaitValueDiffers(t *testing.T) {
	for _, m := range mappings {
		t.Run(m.name, func(t *testing.T) {
			w := word(m.mmap(t), 0)
			w.Store(1)
			for _, timeout := range []time.Duration{-1, 0, patience} {
				start := time.Now()
				if err := futex.Wait(w, 0, timeout); err != nil {
					t.Errorf("Wait(word=1, val=0, %v) = %v, want nil", timeout, err)
				}
				if d := time.Since(start); d > time.Second {
					t.Errorf("Wait(word=1, val=0, %v) took %v, want an immediate return", timeout, d)
				}
			}
		})
	}
}

func TestWaitTimeout(t *testing.T) {
	for _, m := range mappings {
		t.Run(m.name, func(t *testing.T) {
			w := word(m.mmap(t), 0)
			w.Store(7)

			if err := futex.Wait(w, 7, 0); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Wait(word=7, val=7, 0) = %v, want os.ErrDeadlineExceeded", err)
			}
			const timeout = 30 * time.Millisecond
			start := time.Now()
			err := futex.Wait(w, 7, timeout)
			d := time.Since(start)
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Wait(word=7, val=7, %v) = %v, want os.ErrDeadlineExceeded", timeout, err)
			}
			if d < timeout {
				t.Errorf("Wait(word=7, val=7, %v) returned after %v, want >= %v", timeout, d, timeout)
			}
			// Generous: the machine is shared.
			if d > timeout+2*time.Second {
				t.Errorf("Wait(word=7, val=7, %v) returned after %v, want about %v", timeout, d, timeout)
			}
		})
	}
}

func TestWakeNoWaiters(t *testing.T) {
	w := word(mapAnon(t), 0)
	for _, n := range []int{-1, 0, 1, 2, math.MaxInt32, math.MaxInt} {
		if got, err := futex.Wake(w, n); got != 0 || err != nil {
			t.Errorf("Wake(n=%d) with no waiters = %d, %v, want 0, nil", n, got, err)
		}
	}
}

// wakeUntil calls Wake(w, n) until it reports at least want woken waiters
// in total or patience runs out, and returns the total. The value of the
// word is left alone, so only a FUTEX_WAKE can end the waits.
func wakeUntil(t *testing.T, w *atomic.Uint32, n, want int) int {
	t.Helper()
	total := 0
	deadline := time.Now().Add(patience)
	for total < want && time.Now().Before(deadline) {
		got, err := futex.Wake(w, n)
		if err != nil {
			t.Fatalf("Wake(n=%d) = %v", n, err)
		}
		total += got
		time.Sleep(time.Millisecond)
	}
	return total
}

func TestWakeWakesWaiter(t *testing.T) {
	for _, m := range mappings {
		t.Run(m.name, func(t *testing.T) {
			w := word(m.mmap(t), 0)
			done := make(chan error, 1)
			go func() { done <- futex.Wait(w, 0, patience) }()
			if got := wakeUntil(t, w, 1, 1); got != 1 {
				t.Fatalf("Wake(n=1) woke %d waiters in %v, want 1", got, patience)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Wait(val=0) after Wake = %v, want nil", err)
				}
			case <-time.After(patience):
				t.Fatalf("Wait(val=0) did not return after Wake reported it woke a waiter")
			}
		})
	}
}

func TestWakeCountsWaiters(t *testing.T) {
	w := word(mapAnon(t), 0)
	const waiters = 3
	done := make(chan error, waiters)
	for range waiters {
		go func() { done <- futex.Wait(w, 0, patience) }()
	}
	// Wake(n=2) wakes at most two at a time.
	total := 0
	deadline := time.Now().Add(patience)
	for total < waiters && time.Now().Before(deadline) {
		got, err := futex.Wake(w, 2)
		if err != nil || got < 0 || got > 2 {
			t.Fatalf("Wake(n=2) = %d, %v, want 0..2, nil", got, err)
		}
		total += got
		time.Sleep(time.Millisecond)
	}
	if total != waiters {
		t.Fatalf("Wake(n=2) woke %d waiters in total, want %d", total, waiters)
	}
	for range waiters {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Wait(val=0) after Wake = %v, want nil", err)
			}
		case <-time.After(patience):
			t.Fatalf("a woken Wait did not return")
		}
	}
}

// TestWakeAcrossMappings maps one memfd page twice, at two addresses, and
// waits on one and wakes through the other. A shared futex is keyed by the
// page (inode and offset); a private one (FUTEX_PRIVATE_FLAG) is keyed by
// the address and would never see the waiter.
func TestWakeAcrossMappings(t *testing.T) {
	f := newMemfd(t)
	a, b := mapFile(t, f), mapFile(t, f)
	if &a[0] == &b[0] {
		t.Fatal("two mappings of the memfd share an address")
	}
	wa, wb := word(a, 64), word(b, 64)
	done := make(chan error, 1)
	go func() { done <- futex.Wait(wa, 0, patience) }()
	if got := wakeUntil(t, wb, 1, 1); got != 1 {
		t.Fatalf("Wake through the second mapping woke %d waiters in %v, want 1 (is FUTEX_PRIVATE_FLAG set?)", got, patience)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Wait(val=0) after Wake = %v, want nil", err)
		}
	case <-time.After(patience):
		t.Fatalf("Wait did not return after Wake reported it woke a waiter")
	}
}

// Cross-process tests re-execute the test binary as the peer: the child
// runs TestHelperProcess with helperEnv naming its role and the memfd as
// fd 3. The page holds the futex word at offFutex and, at offReady, a word
// the child sets to 1 once it has mapped the page.
const (
	helperEnv = "SHMLANE_FUTEX_HELPER"
	offFutex  = 0
	offReady  = 128
)

func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperEnv)
	if role == "" {
		t.Skip("helper process for the cross-process tests")
	}
	if err := helper(role); err != nil {
		fmt.Fprintf(os.Stderr, "futex helper %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func helper(role string) error {
	f := os.NewFile(3, "memfd")
	mem, err := unix.Mmap(int(f.Fd()), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	w, ready := word(mem, offFutex), word(mem, offReady)
	ready.Store(1)
	deadline := time.Now().Add(patience)
	switch role {
	case "wait":
		// Wait until the parent changes the word; each Wait may end early
		// (a Wake without a change, or a spurious wakeup).
		for w.Load() == 0 {
			if err := futex.Wait(w, 0, max(time.Until(deadline), 0)); err != nil {
				return fmt.Errorf("Wait(val=0) = %w, want a wake within %v", err, patience)
			}
		}
		return nil
	case "wake":
		// Wake until a waiter in the parent is woken, then release it.
		for {
			n, err := futex.Wake(w, 1)
			if err != nil {
				return fmt.Errorf("Wake: %w", err)
			}
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("Wake(n=1) found no waiter in %v", patience)
			}
			time.Sleep(time.Millisecond)
		}
		w.Store(1)
		if _, err := futex.Wake(w, 1); err != nil {
			return fmt.Errorf("Wake: %w", err)
		}
		return nil
	}
	return fmt.Errorf("unknown role %q", role)
}

// startHelper runs the test binary as the peer with f as its fd 3, killed
// after patience at the latest.
func startHelper(t *testing.T, f *os.File, role string) (wait func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*patience)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.v=false")
	cmd.Env = append(os.Environ(), helperEnv+"="+role)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start helper: %v", err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
		cancel()
	})
	return func() error { waited = true; return cmd.Wait() }
}

func awaitReady(t *testing.T, ready *atomic.Uint32) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for ready.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("helper did not map the page in %v", patience)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCrossProcessWakeChild: the child sleeps, the parent wakes it. The
// parent has no waiter of its own, so a Wake that reports a woken waiter
// woke the child: the futex is shared between processes.
func TestCrossProcessWakeChild(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: re-executes the test binary")
	}
	f := newMemfd(t)
	mem := mapFile(t, f)
	w := word(mem, offFutex)
	wait := startHelper(t, f, "wait")
	awaitReady(t, word(mem, offReady))

	woken := wakeUntil(t, w, 1, 1)
	w.Store(1)
	if _, err := futex.Wake(w, 1); err != nil {
		t.Fatalf("Wake: %v", err)
	}
	if err := wait(); err != nil {
		t.Fatalf("child waiting on the futex: %v", err)
	}
	if woken != 1 {
		t.Errorf("Wake(n=1) in the parent woke %d waiters in %v, want 1 (the child)", woken, patience)
	}
}

// TestCrossProcessWakeParent is the reverse: the parent sleeps and the
// child wakes it; the child exits 0 only if its Wake reported a woken
// waiter.
func TestCrossProcessWakeParent(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: re-executes the test binary")
	}
	f := newMemfd(t)
	mem := mapFile(t, f)
	w := word(mem, offFutex)
	wait := startHelper(t, f, "wake")
	awaitReady(t, word(mem, offReady))

	deadline := time.Now().Add(patience)
	for w.Load() == 0 {
		if err := futex.Wait(w, 0, max(time.Until(deadline), 0)); err != nil {
			t.Fatalf("Wait(val=0) = %v, want the child to wake us", err)
		}
	}
	if err := wait(); err != nil {
		t.Fatalf("child waking the futex: %v", err)
	}
}

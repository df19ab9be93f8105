package futex

import (
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	futexWait = 0 // FUTEX_WAIT, shared: no FUTEX_PRIVATE_FLAG
	futexWake = 1 // FUTEX_WAKE, shared
)

// Wait sleeps while *word == val, until a Wake on the same word (from any
// process that maps it), or until timeout passes. A timeout < 0 waits
// without a limit; a timeout of 0 returns os.ErrDeadlineExceeded at once if
// the word still holds val.
//
// Wait returns nil when it was woken or when the word no longer holds val
// (the caller re-checks its condition either way: wakeups may be spurious).
// It returns an error wrapping os.ErrDeadlineExceeded when the timeout
// passes, and an *os.SyscallError for anything unexpected.
//
// The first ThreadWaits concurrent waits of the process sleep in the
// futex system call, each holding its OS thread; the others are parked in
// io_uring and hold none (see uring_linux.go), where the kernel allows it.
func Wait(word *atomic.Uint32, val uint32, timeout time.Duration) error {
	if word.Load() != val {
		return nil
	}
	if timeout == 0 {
		return os.ErrDeadlineExceeded
	}
	if threadWaits.Add(1) <= ThreadWaits {
		defer threadWaits.Add(-1)
		return waitSyscall(word, val, timeout)
	}
	threadWaits.Add(-1)
	if p := theParker(); p != nil {
		if handled, err := p.park(word, val, timeout); handled {
			return err
		}
	}
	return waitSyscall(word, val, timeout)
}

// waitSyscall is Wait in the futex system call.
func waitSyscall(word *atomic.Uint32, val uint32, timeout time.Duration) error {
	var deadline time.Time
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		if word.Load() != val {
			return nil
		}
		var tsp *unix.Timespec
		if timeout >= 0 {
			left := time.Until(deadline)
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			ts := unix.NsecToTimespec(int64(left))
			tsp = &ts
		}
		_, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexWait, uintptr(val), uintptr(unsafe.Pointer(tsp)), 0, 0)
		switch e {
		case 0, unix.EAGAIN:
			// Woken, or the word changed before we slept.
			return nil
		case unix.EINTR:
			// A signal: re-check the word and the time left.
			continue
		case unix.ETIMEDOUT:
			return os.ErrDeadlineExceeded
		default:
			return os.NewSyscallError("futex wait", e)
		}
	}
}

// Wake wakes up to n waiters sleeping on word and returns how many it woke.
func Wake(word *atomic.Uint32, n int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	if n > 1<<30 {
		n = 1 << 30
	}
	r, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexWake, uintptr(n), 0, 0, 0)
	if e != 0 {
		return 0, os.NewSyscallError("futex wake", e)
	}
	return int(r), nil
}

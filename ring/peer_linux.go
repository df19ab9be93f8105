package ring

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// WatchPeer watches the process pid (0: the pid the peer recorded in the
// segment when it attached) through a pidfd. Once that process has exited,
// a consumer receives everything the peer committed and then ErrPeerGone;
// a producer's sends fail with ErrPeerGone. A wait blocked at the time is
// woken. The watch costs no system call on the hot path: a goroutine parked
// in the runtime's poller waits for the pidfd to become readable.
func (e *endpoint) WatchPeer(pid int) error {
	if pid == 0 {
		pid = int(e.peer.pid.Load())
		if pid == 0 {
			return fmt.Errorf("watch peer: the peer has not attached yet")
		}
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return e.watch(nil, pid)
	}
	if err != nil {
		return fmt.Errorf("watch peer: %w", os.NewSyscallError("pidfd_open", err))
	}
	return e.watch(os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid)), pid)
}

// WatchPeerPidfd is WatchPeer for the process that pidfd refers to, such
// as one from SO_PEERPIDFD: unlike a pid, a pidfd names the process even
// when its pid is not visible in this process's pid namespace, and cannot
// come to name another process once the pid is reused. The endpoint keeps
// its own duplicate; the caller still owns pidfd.
func (e *endpoint) WatchPeerPidfd(pidfd *os.File) error {
	if pidfd == nil {
		return fmt.Errorf("watch peer: nil pidfd")
	}
	rc, err := pidfd.SyscallConn()
	if err != nil {
		return fmt.Errorf("watch peer: %w", err)
	}
	var fd int
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return fmt.Errorf("watch peer: %w", err)
	}
	if derr != nil {
		return fmt.Errorf("watch peer: %w", os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", derr))
	}
	// The runtime's poller needs the descriptor non-blocking.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return fmt.Errorf("watch peer: %w", os.NewSyscallError("fcntl O_NONBLOCK", err))
	}
	return e.watch(os.NewFile(uintptr(fd), pidfd.Name()), 0)
}

// watch starts watching the process of pidfd f (nil: it has already
// exited) and takes f.
func (e *endpoint) watch(f *os.File, pid int) error {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	if e.done {
		if f != nil {
			f.Close()
		}
		return ErrClosed
	}
	if e.pidfd != nil || e.peerGone.Load() {
		if f != nil {
			f.Close()
		}
		return fmt.Errorf("watch peer: already watching pid %d", e.peerPID)
	}
	if f == nil {
		e.peerGone.Store(true)
		e.kick()
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fmt.Errorf("watch peer: %w", err)
	}
	e.pidfd, e.peerPID = f, pid
	go func() {
		// Read parks this goroutine in the poller until the pidfd is
		// readable, which it becomes when the process exits. An error
		// means the endpoint closed the pidfd: stop watching.
		err := rc.Read(func(fd uintptr) bool {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, 0)
			return err == nil && n == 1
		})
		if err == nil {
			e.peerGone.Store(true)
			e.kick()
		}
	}()
	return nil
}

// stopWatch closes the pidfd, which ends the watching goroutine.
func (e *endpoint) stopWatch() {
	if e.pidfd != nil {
		e.pidfd.Close()
	}
}

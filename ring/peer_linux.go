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
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	if e.done {
		return ErrClosed
	}
	if e.pidfd != nil {
		return fmt.Errorf("watch peer: already watching pid %d", e.peerPID)
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		e.peerGone.Store(true)
		e.kick()
		return nil
	}
	if err != nil {
		return fmt.Errorf("watch peer: %w", os.NewSyscallError("pidfd_open", err))
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))
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

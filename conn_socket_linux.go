package shmlane

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fbIO is the system side of a fallback connection's receive path and
// lane: non-blocking reads of the data socket (a duplicate of the one the
// transport sends on) and of the lane, lane writes, and a wait that wakes
// on either socket.
//
// The wait is an epoll set holding both sockets, level-triggered, whose
// own descriptor is registered in the runtime's poller like any network
// connection: a waiting receiver parks its goroutine (no thread blocks),
// wakes when either socket becomes readable (the inner set wakes the
// runtime's whenever one of its sockets signals), and deadlines and Close
// work as they do for files. Every read goes through RawConn.Control with
// a callback made once, so that it allocates nothing and never races with
// Close for the descriptor.
type fbIO struct {
	data, lane, ep       *os.File // lane is nil without a lane
	dataRC, laneRC, epRC syscall.RawConn
	// laneRoom is the largest packet the lane socket sends (its send
	// buffer less the kernel's margin), 0 without a lane.
	laneRoom int

	// Guarded by the receiver's lock (fbConn.rmu).
	rbuf, lbuf  []byte
	rn, ln      int
	rerr, lerr  error
	readDataFn  func(fd uintptr)
	readLaneFn  func(fd uintptr)
	laneFD      int  // the lane's descriptor in the epoll set, -1 for none
	laneDropped bool // taken out of the epoll set

	// Guarded by the lane writers' lock (fbConn.umu).
	sp     []byte
	serr   error
	sendFn func(fd uintptr)
}

// newFbIO takes data, a duplicate of the data socket, and lane (nil: no
// lane). It closes both on error.
func newFbIO(data, lane *os.File) (*fbIO, error) {
	fio := &fbIO{data: data, laneFD: -1}
	fail := func(err error) (*fbIO, error) {
		fio.close()
		if lane != nil {
			lane.Close()
		}
		return nil, err
	}
	var err error
	if fio.dataRC, err = data.SyscallConn(); err != nil {
		return fail(err)
	}
	dataFD, err := nonblockingFD(fio.dataRC)
	if err != nil {
		return fail(fmt.Errorf("data socket: %w", err))
	}
	if lane != nil {
		// A fresh descriptor, non-blocking before os.NewFile sees it, so
		// that the runtime's poller takes it whatever the peer passed.
		l, err := pollable(lane, "shmlane-lane")
		lane.Close()
		lane = nil
		if err != nil {
			return fail(fmt.Errorf("lane socket: %w", err))
		}
		fio.lane = l
		if fio.laneRC, err = l.SyscallConn(); err != nil {
			return fail(err)
		}
		if fio.laneFD, err = nonblockingFD(fio.laneRC); err != nil {
			return fail(fmt.Errorf("lane socket: %w", err))
		}
		var sndbuf int
		var serr error
		if err := fio.laneRC.Control(func(fd uintptr) {
			sndbuf, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		}); err != nil {
			return fail(err)
		}
		if serr != nil {
			return fail(fmt.Errorf("lane socket: %w", os.NewSyscallError("getsockopt SO_SNDBUF", serr)))
		}
		// unix_dgram_sendmsg refuses a packet longer than this.
		fio.laneRoom = max(sndbuf-32, 0)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fail(os.NewSyscallError("epoll_create1", err))
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return fail(os.NewSyscallError("fcntl", err))
	}
	fio.ep = os.NewFile(uintptr(epfd), "shmlane-epoll")
	// Registered with the descriptors as they are now: each stays valid
	// until close, which closes the epoll set first.
	for _, fd := range []int{dataFD, fio.laneFD} {
		if fd < 0 {
			continue
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return fail(os.NewSyscallError("epoll_ctl", err))
		}
	}
	// A file the runtime's poller took supports deadlines.
	if err := fio.ep.SetReadDeadline(time.Time{}); err != nil {
		return fail(fmt.Errorf("the runtime's poller does not take the epoll set: %w", err))
	}
	if fio.epRC, err = fio.ep.SyscallConn(); err != nil {
		return fail(err)
	}
	fio.readDataFn = func(fd uintptr) { fio.rn, fio.rerr = unix.Read(int(fd), fio.rbuf) }
	fio.readLaneFn = func(fd uintptr) { fio.ln, fio.lerr = unix.Read(int(fd), fio.lbuf) }
	fio.sendFn = func(fd uintptr) {
		fio.serr = unix.Sendto(int(fd), fio.sp, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil)
	}
	return fio, nil
}

// nonblockingFD makes the socket non-blocking (the reads rely on it) and
// returns its descriptor.
func nonblockingFD(rc syscall.RawConn) (int, error) {
	fd := -1
	var serr error
	if err := rc.Control(func(s uintptr) {
		fd = int(s)
		serr = unix.SetNonblock(fd, true)
	}); err != nil {
		return -1, err
	}
	if serr != nil {
		return -1, os.NewSyscallError("fcntl", serr)
	}
	return fd, nil
}

// pollable returns a new non-blocking file for the socket of f.
func pollable(f *os.File, name string) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if nfd, serr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); serr == nil {
			if serr = unix.SetNonblock(nfd, true); serr != nil {
				unix.Close(nfd)
			}
		}
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, os.NewSyscallError("fcntl", serr)
	}
	return os.NewFile(uintptr(nfd), name), nil
}

// readData reads one data packet into rbuf without waiting: its length
// (0 at the end of the stream), or an error (EAGAIN: none there).
func (fio *fbIO) readData() (int, error) {
	if err := fio.dataRC.Control(fio.readDataFn); err != nil {
		return 0, err
	}
	return fio.rn, fio.rerr
}

// readLane reads one lane packet into lbuf without waiting.
func (fio *fbIO) readLane() (int, error) {
	if err := fio.laneRC.Control(fio.readLaneFn); err != nil {
		return 0, err
	}
	return fio.ln, fio.lerr
}

// dropLane takes a lane that reached its end out of the epoll set, where
// it would stay readable.
func (fio *fbIO) dropLane() {
	if fio.laneFD < 0 || fio.laneDropped {
		return
	}
	fio.laneDropped = true
	fio.epRC.Control(func(ep uintptr) {
		fio.laneRC.Control(func(fd uintptr) {
			unix.EpollCtl(int(ep), unix.EPOLL_CTL_DEL, int(fd), nil)
		})
	})
}

// sendLane writes p to the lane as one packet without waiting (EAGAIN:
// the lane is full).
func (fio *fbIO) sendLane(p []byte) error {
	fio.sp = p
	err := fio.laneRC.Control(fio.sendFn)
	fio.sp = nil
	if err != nil {
		return err
	}
	return fio.serr
}

// wait calls ready, and again each time either socket may have become
// readable, until it returns true, the deadline passes (an error wrapping
// os.ErrDeadlineExceeded) or the connection closes.
func (fio *fbIO) wait(ready func(uintptr) bool) error {
	return fio.epRC.Read(ready)
}

// waitLane calls try, and again each time the lane may have room, until
// it returns true, the deadline passes or the connection closes.
func (fio *fbIO) waitLane(try func() bool) error {
	return fio.laneRC.Write(func(uintptr) bool { return try() })
}

func (fio *fbIO) setReadDeadline(t time.Time) error { return fio.ep.SetReadDeadline(t) }

func (fio *fbIO) setLaneDeadline(t time.Time) error {
	if fio.lane == nil {
		return nil
	}
	return fio.lane.SetWriteDeadline(t)
}

// close closes the epoll set first, then the sockets; it wakes a waiting
// receiver and a waiting Flush.
func (fio *fbIO) close() {
	for _, f := range []*os.File{fio.ep, fio.data, fio.lane} {
		if f != nil {
			f.Close()
		}
	}
}

// newLanePair makes the out-of-band lane of a fallback connection: a
// SOCK_SEQPACKET socketpair, non-blocking, whose send buffers are set to
// oobCap bytes (the kernel doubles the value and caps it at
// net.core.wmem_max).
func newLanePair(oobCap int) (mine, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("create the out-of-band lane: %w", os.NewSyscallError("socketpair", err))
	}
	for _, fd := range fds {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, oobCap); err != nil {
			unix.Close(fds[0])
			unix.Close(fds[1])
			return nil, nil, fmt.Errorf("size the out-of-band lane: %w", os.NewSyscallError("setsockopt SO_SNDBUF", err))
		}
	}
	return os.NewFile(uintptr(fds[0]), "shmlane-lane"), os.NewFile(uintptr(fds[1]), "shmlane-lane"), nil
}

// checkLaneSocket checks that f, the lane a listener passed, is a unix
// SOCK_SEQPACKET socket made by the listener's process (pid, 0 if it is
// not visible here).
func checkLaneSocket(f *os.File, pid int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var domain, sotype int
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); serr != nil {
			return
		}
		if sotype, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE); serr != nil {
			return
		}
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	var errno syscall.Errno
	if errors.As(serr, &errno) && errno == unix.ENOTSOCK {
		return fmt.Errorf("the lane must be a socket: %s is not", f.Name())
	}
	if serr != nil {
		return os.NewSyscallError("getsockopt", serr)
	}
	if domain != unix.AF_UNIX || sotype != unix.SOCK_SEQPACKET {
		return fmt.Errorf("the lane must be an AF_UNIX SOCK_SEQPACKET socket: domain=%d type=%d", domain, sotype)
	}
	if pid > 0 && int(cred.Pid) != pid {
		return fmt.Errorf("the lane must be a socketpair of the listener (pid %d): its creator is pid %d", pid, cred.Pid)
	}
	return nil
}

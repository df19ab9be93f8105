package shmlane

// The system interface of the rendezvous: peer credentials, descriptors
// passed with SCM_RIGHTS, the listener's lock file, and pidfds.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var selfPID = os.Getpid()

// supported reports whether Listen, Dial and Inspect can work here.
func supported(op string) error { return nil }

// peerCred returns the credentials the kernel recorded for the process at
// the other end of c: for a dialer, those of the process that called
// listen(2); for a listener, those of the process that called connect(2).
func peerCred(c *net.UnixConn) (Cred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Cred{}, fmt.Errorf("read peer credentials: %w", err)
	}
	var uc *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Cred{}, fmt.Errorf("read peer credentials: %w", err)
	}
	if serr != nil {
		return Cred{}, fmt.Errorf("read peer credentials: %w", os.NewSyscallError("getsockopt SO_PEERCRED", serr))
	}
	return Cred{PID: int(uc.Pid), UID: int(uc.Uid), GID: int(uc.Gid)}, nil
}

// writePacket sends one packet with files attached as SCM_RIGHTS.
func writePacket(c *net.UnixConn, b []byte, files ...*os.File) error {
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	n, _, err := c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("%w: send: %w", ErrHandshake, err)
	}
	if n != len(b) {
		return fmt.Errorf("%w: sent %d of %d bytes", ErrHandshake, n, len(b))
	}
	return nil
}

// readPacket receives one handshake packet and the descriptors attached
// to it: at most maxFDs, exactly as many as the packet says. On error, no
// descriptor is left open.
func readPacket(c *net.UnixConn, maxFDs int) (hello, string, []*os.File, error) {
	buf := make([]byte, maxPacket+1)
	oob := make([]byte, unix.CmsgSpace(4*(maxFDs+4)))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	for i := 0; i < 2 && errors.Is(err, unix.ECONNRESET); i++ {
		// The peer closed with data of ours unread. The kernel says so
		// once, ahead of what the peer sent before closing: read on.
		n, oobn, flags, _, err = c.ReadMsgUnix(buf, oob)
	}
	files, rerr := rights(oob[:oobn])
	fail := func(err error) (hello, string, []*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return hello{}, "", nil, err
	}
	switch {
	case err != nil:
		return fail(fmt.Errorf("%w: receive: %w", ErrHandshake, err))
	case rerr != nil:
		return fail(rerr)
	case n == 0:
		return fail(fmt.Errorf("%w: peer hung up: %w", ErrHandshake, io.ErrUnexpectedEOF))
	case flags&unix.MSG_TRUNC != 0:
		return fail(fmt.Errorf("%w: handshake packet longer than %d bytes", ErrHandshake, maxPacket))
	case flags&unix.MSG_CTRUNC != 0:
		return fail(fmt.Errorf("%w: more descriptors attached than the %d expected", ErrHandshake, maxFDs))
	}
	h, text, err := decodeHello(buf[:n])
	if err != nil {
		return fail(err)
	}
	if int(h.FDs) != len(files) || len(files) > maxFDs {
		return fail(fmt.Errorf("%w: %s message carries %d descriptors, says %d, at most %d expected", ErrHandshake, kindName(h.Kind), len(files), h.FDs, maxFDs))
	}
	return h, text, files, nil
}

// rights returns the descriptors of the SCM_RIGHTS messages in oob, and an
// error if oob holds anything else.
func rights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: parse control message: %w", ErrHandshake, err)
	}
	var files []*os.File
	var bad error
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			bad = fmt.Errorf("%w: unexpected control message level=%d type=%d", ErrHandshake, m.Header.Level, m.Header.Type)
			continue
		}
		for _, fd := range fds {
			// ReadMsgUnix receives with MSG_CMSG_CLOEXEC.
			files = append(files, os.NewFile(uintptr(fd), "memfd:"+strconv.Itoa(fd)))
		}
	}
	return files, bad
}

// listenSocket creates a SOCK_SEQPACKET socket bound at path with the
// given mode and listens on it. The mode is set on the socket before
// bind(2), which gives the file the socket's mode less the umask, so the
// file never exists with a wider mode.
func listenSocket(path string, mode os.FileMode) (*net.UnixListener, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() // net.FileListener keeps a duplicate
	if err := unix.Fchmod(fd, uint32(mode.Perm())); err != nil {
		return nil, os.NewSyscallError("fchmod", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, &fs.PathError{Op: "bind", Path: path, Err: err}
	}
	// The umask may have cleared bits that mode asks for.
	if err := os.Chmod(path, mode.Perm()); err != nil {
		os.Remove(path)
		return nil, err
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		os.Remove(path)
		return nil, os.NewSyscallError("listen", err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("listen: %s is not a unix socket listener: %T", path, ln)
	}
	ul.SetUnlinkOnClose(true)
	return ul, nil
}

// ensureDir creates dir (0700) if it is missing and checks that it is a
// directory owned by this user that nobody else may write to.
func ensureDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create runtime directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("check runtime directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok {
		return fmt.Errorf("runtime directory must be a directory, not a symbolic link or file: %s is %v", dir, fi.Mode().Type())
	}
	if euid := os.Geteuid(); int(st.Uid) != euid || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("runtime directory must be owned by uid %d and not writable by group or others: %s has owner %d, mode %v", euid, dir, st.Uid, fi.Mode().Perm())
	}
	return nil
}

// errLocked: another open file description holds the lock.
var errLocked = errors.New("lock held")

// lockName opens path (creating it 0600) and takes an exclusive flock on
// it without waiting. The kernel drops the lock when the process dies, so
// a crashed listener never keeps it. Because Listener.Close removes the
// file while holding the lock, lockName checks after locking that path
// still names the file it locked, and starts over if not.
func lockName(path string) (*os.File, error) {
	for range 16 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, errLocked
			}
			return nil, os.NewSyscallError("flock", err)
		}
		var held, named unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			f.Close()
			return nil, os.NewSyscallError("fstat", err)
		}
		if err := unix.Lstat(path, &named); err != nil || held.Ino != named.Ino || held.Dev != named.Dev {
			f.Close() // removed or replaced while we waited: try the new one
			continue
		}
		// The holder's pid, for the message another listener gets.
		f.Truncate(0)
		f.WriteAt([]byte(strconv.Itoa(selfPID)+"\n"), 0)
		return f, nil
	}
	return nil, fmt.Errorf("lock %s: the file keeps being replaced", path)
}

// reopenReadOnly opens the file behind f again, read-only, through
// /proc/self/fd: a new open file description that cannot write.
func reopenReadOnly(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var ro *os.File
	var oerr error
	if err := rc.Control(func(fd uintptr) {
		ro, oerr = os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(fd)), os.O_RDONLY|unix.O_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	return ro, oerr
}

// pidWatch tells whether a process has exited, through a pidfd.
type pidWatch struct {
	f   *os.File // nil: the process had exited when the watch began
	pid int      // as this process sees it, 0 if not visible
}

// peerProcess returns a watch on the process at the other end of c, whose
// credentials are cred, or nil if it cannot be watched. It takes the
// pidfd that SO_PEERPIDFD gives (Linux 6.5+): it names the process that
// connected (or listened) even when its pid is not visible in this
// process's pid namespace, and cannot come to name another process after
// that one exits. On older kernels it opens a pidfd on cred.PID, which a
// process that exits and whose pid is reused between SO_PEERCRED and
// pidfd_open could mislead, and returns nil when the pid is 0 (not
// visible here). A process that has already exited is an error: it cannot
// take part in a connection.
func peerProcess(c *net.UnixConn, cred Cred) (*pidWatch, error) {
	if !usePeerPidfd {
		return peerProcessByPID(cred)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("watch the peer's process: %w", err)
	}
	fd := -1
	var serr error
	if err := rc.Control(func(s uintptr) {
		fd, serr = unix.GetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	}); err != nil {
		return nil, fmt.Errorf("watch the peer's process: %w", err)
	}
	switch {
	case serr == nil:
		unix.CloseOnExec(fd)
		return &pidWatch{f: os.NewFile(uintptr(fd), "pidfd:peer"), pid: cred.PID}, nil
	case errors.Is(serr, unix.ESRCH):
		return nil, fmt.Errorf("the peer process (pid %d) exited during the handshake", cred.PID)
	case !errors.Is(serr, unix.ENOPROTOOPT) && !errors.Is(serr, unix.EINVAL):
		return nil, fmt.Errorf("watch the peer's process: %w", os.NewSyscallError("getsockopt SO_PEERPIDFD", serr))
	}
	return peerProcessByPID(cred)
}

// usePeerPidfd: tests clear it to see what kernels without SO_PEERPIDFD do.
var usePeerPidfd = true

// peerProcessByPID is peerProcess without SO_PEERPIDFD.
func peerProcessByPID(cred Cred) (*pidWatch, error) {
	if cred.PID <= 0 {
		return nil, nil
	}
	w, err := watchPID(cred.PID)
	if err != nil {
		return nil, err
	}
	if w.f == nil {
		return nil, fmt.Errorf("the peer process (pid %d) exited during the handshake", cred.PID)
	}
	return w, nil
}

// dup returns a second watch on the same process (nil for nil).
func (w *pidWatch) dup() (*pidWatch, error) {
	if w == nil || w.f == nil {
		return w, nil
	}
	fd, err := unix.FcntlInt(w.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("watch the peer's process: %w", os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err))
	}
	return &pidWatch{f: os.NewFile(uintptr(fd), w.f.Name()), pid: w.pid}, nil
}

// watchRing makes a ring endpoint watch the process (see
// ring.Producer.WatchPeerPidfd).
func (w *pidWatch) watchRing(e interface{ WatchPeerPidfd(*os.File) error }) error {
	if w == nil || w.f == nil {
		return fmt.Errorf("watch the peer's process: no pidfd")
	}
	return e.WatchPeerPidfd(w.f)
}

func watchPID(pid int) (*pidWatch, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("watch pid: pid must be positive: pid=%d", pid)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return &pidWatch{pid: pid}, nil // already gone
	}
	if err != nil {
		return nil, fmt.Errorf("watch pid %d: %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	return &pidWatch{f: os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid)), pid: pid}, nil
}

// exited reports whether the process has exited, waiting up to wait for
// it to. A process closes its descriptors before its pidfd becomes
// readable, so a caller that saw the peer's socket close gives it a moment.
func (w *pidWatch) exited(wait time.Duration) bool {
	if w == nil || w.f == nil {
		return true
	}
	deadline := time.Now().Add(wait)
	for {
		ms := int(time.Until(deadline).Milliseconds())
		pfd := []unix.PollFd{{Fd: int32(w.f.Fd()), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, max(ms, 0))
		if err == nil {
			return n > 0
		}
		if !errors.Is(err, syscall.EINTR) || ms <= 0 {
			return false
		}
	}
}

func (w *pidWatch) close() {
	if w != nil && w.f != nil {
		w.f.Close()
	}
}

package fallback

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func unixType(stream bool) (sotype int, network string) {
	if stream {
		return unix.SOCK_STREAM, "unix"
	}
	return unix.SOCK_SEQPACKET, "unixpacket"
}

// ListenUnix creates a unix socket file at path, with mode 0600 (less what
// the umask clears), and listens on it. An existing file at path is an
// error (EADDRINUSE); ListenUnix removes nothing.
func ListenUnix(path string, opts *UnixOptions) (*UnixListener, error) {
	sotype, _ := unixType(opts.stream())
	fd, err := unix.Socket(unix.AF_UNIX, sotype|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listen unix: %w", os.NewSyscallError("socket", err))
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() // net.FileListener keeps a duplicate
	// bind(2) gives the socket file the socket inode's mode less the
	// umask, so it never exists with a wider mode than 0600.
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return nil, fmt.Errorf("listen unix: %w", os.NewSyscallError("fchmod", err))
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, fmt.Errorf("listen unix: %w", &fs.PathError{Op: "bind", Path: path, Err: err})
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("listen unix: %w", os.NewSyscallError("listen", err))
	}
	ln, err := net.FileListener(f)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("listen unix: %w", err)
	}
	return &UnixListener{l: ln.(*net.UnixListener), path: path, stream: opts.stream()}, nil
}

// Accept waits for a connection.
func (l *UnixListener) Accept() (*UnixConn, error) {
	uc, err := l.l.AcceptUnix()
	if err != nil {
		if l.closed.Load() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("unix accept: %w", err)
	}
	return newUnixConn(uc, l.stream), nil
}

// SetDeadline bounds Accept; the zero time means no deadline.
func (l *UnixListener) SetDeadline(t time.Time) error {
	if l.closed.Load() {
		return ErrClosed
	}
	return l.l.SetDeadline(t)
}

// Close stops listening and removes the socket file. Connections accepted
// stay open. Close is idempotent.
func (l *UnixListener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	err := l.l.Close()
	if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("unix listener close: %w", err)
	}
	return nil
}

// DialUnix connects to the unix socket at path.
func DialUnix(ctx context.Context, path string, opts *UnixOptions) (*UnixConn, error) {
	_, network := unixType(opts.stream())
	var d net.Dialer
	c, err := d.DialContext(ctx, network, path)
	if err != nil {
		return nil, fmt.Errorf("dial unix: %w", err)
	}
	return newUnixConn(c.(*net.UnixConn), opts.stream()), nil
}

// NewUnixPair returns two connected unix sockets (socketpair(2)), for a
// parent and the child it starts (see UnixConn.File).
func NewUnixPair(opts *UnixOptions) (*UnixConn, *UnixConn, error) {
	sotype, _ := unixType(opts.stream())
	fds, err := unix.Socketpair(unix.AF_UNIX, sotype|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("new unix pair: %w", os.NewSyscallError("socketpair", err))
	}
	var cs [2]*UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			if i == 0 {
				unix.Close(fds[1])
			} else {
				cs[0].Close()
			}
			return nil, nil, fmt.Errorf("new unix pair: %w", err)
		}
		cs[i] = newUnixConn(c.(*net.UnixConn), opts.stream())
	}
	return cs[0], cs[1], nil
}

// NewUnixConn adopts f, a connected unix socket such as one a parent
// passed in exec.Cmd.ExtraFiles. The framing follows the socket's type:
// SOCK_SEQPACKET or SOCK_STREAM. It takes ownership of f.
func NewUnixConn(f *os.File) (*UnixConn, error) {
	if f == nil {
		return nil, errors.New("new unix conn: file is nil")
	}
	defer f.Close() // net.FileConn keeps a duplicate
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("new unix conn: %w", err)
	}
	var domain, sotype int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); serr == nil {
			sotype, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
		}
	}); err != nil {
		return nil, fmt.Errorf("new unix conn: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("new unix conn: %s: %w", f.Name(), os.NewSyscallError("getsockopt", serr))
	}
	if domain != unix.AF_UNIX || (sotype != unix.SOCK_STREAM && sotype != unix.SOCK_SEQPACKET) {
		return nil, fmt.Errorf("new unix conn: %s must be an AF_UNIX SOCK_STREAM or SOCK_SEQPACKET socket: domain=%d type=%d", f.Name(), domain, sotype)
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("new unix conn: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("new unix conn: %s is not a unix socket: %T", f.Name(), c)
	}
	return newUnixConn(uc, sotype == unix.SOCK_STREAM), nil
}

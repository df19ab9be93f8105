package fallback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// CreateFIFO creates a FIFO at path with mode 0600 (less what the umask
// clears). An existing FIFO is reused if it belongs to the effective user
// and grants nothing to group or others; any other existing file is
// refused.
func CreateFIFO(path string) error {
	err := unix.Mkfifo(path, 0o600)
	if err == nil {
		return nil
	}
	if err != unix.EEXIST {
		return fmt.Errorf("create fifo: %w", &fs.PathError{Op: "mkfifo", Path: path, Err: err})
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fmt.Errorf("create fifo: %w", &fs.PathError{Op: "lstat", Path: path, Err: err})
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return fmt.Errorf("create fifo: %s exists and is not a FIFO: mode=%#o", path, st.Mode)
	}
	if uid := uint32(os.Geteuid()); st.Uid != uid {
		return fmt.Errorf("create fifo: existing FIFO %s must belong to uid %d: owner uid=%d", path, uid, st.Uid)
	}
	if perm := st.Mode & 0o777; perm&0o077 != 0 {
		return fmt.Errorf("create fifo: existing FIFO %s must grant nothing to group or others: mode=%#o", path, perm)
	}
	return nil
}

// OpenFIFOSender opens the FIFO at path for writing. A FIFO cannot be
// opened for writing before a reader has it open, so OpenFIFOSender
// retries (every 1 ms, backing off to 50 ms) until a receiver appears or
// ctx is done.
func OpenFIFOSender(ctx context.Context, path string) (*FIFOSender, error) {
	if err := statFIFO(path); err != nil {
		return nil, fmt.Errorf("open fifo sender: %w", err)
	}
	delay := time.Millisecond
	var timer *time.Timer
	for {
		fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			f, err := fifoFile(fd, path)
			if err != nil {
				return nil, fmt.Errorf("open fifo sender: %w", err)
			}
			return newFIFOSender(f), nil
		}
		if err == unix.EINTR {
			continue
		}
		if err != unix.ENXIO {
			return nil, fmt.Errorf("open fifo sender: %w", &fs.PathError{Op: "open", Path: path, Err: err})
		}
		if timer == nil {
			timer = time.NewTimer(delay)
			defer timer.Stop()
		} else {
			timer.Reset(delay)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("open fifo sender: no receiver opened %s: %w", path, ctx.Err())
		case <-timer.C:
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// OpenFIFOReceiver opens the FIFO at path for reading. The open does not
// wait for a sender: Recv does (see FIFOReceiver). ctx is checked before
// the open.
func OpenFIFOReceiver(ctx context.Context, path string) (*FIFOReceiver, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open fifo receiver: %w", err)
	}
	if err := statFIFO(path); err != nil {
		return nil, fmt.Errorf("open fifo receiver: %w", err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open fifo receiver: %w", &fs.PathError{Op: "open", Path: path, Err: err})
	}
	f, err := fifoFile(fd, path)
	if err != nil {
		return nil, fmt.Errorf("open fifo receiver: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open fifo receiver: %w", err)
	}
	fr := &fifoReader{File: f, rc: rc}
	fr.readFn = fr.read
	return newFIFOReceiver(fr), nil
}

// statFIFO refuses a path that is not a FIFO before anything opens it.
func statFIFO(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeNamedPipe == 0 {
		return fmt.Errorf("%s is not a FIFO: mode=%v", path, fi.Mode())
	}
	return nil
}

// fifoFile checks that the descriptor opened is a FIFO (the path may have
// changed since statFIFO) and wraps it in a file that is in the runtime's
// poller, as fd is non-blocking.
func fifoFile(fd int, path string) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fstat", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		unix.Close(fd)
		return nil, fmt.Errorf("%s is not a FIFO: mode=%#o", path, st.Mode)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// fifoReader reads a FIFO without taking "no writer yet" for end-of-file.
// read(2) returns 0 whenever the FIFO has no writer; poll(2) on Linux sets
// POLLHUP only if a writer has opened the FIFO since this reader did and
// none is left. So a zero read with POLLHUP is the end, and a zero read
// without it means "wait for a writer": the runtime's poller reports the
// FIFO readable when one writes, or hangs up.
type fifoReader struct {
	*os.File
	rc     syscall.RawConn
	readFn func(fd uintptr) bool // fr.read, bound once so that Read does not allocate

	// Read's arguments and results, for readFn.
	p   []byte
	n   int
	err error
	pfd [1]unix.PollFd
}

func (fr *fifoReader) Read(p []byte) (int, error) {
	fr.p, fr.n, fr.err = p, 0, nil
	err := fr.rc.Read(fr.readFn)
	fr.p = nil
	if err != nil {
		return 0, &fs.PathError{Op: "read", Path: fr.Name(), Err: err}
	}
	return fr.n, fr.err
}

// read is called by the runtime's poller; it returns false to wait until
// the descriptor is readable.
func (fr *fifoReader) read(fd uintptr) bool {
	for {
		n, err := unix.Read(int(fd), fr.p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false
		case err != nil:
			fr.err = &fs.PathError{Op: "read", Path: fr.Name(), Err: err}
			return true
		case n > 0:
			fr.n = n
			return true
		}
		fr.pfd[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		if _, err := unix.Poll(fr.pfd[:], 0); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			fr.err = os.NewSyscallError("poll", err)
			return true
		}
		switch ev := fr.pfd[0].Revents; {
		case ev&unix.POLLIN != 0:
			continue // a writer came, wrote and left since the read
		case ev&unix.POLLHUP != 0:
			fr.err = io.EOF
			return true
		}
		return false
	}
}

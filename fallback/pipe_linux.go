package fallback

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// adoptPipe checks that f is a pipe open in the direction wanted and
// returns a file for it that is in the runtime's poller, so that
// deadlines and Close can interrupt a blocked call.
func adoptPipe(f *os.File, write bool) (*os.File, error) {
	if err := checkPipe(f); err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil {
		return nil, err
	}
	if ferr != nil {
		return nil, os.NewSyscallError("fcntl", ferr)
	}
	want, dir := unix.O_RDONLY, "reading"
	if write {
		want, dir = unix.O_WRONLY, "writing"
	}
	if acc := flags & unix.O_ACCMODE; acc != want && acc != unix.O_RDWR {
		return nil, fmt.Errorf("%s is not open for %s: flags=%#x", f.Name(), dir, flags)
	}
	if f.SetDeadline(time.Time{}) == nil {
		return f, nil // already in the poller
	}
	// os.NewFile puts a descriptor in the poller when it is non-blocking.
	var nfd int
	if err := rc.Control(func(fd uintptr) { nfd, ferr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if ferr != nil {
		return nil, os.NewSyscallError("fcntl", ferr)
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	nf := os.NewFile(uintptr(nfd), f.Name())
	f.Close()
	return nf, nil
}

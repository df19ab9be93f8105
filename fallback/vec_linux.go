package fallback

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vecReader reads a packet with one readv(2) through the runtime's poller
// (syscall.RawConn), scattered over its tag byte, the caller's buffer and a
// spare area, so that a message that fits lands in the caller's buffer
// without a copy. Deadlines and Close work as for Read. It allocates
// nothing per call: the iovec array and the callback live in the struct.
//
// Only the receive side scatters. A gathered send (writev of the tag and
// the message) makes the kernel copy the message to an odd offset of its
// buffer, which measured slower on amd64 than copying it behind the tag in
// a staging buffer first.
type vecReader struct {
	rc  syscall.RawConn
	iov [3]unix.Iovec
	n   int
	err error
	fn  func(fd uintptr) bool
}

// newVecReader returns a vecReader for c, or nil if c has no descriptor.
func newVecReader(c conn) *vecReader {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	v := &vecReader{rc: rc}
	v.fn = v.readOnce
	return v
}

// read reads one packet into hdr, p and spare, in that order, and returns
// its length (0: the peer closed).
func (v *vecReader) read(hdr, p, spare []byte) (int, error) {
	for i, b := range [3][]byte{hdr, p, spare} {
		v.iov[i].Base = unsafe.SliceData(b)
		v.iov[i].SetLen(len(b))
	}
	v.n, v.err = 0, nil
	err := v.rc.Read(v.fn)
	v.iov = [3]unix.Iovec{} // drop the references to the buffers
	if v.err != nil {
		err = v.err
	}
	return v.n, err
}

func (v *vecReader) readOnce(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&v.iov[0])), uintptr(len(v.iov)))
		switch errno {
		case 0:
			v.n = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			v.err = errno
			return true
		}
	}
}

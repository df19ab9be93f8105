package ring

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shmlane/shmlane/internal/layout"
)

const sealsRequired = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// Create makes a new segment: a memfd (MFD_CLOEXEC|MFD_ALLOW_SEALING),
// sized once, sealed against shrinking, growing and further sealing (so a
// peer can never truncate it under the other and cause SIGBUS), mapped
// shared, with its header written.
func Create(cfg *Config) (*Segment, error) { return create(cfg, 0) }

// create makes a segment with the given feature bits.
func create(cfg *Config, features uint32) (*Segment, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Capacity == 0 {
		c.Capacity = DefaultCapacity
	}
	if c.Capacity < 0 {
		return nil, fmt.Errorf("capacity must be a power of two in [%d, %d]: capacity=%d", MinCapacity, MaxCapacity, c.Capacity)
	}
	if c.Name == "" {
		c.Name = "shmlane"
	}
	if c.OOBCapacity < 0 || c.OOBCapacity != 0 && features&layout.FeatureMPMC != 0 {
		return nil, fmt.Errorf("out-of-band capacity must be 0 (none) or a power of two in [%d, %d], and 0 for an MPMC ring: oobcapacity=%d", layout.MinOOBCapacity, layout.MaxOOBCapacity, c.OOBCapacity)
	}
	geo, err := layout.Plan(uint64(c.Capacity), uint64(c.OOBCapacity), features)
	if err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate(c.Name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("create memfd: %w", os.NewSyscallError("memfd_create", err))
	}
	f := os.NewFile(uintptr(fd), "memfd:"+c.Name)
	if err := unix.Ftruncate(fd, int64(geo.Size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("size memfd: %w", os.NewSyscallError("ftruncate", err))
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, sealsRequired); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal memfd: %w", os.NewSyscallError("fcntl", err))
	}
	mem, err := mapGuarded(fd, int(geo.Size))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("map segment: %w", err)
	}
	if err := layout.Init(mem, geo, uint32(os.Getpid())); err != nil {
		unmapGuarded(mem)
		f.Close()
		return nil, fmt.Errorf("write segment header: %w", err)
	}
	return newSegment(f, mem, geo), nil
}

// Open maps a segment received from another process (inherited, or passed
// with SCM_RIGHTS). It checks that the file is sealed against shrinking and
// growing and that the header is valid before anything else reads it. Open
// duplicates f; the caller keeps ownership of f.
func Open(f *os.File) (*Segment, error) { return open(f, 0) }

// open is Open for a segment whose MPMC feature bit must equal mpmc's.
func open(f *os.File, mpmc uint32) (*Segment, error) {
	if f == nil {
		return nil, fmt.Errorf("open segment: nil file")
	}
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("open segment: %w", err)
	}
	fd := -1
	var dupErr error
	if cerr := raw.Control(func(s uintptr) {
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); cerr != nil {
		return nil, fmt.Errorf("open segment: %w", cerr)
	}
	if dupErr != nil {
		return nil, fmt.Errorf("open segment: %w", os.NewSyscallError("fcntl", dupErr))
	}
	return openFd(fd, mpmc)
}

// OpenFd is Open for a raw file descriptor, which it duplicates.
func OpenFd(fd int) (*Segment, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open segment: %w", os.NewSyscallError("fcntl", err))
	}
	return openFd(nfd, 0)
}

// openFd takes ownership of fd.
func openFd(fd int, mpmc uint32) (*Segment, error) {
	f := os.NewFile(uintptr(fd), "shmlane-segment")
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open segment: not a sealable memfd: %w", os.NewSyscallError("fcntl", err))
	}
	if seals&(unix.F_SEAL_SHRINK|unix.F_SEAL_GROW) != unix.F_SEAL_SHRINK|unix.F_SEAL_GROW {
		f.Close()
		return nil, fmt.Errorf("open segment: memfd must be sealed against shrink and grow: seals=%#x", seals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("open segment: %w", os.NewSyscallError("fstat", err))
	}
	maxSize := int64(layout.DataOffset + layout.MaxCapacity + layout.MaxOOBCapacity)
	if st.Size < layout.DataOffset || st.Size > maxSize {
		f.Close()
		return nil, fmt.Errorf("open segment: %w: size %d outside [%d, %d]", ErrCorrupt, st.Size, layout.DataOffset, maxSize)
	}
	mem, err := mapGuarded(fd, int(st.Size))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open segment: %w", err)
	}
	geo, err := layout.Parse(mem)
	if err != nil {
		unmapGuarded(mem)
		f.Close()
		return nil, fmt.Errorf("open segment: %w", err)
	}
	if geo.Features&layout.FeatureMPMC != mpmc {
		unmapGuarded(mem)
		f.Close()
		if mpmc == 0 {
			return nil, fmt.Errorf("open segment: segment holds an MPMC ring, not an SPSC ring")
		}
		return nil, fmt.Errorf("open segment: segment holds an SPSC ring, not an MPMC ring")
	}
	return newSegment(f, mem, geo), nil
}

// File returns a duplicate of the segment's memfd, for passing to another
// process (exec.Cmd.ExtraFiles, SCM_RIGHTS). The caller closes it.
func (s *Segment) File() (*os.File, error) {
	if err := s.ref(); err != nil {
		return nil, err
	}
	defer s.unref()
	raw, err := s.f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var dupErr error
	if err := raw.Control(func(fd uintptr) {
		// Close-on-exec here; exec.Cmd.ExtraFiles and SCM_RIGHTS hand
		// the other process a descriptor without the flag.
		nfd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, os.NewSyscallError("fcntl", dupErr)
	}
	return os.NewFile(uintptr(nfd), s.f.Name()), nil
}

func (s *Segment) unmap() { unmapGuarded(s.mem) }

// guardSize is the inaccessible gap mapped on each side of a segment.
const guardSize = layout.PageSize

// mapGuarded maps size bytes of the memfd shared and read-write between two
// inaccessible guard pages: a read or write that runs off either end of
// the segment faults at once instead of touching a neighbouring mapping.
// Every offset taken from the segment is checked before use (see spsc.go
// and mpmc.go); the guard pages make a missed check fail loudly, and are
// what the hostile-peer tests rely on to prove none is missed.
func mapGuarded(fd, size int) ([]byte, error) {
	total := uintptr(size) + 2*guardSize
	base, err := unix.MmapPtr(-1, 0, nil, total, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	addr := unsafe.Add(base, guardSize)
	got, err := unix.MmapPtr(fd, 0, addr, uintptr(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_FIXED)
	if err != nil {
		unix.MunmapPtr(base, total)
		return nil, os.NewSyscallError("mmap", err)
	}
	if got != addr {
		unix.MunmapPtr(base, total)
		unix.MunmapPtr(got, uintptr(size))
		return nil, fmt.Errorf("mmap: MAP_FIXED mapped at %p, not %p", got, addr)
	}
	return unsafe.Slice((*byte)(addr), size), nil
}

// unmapGuarded unmaps a mapping made by mapGuarded, guard pages included.
func unmapGuarded(mem []byte) {
	base := unsafe.Add(unsafe.Pointer(unsafe.SliceData(mem)), -guardSize)
	unix.MunmapPtr(base, uintptr(len(mem))+2*guardSize)
}

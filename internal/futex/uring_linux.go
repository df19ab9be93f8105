package futex

// Parking without a thread. A futex wait in the futex system call holds
// the OS thread of the goroutine that waits: a process with thousands of
// idle endpoints would hold thousands of threads, and Go stops a program
// at 10,000 (runtime/debug.SetMaxThreads). Past a small budget of such
// waits, Wait hands the wait to the kernel through io_uring instead
// (IORING_OP_FUTEX_WAIT, Linux 6.7): one ring per process holds every
// parked wait, the kernel posts a completion when the word is woken, and
// an eventfd registered with the ring, read by one goroutine in the
// runtime's poller, says when completions are there. A parked goroutine
// holds no thread; the whole process needs none beyond the runtime's own.
//
// The futex word, the value compared and the wake are the same as with
// the system call (a shared futex: no FUTEX2_PRIVATE), so the peer's side
// is unchanged: its FUTEX_WAKE completes the parked wait like a sleeping
// thread's.
//
// Where io_uring cannot be used (an older kernel, a seccomp profile that
// forbids it, kernel.io_uring_disabled), Wait falls back to the system
// call for every wait, as before: one thread per sleeper.

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ThreadWaits is how many waits of this process may sleep in the futex
// system call, each holding an OS thread, at once; the waits past it are
// parked in io_uring (see the file comment). A thread's wait is woken a
// little sooner (no eventfd and poller hop), so the first few sleepers
// keep it. Set it before the first Wait; 0 parks every wait.
var ThreadWaits int32 = 16

// threadWaits counts the waits sleeping in the system call.
var threadWaits atomic.Int32

// io_uring ABI (include/uapi/linux/io_uring.h).
const (
	opFutexWait = 51 // IORING_OP_FUTEX_WAIT, Linux 6.7

	setupCQSize     = 1 << 3
	featSingleMmap  = 1 << 0
	featNoDrop      = 1 << 1
	offSQRing       = 0
	offCQRing       = 0x8000000
	offSQEs         = 0x10000000
	enterGetEvents  = 1 << 0
	registerEventfd = 4
	sqCQOverflow    = 1 << 1
	futex2SizeU32   = 0x02
	futexBitsetAll  = 0xffffffff
	sqeSize         = 64
	cqeSize         = 16
	uringSQEntries  = 256
	uringCQEntries  = 1 << 15
)

// uringParams is struct io_uring_params.
type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  [10]uint32 // head tail ring_mask ring_entries flags dropped array resv1 resv2(u64)
	cqOff                                                                  [10]uint32 // head tail ring_mask ring_entries overflow cqes flags resv1 resv2(u64)
}

// parker is the process's io_uring for parked waits.
type parker struct {
	fd     int
	ring   []byte // SQ and CQ rings (one mapping: IORING_FEAT_SINGLE_MMAP)
	sqes   []byte
	events *os.File // the eventfd, in the runtime's poller

	sqHead, sqTail, sqFlags *atomic.Uint32
	sqMask                  uint32
	sqArray                 unsafe.Pointer
	cqHead, cqTail          *atomic.Uint32
	cqMask                  uint32
	cqes                    unsafe.Pointer

	smu sync.Mutex // serialises submissions

	// wmu guards the requests in the kernel: by user_data, and the one
	// that a new wait on a word may join (see park).
	wmu     sync.Mutex
	byID    map[uint64]*request
	byWord  map[uintptr]*request
	nextID  uint64
	broken  atomic.Bool // the kernel refused the operation: use the system call
	started sync.Once
}

var (
	uringOnce sync.Once
	uring     *parker // nil if io_uring cannot be used
)

// Parking reports whether this process parks the waits past ThreadWaits
// in io_uring (false: each holds a thread), setting io_uring up if it has
// not been.
func Parking() bool { return theParker() != nil }

// theParker returns the process's parker, setting it up on first use, or
// nil where io_uring cannot be used.
func theParker() *parker {
	uringOnce.Do(func() {
		p, err := newParker()
		if err == nil {
			uring = p
		}
	})
	if uring == nil || uring.broken.Load() {
		return nil
	}
	return uring
}

func newParker() (*parker, error) {
	params := uringParams{flags: setupCQSize, cqEntries: uringCQEntries}
	r, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uringSQEntries, uintptr(unsafe.Pointer(&params)), 0)
	if e != 0 {
		return nil, os.NewSyscallError("io_uring_setup", e)
	}
	p := &parker{fd: int(r), byID: make(map[uint64]*request), byWord: make(map[uintptr]*request), nextID: 1}
	ok := false
	defer func() {
		if !ok {
			p.close()
		}
	}()
	if params.features&featSingleMmap == 0 || params.features&featNoDrop == 0 {
		return nil, errors.New("io_uring lacks single mmap or no-drop completions")
	}
	sqSize := int(params.sqOff[6]) + int(params.sqEntries)*4
	cqSize := int(params.cqOff[5]) + int(params.cqEntries)*cqeSize
	ring, err := unix.Mmap(p.fd, offSQRing, max(sqSize, cqSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap io_uring rings", err)
	}
	p.ring = ring
	sqes, err := unix.Mmap(p.fd, offSQEs, int(params.sqEntries)*sqeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap io_uring sqes", err)
	}
	p.sqes = sqes
	u32 := func(off uint32) *atomic.Uint32 { return (*atomic.Uint32)(unsafe.Pointer(&ring[off])) }
	p.sqHead, p.sqTail, p.sqFlags = u32(params.sqOff[0]), u32(params.sqOff[1]), u32(params.sqOff[4])
	p.sqMask = u32(params.sqOff[2]).Load()
	p.sqArray = unsafe.Pointer(&ring[params.sqOff[6]])
	p.cqHead, p.cqTail = u32(params.cqOff[0]), u32(params.cqOff[1])
	p.cqMask = u32(params.cqOff[2]).Load()
	p.cqes = unsafe.Pointer(&ring[params.cqOff[5]])

	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	p.events = os.NewFile(uintptr(efd), "io_uring-eventfd")
	fd32 := int32(efd)
	if _, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(p.fd), registerEventfd, uintptr(unsafe.Pointer(&fd32)), 1, 0, 0); e != 0 {
		return nil, os.NewSyscallError("io_uring_register eventfd", e)
	}
	ok = true
	return p, nil
}

func (p *parker) close() {
	if p.events != nil {
		p.events.Close()
	}
	if p.sqes != nil {
		unix.Munmap(p.sqes)
	}
	if p.ring != nil {
		unix.Munmap(p.ring)
	}
	unix.Close(p.fd)
}

// submit queues one request and enters it into the kernel.
func (p *parker) submit(op uint8, fd int32, addr, addr2, addr3, userData uint64) error {
	p.smu.Lock()
	defer p.smu.Unlock()
	tail := p.sqTail.Load()
	if tail-p.sqHead.Load() > p.sqMask {
		// Cannot happen: every submission is entered at once, and the
		// kernel consumes it during the call.
		return errors.New("io_uring submission queue full")
	}
	idx := tail & p.sqMask
	sqe := p.sqes[idx*sqeSize : (idx+1)*sqeSize : (idx+1)*sqeSize]
	clear(sqe)
	sqe[0] = op
	*(*int32)(unsafe.Pointer(&sqe[4])) = fd
	*(*uint64)(unsafe.Pointer(&sqe[8])) = addr2
	*(*uint64)(unsafe.Pointer(&sqe[16])) = addr
	*(*uint64)(unsafe.Pointer(&sqe[32])) = userData
	*(*uint64)(unsafe.Pointer(&sqe[48])) = addr3
	*(*uint32)(unsafe.Add(p.sqArray, 4*uintptr(idx))) = idx
	p.sqTail.Store(tail + 1) // the kernel reads the entry after this store
	for {
		n, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(p.fd), 1, 0, 0, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN || e == unix.EBUSY:
			// Out of memory for the request, or completions to reap
			// first: let the reader run, and try again.
			time.Sleep(50 * time.Microsecond)
			continue
		case e != 0:
			return os.NewSyscallError("io_uring_enter", e)
		case n != 1:
			return errors.New("io_uring_enter consumed no submission")
		}
		return nil
	}
}

// reap runs in its own goroutine once the first wait is parked: it waits
// in the poller for the eventfd and hands each completion to its wait.
func (p *parker) reap() {
	var buf [8]byte
	for {
		p.drain()
		if _, err := p.events.Read(buf[:]); err != nil {
			return // closed: cannot happen, the parker lives as long as the process
		}
	}
}

// request is a futex wait in the kernel, which any number of parked waits
// on its word and value share.
type request struct {
	id   uint64
	addr uintptr
	val  uint32
	done chan struct{} // closed when the request completes
	res  int32         // its result, set before done is closed
}

// drain hands every posted completion to its waits.
func (p *parker) drain() {
	for {
		head, tail := p.cqHead.Load(), p.cqTail.Load()
		if head == tail {
			if p.sqFlags.Load()&sqCQOverflow != 0 {
				// Completions the ring had no room for: let the
				// kernel post them now.
				unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(p.fd), 0, 0, enterGetEvents, 0, 0)
				continue
			}
			return
		}
		for ; head != tail; head++ {
			cqe := unsafe.Add(p.cqes, cqeSize*uintptr(head&p.cqMask))
			userData := *(*uint64)(cqe)
			res := *(*int32)(unsafe.Add(cqe, 8))
			p.wmu.Lock()
			r := p.byID[userData]
			delete(p.byID, userData)
			if r != nil && p.byWord[r.addr] == r {
				delete(p.byWord, r.addr)
			}
			p.wmu.Unlock()
			if r != nil {
				r.res = res
				close(r.done)
			}
		}
		p.cqHead.Store(head)
	}
}

// park waits in io_uring while *word == val, like the system call. It
// reports handled false, having done nothing, if the kernel refuses the
// operation (the caller then uses the system call).
//
// A wait that times out leaves its request in the kernel, and the next
// wait on the same word and value joins it instead of submitting another:
// the rings sleep in bounded slices (a poll interval, then a look at the
// ring, then another sleep on the same word), and an idle connection
// re-parks every slice. Joining costs no system call, where withdrawing
// the request (IORING_OP_ASYNC_CANCEL) would cost one and a walk of every
// pending futex request in the kernel. A request that nobody waits for
// any more ends at the next wake of its word, as the words the rings
// sleep on are woken whenever they change; until then it holds a few
// hundred bytes of kernel memory.
func (p *parker) park(word *atomic.Uint32, val uint32, timeout time.Duration) (handled bool, err error) {
	p.started.Do(func() { go p.reap() })
	addr := uintptr(unsafe.Pointer(word))
	p.wmu.Lock()
	r := p.byWord[addr]
	if r == nil || r.val != val {
		r = &request{id: p.nextID, addr: addr, val: val, done: make(chan struct{})}
		p.nextID++
		p.byID[r.id] = r
		p.byWord[addr] = r
		// Submitted under wmu, so that a second wait on the word
		// joins a request that is in the kernel.
		if err := p.submit(opFutexWait, futex2SizeU32, uint64(addr), uint64(val), futexBitsetAll, r.id); err != nil {
			delete(p.byID, r.id)
			delete(p.byWord, addr)
			p.wmu.Unlock()
			return false, nil
		}
	}
	p.wmu.Unlock()
	// A timer here, not a timeout in the kernel. A wait without a timeout
	// returns after parkBackstop anyway, as a spurious wakeup (which Wait
	// allows): whatever the kernel does with the request, the wait ends.
	limit, backstop := timeout, timeout < 0
	if backstop {
		limit = parkBackstop
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-r.done:
		return p.result(r.res)
	case <-t.C:
		if word.Load() != val || backstop {
			return true, nil
		}
		return true, os.ErrDeadlineExceeded
	}
}

// parkBackstop bounds a parked wait that has no timeout.
const parkBackstop = 10 * time.Second

// result turns a completion's result into Wait's.
func (p *parker) result(res int32) (bool, error) {
	switch e := unix.Errno(-res); {
	case res >= 0, e == unix.EAGAIN, e == unix.EINTR, e == unix.ECANCELED:
		// Woken, the word had changed, or interrupted: the caller
		// re-checks its condition.
		return true, nil
	case e == unix.EINVAL || e == unix.EOPNOTSUPP:
		// A kernel without IORING_OP_FUTEX_WAIT: the system call from
		// now on.
		p.broken.Store(true)
		return false, nil
	default:
		return true, os.NewSyscallError("io_uring futex wait", e)
	}
}

package ring

// The lifecycle that every endpoint shares: the SPSC Producer and Consumer
// (spsc.go, and their out-of-band lanes in oob.go) and the MPMCProducer and
// MPMCConsumer (mpmc.go). Each ring adds what its own attach and detach
// do, in spsc.go endpoint.close and mpmc.go mpmc.closeMPMC.
//
//   - Attach takes a reference to the segment, so the mapping stays until
//     the endpoint is closed, and maps the endpoint's area.
//   - Every operation runs between begin and mu.Unlock: begin takes mu and
//     refuses a closed endpoint (ErrClosed), then a corrupt one (the sticky
//     error), then a call the outstanding reservation or peek does not
//     allow (ErrPending, ErrNoPending). (The SPSC producer's out-of-band
//     calls take a lock of their own, oob.go Producer.oobBegin, which its
//     Close waits for too.)
//   - The first corruption an endpoint finds is sticky (corrupt): every
//     later operation returns it.
//   - Close marks the endpoint closed, wakes the operation in progress if
//     it waits (the wait returns ErrClosed, see waiter.wait), waits for it
//     by taking mu, and only then detaches: whatever the ring stores in
//     shared memory to say that this side has gone comes after this side's
//     last operation. Close is idempotent.

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/shmlane/shmlane/internal/layout"
)

// area is an endpoint's view of one area of its segment: the data area,
// or the out-of-band lane.
type area struct {
	seg      *Segment
	data     []byte
	capacity uint64
	mask     uint64
	maxMsg   int
}

// mapArea points a at data, an area of s.
func (a *area) mapArea(s *Segment, data []byte) {
	a.seg = s
	a.data = data
	a.capacity = uint64(len(data))
	a.mask = offsetMask(a.capacity)
	a.maxMsg = layout.MaxMessage(a.capacity)
}

// offsetMask maps a position to the offset of its 8-byte word in a data
// area of the given capacity (a power of two). Positions are checked for
// alignment where they are read from the segment; the mask keeps every
// word access inside the area even if a check were missed.
func offsetMask(capacity uint64) uint64 {
	return (capacity - 1) &^ (layout.RecordAlign - 1)
}

// word returns the atomic view of the 8-byte word at position pos.
func (a *area) word(pos uint64) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&a.data[pos&a.mask]))
}

// lifecycle is an endpoint from attach to Close: its area, the operation
// lock that Close waits on, the waiting machinery (whose closed flag and
// deadline end waits), the sticky error and the outstanding reservation or
// peek.
type lifecycle struct {
	mu sync.Mutex // held by every operation; Close takes it to wait them out
	area
	waiter
	err     error // sticky: the first ErrCorrupt
	closeMu sync.Mutex
	done    bool
	pending bool // a producer's reservation or a consumer's peek is outstanding
}

// attach takes a reference to s for this endpoint and maps data, an area
// of s.
func (l *lifecycle) attach(s *Segment, data []byte) error {
	if err := s.ref(); err != nil {
		return err
	}
	l.mapArea(s, data)
	return nil
}

// pendingRule is what an operation needs of the outstanding reservation
// (Reserve) or peek (Peek).
type pendingRule uint8

const (
	anyPending  pendingRule = iota // Peek: it returns the outstanding message again
	nonePending                    // ErrPending if a reservation or peek is outstanding
	onePending                     // ErrNoPending unless one is (Commit, Abort, Release: they end it)
)

// begin starts an operation: it takes the operation lock and checks that
// the endpoint is usable and that rule allows the call. On error the lock
// is not held.
func (l *lifecycle) begin(rule pendingRule) error {
	l.mu.Lock()
	var err error
	switch {
	case l.closed.Load():
		err = ErrClosed
	case l.err != nil:
		err = l.err
	case rule == nonePending && l.pending:
		err = ErrPending
	case rule == onePending && !l.pending:
		err = ErrNoPending
	default:
		return nil
	}
	l.mu.Unlock()
	return err
}

// corrupt records a sticky corruption error and returns the sticky error.
func (l *lifecycle) corrupt(err error) error {
	if l.err == nil {
		l.err = err
	}
	return l.err
}

// close stops this endpoint's operations (the one in progress is woken and
// returns ErrClosed), then, holding mu so that none is in progress, calls
// detach, which says in shared memory that this side has gone and wakes
// the peers, and drops the endpoint's reference to the mapping. It is
// idempotent.
func (l *lifecycle) close(detach func()) error {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if l.done {
		return nil
	}
	l.done = true
	l.closed.Store(true)
	l.kick()
	l.mu.Lock() // waits for the operation in progress, now woken
	detach()
	l.unmap() // no kick from another goroutine touches the words after this
	l.seg.unref()
	l.data = nil
	l.mu.Unlock()
	return nil
}

package ring

import (
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/shmlane/shmlane/internal/layout"
)

// Capacity bounds and default of a segment's data area, in bytes.
const (
	MinCapacity     = layout.MinCapacity
	MaxCapacity     = layout.MaxCapacity
	DefaultCapacity = 1 << 20
)

// Config configures a new segment. The zero value is valid.
type Config struct {
	// Capacity is the size of the data area in bytes: a power of two in
	// [MinCapacity, MaxCapacity] (4 KiB to 1 GiB). Zero means
	// DefaultCapacity (1 MiB). The largest message is MaxMessage(Capacity):
	// a little under half of it.
	Capacity int
	// OOBCapacity is the size of the out-of-band lane, in bytes: 0 for
	// none, else a power of two in [4 KiB, 1 MiB]. The lane carries
	// urgent messages (Producer.SendUrgent) that the consumer receives
	// before any data message, and flushes (Producer.Flush). SPSC only.
	OOBCapacity int
	// Name labels the memfd (visible in /proc/PID/fd and /proc/PID/maps).
	// Empty means "shmlane".
	Name string
}

// Segment is one shared-memory segment: a sealed memfd mapped into this
// process. It holds one SPSC ring; Producer and Consumer attach to its two
// sides. A Segment is safe for concurrent use. Its mapping stays until the
// Segment and every endpoint made from it are closed.
type Segment struct {
	f    *os.File
	mem  []byte
	geo  layout.Geometry
	refs atomic.Int32 // the Segment's own reference plus one per endpoint

	closeOnce sync.Once
	closed    atomic.Bool
	race      raceSentinel
}

// MaxMessage returns the largest message a ring of the given capacity
// accepts: Capacity/2 - 16 bytes, and at most 16 MiB - 1. Capacity 0 means
// DefaultCapacity, as in Config; a negative capacity gives 0.
func MaxMessage(capacity int) int {
	if capacity == 0 {
		capacity = DefaultCapacity
	}
	if capacity < 0 {
		return 0
	}
	return layout.MaxMessage(uint64(capacity))
}

func newSegment(f *os.File, mem []byte, geo layout.Geometry) *Segment {
	s := &Segment{f: f, mem: mem, geo: geo}
	s.refs.Store(1)
	s.race.init(f)
	return s
}

// Capacity is the size of the data area in bytes.
func (s *Segment) Capacity() int { return int(s.geo.Capacity) }

// MaxMessage is the largest message the segment's ring accepts.
func (s *Segment) MaxMessage() int { return layout.MaxMessage(s.geo.Capacity) }

// Size is the size of the whole segment in bytes.
func (s *Segment) Size() int { return len(s.mem) }

// Close drops the Segment's reference to the mapping. The mapping and the
// memfd go when every endpoint made from the Segment is closed too. Close is
// idempotent.
func (s *Segment) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.unref()
	})
	return nil
}

// ref takes a reference for a new endpoint.
func (s *Segment) ref() error {
	for {
		n := s.refs.Load()
		if n <= 0 || s.closed.Load() {
			return ErrClosed
		}
		if s.refs.CompareAndSwap(n, n+1) {
			return nil
		}
	}
}

// tryRef takes a reference if the mapping is still there.
func (s *Segment) tryRef() bool {
	for {
		n := s.refs.Load()
		if n <= 0 {
			return false
		}
		if s.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (s *Segment) unref() {
	if s.refs.Add(-1) == 0 {
		s.unmap()
		s.f.Close()
	}
}

// u64 and u32 return atomic views of words of the mapping. Offsets are
// constants from layout or checked by layout.Parse; the alignment of the
// mapping (page) and of every offset (8) is checked by the layout tests.
func (s *Segment) u64(off int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&s.mem[off]))
}

func (s *Segment) u32(off int) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&s.mem[off]))
}

// data returns the data area.
func (s *Segment) data() []byte { return s.area(layout.AreaData) }

func (s *Segment) area(i int) []byte {
	a := s.geo.Areas[i]
	return s.mem[a.Off : a.Off+a.Len : a.Off+a.Len]
}

// OOBCapacity is the size of the out-of-band lane (0: none).
func (s *Segment) OOBCapacity() int { return int(s.geo.OOBCapacity) }

// side holds the views of one side's slots.
type side struct {
	pos, msgs, bytes, wakes, sleeps *atomic.Uint64 // hot slot
	dmsgs, dbytes                   *atomic.Uint64 // hot slot
	seq, waiting, closed, pid       *atomic.Uint32 // control slot
}

func (s *Segment) side(hot, ctl int) side {
	h, c := layout.SlotOffset(hot), layout.SlotOffset(ctl)
	return side{
		pos:     s.u64(h + layout.HotPos),
		msgs:    s.u64(h + layout.HotMsgs),
		bytes:   s.u64(h + layout.HotBytes),
		wakes:   s.u64(h + layout.HotWakes),
		sleeps:  s.u64(h + layout.HotSleeps),
		dmsgs:   s.u64(h + layout.HotDiscardMsgs),
		dbytes:  s.u64(h + layout.HotDiscardBytes),
		seq:     s.u32(c + layout.CtlSeq),
		waiting: s.u32(c + layout.CtlWaiting),
		closed:  s.u32(c + layout.CtlClosed),
		pid:     s.u32(c + layout.CtlPID),
	}
}

func (s *Segment) producerSide() side { return s.side(layout.SlotProducer, layout.SlotProducerCtl) }
func (s *Segment) consumerSide() side { return s.side(layout.SlotConsumer, layout.SlotConsumerCtl) }

// Stats are the counters and indices of a segment, read from shared memory.
// Any process that maps the segment can read them; they are updated with
// every publish, so they may lag an operation in progress.
type Stats struct {
	Capacity       uint64 `json:"capacity"`
	Head           uint64 `json:"head"` // consumer position (bytes)
	Tail           uint64 `json:"tail"` // producer position (bytes)
	ProducerPID    uint32 `json:"producer_pid"`
	ConsumerPID    uint32 `json:"consumer_pid"`
	ProducerClosed bool   `json:"producer_closed"`
	ConsumerClosed bool   `json:"consumer_closed"`
	Sent           uint64 `json:"sent"` // messages committed by the producer
	SentBytes      uint64 `json:"sent_bytes"`
	Received       uint64 `json:"received"` // messages released by the consumer
	ReceivedBytes  uint64 `json:"received_bytes"`
	ProducerWakes  uint64 `json:"producer_wakes"`  // FUTEX_WAKE calls the producer issued
	ConsumerWakes  uint64 `json:"consumer_wakes"`  // FUTEX_WAKE calls the consumer issued
	ProducerSleeps uint64 `json:"producer_sleeps"` // futex sleeps of the producer (ring full)
	ConsumerSleeps uint64 `json:"consumer_sleeps"` // futex sleeps of the consumer (ring empty)

	// Out-of-band lane (zero without one).
	OOBCapacity    uint64 `json:"oob_capacity"`
	UrgentSent     uint64 `json:"urgent_sent"` // urgent messages sent
	UrgentReceived uint64 `json:"urgent_received"`
	Flushes        uint64 `json:"flushes"`   // Flush calls
	Discarded      uint64 `json:"discarded"` // data messages discarded by flushes
	DiscardedBytes uint64 `json:"discarded_bytes"`
}

// Used is the fill level in bytes (records, headers and padding).
func (st Stats) Used() uint64 { return st.Tail - st.Head }

// Stats reads the segment's counters.
//
// It works as long as the Segment or any endpoint made from it is open, and
// returns the zero Stats after that.
func (s *Segment) Stats() Stats {
	if !s.tryRef() {
		return Stats{}
	}
	defer s.unref()
	p, c := s.producerSide(), s.consumerSide()
	st := Stats{
		Capacity:       s.geo.Capacity,
		Head:           c.pos.Load(),
		Tail:           p.pos.Load(),
		ProducerPID:    p.pid.Load(),
		ConsumerPID:    c.pid.Load(),
		ProducerClosed: p.closed.Load() != 0,
		ConsumerClosed: c.closed.Load() != 0,
		Sent:           p.msgs.Load(),
		SentBytes:      p.bytes.Load(),
		Received:       c.msgs.Load(),
		ReceivedBytes:  c.bytes.Load(),
		ProducerWakes:  p.wakes.Load(),
		ConsumerWakes:  c.wakes.Load(),
		ProducerSleeps: p.sleeps.Load(),
		ConsumerSleeps: c.sleeps.Load(),
		OOBCapacity:    s.geo.OOBCapacity,
		Discarded:      c.dmsgs.Load(),
		DiscardedBytes: c.dbytes.Load(),
	}
	if s.geo.OOBCapacity != 0 {
		lp, lc := s.laneSides()
		st.UrgentSent, st.UrgentReceived = lp.msgs.Load(), lc.msgs.Load()
		st.Flushes = s.oobWords().flushes.Load()
	}
	return st
}

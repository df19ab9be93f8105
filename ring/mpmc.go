package ring

// The MPMC ring: any number of producer processes and any number of
// consumer processes share one data area of variable-length records,
// without a process-shared lock: a process killed at any instruction can
// delay the others by at most one poll interval, never stop them.
//
// Design. It follows Agrona's ManyToOneRingBuffer (claim space, write,
// publish the record's header) and the kernel BPF ring buffer (a busy state
// in the header), extended to many consumers, with the owner's pid in every
// in-progress state so that a dead owner can be detected and its work taken
// over. Three positions, each alone in its control slot, only grow:
//
//	reclaim <= head <= tail
//	[reclaim, head): records claimed by consumers, being read or done
//	[head, tail):    records claimed by producers, being written or ready
//	[tail, reclaim+capacity): free
//
// Every 8-byte word of the data area holds a record header, payload, or,
// when free, a marker naming the position the word has in the lap where it
// is next claimed: layout.Free(pos) for a former payload word, Reclaimed
// (length, tag of pos) for a former record header. A header moves through
//
//	Free -> Busy(pid) -> Data -> Reading(pid) -> Reclaimed
//	Free -> Busy(pid) -> Pad | Discard -> Reclaimed
//
// Producer: read tail t; CAS header[t] from Free(t) to Busy(pid, len); CAS
// tail from t to t+size; write the payload; CAS the header from Busy to
// Data (the publishing store). Only the owner of the Busy header at tail
// advances tail. If its tail CAS fails, the position it read was stale (the
// Free(t) it replaced was inside a record claimed since), so it puts
// Free(t) back. A record that does not fit before the end of the area is
// preceded by a Pad record claimed the same way.
//
// Consumer: read head h; CAS header[h] from Data to Reading(pid, len); CAS
// head from h to h+size; copy the payload; write Free(pos+capacity) over
// its payload words; store Reclaimed(length, tag of pos+capacity) in the
// header. Pad and Discard records at head are skipped by whoever sees them
// (a head CAS). Then it reclaims: from reclaim, over the run of records
// whose header is Reclaimed (a Pad or Discard header is first CAS'd to
// Reclaimed), one CAS of reclaim to the end of the run. The header is reset
// before the space is released, never after: once reclaim has passed a
// record, no one but the next claimer writes its words. Producers wait for
// space on reclaim; consumers wait for data on the header at head.
//
// Invariants:
//   - A header at a position in [head, tail) is Busy, Data, Pad or Discard
//     (Reading transiently at head); in [reclaim, head) it is Reading,
//     Pad, Discard or Reclaimed; every word in the free range is Free(pos)
//     or Reclaimed(pos).
//   - A free marker names its lap (a 56-bit tag in Free, 32 bits in
//     Reclaimed), so a producer with a stale tail cannot claim; only a
//     payload word equal to that exact marker could fool it.
//   - Payload words are written only by the Busy owner, and rewritten with
//     Free markers only by the Reading (or Busy, for a discard) owner: one
//     writer at a time, always the holder of the header's pid.
//
// Dead owners (found with kill(pid, 0) on the slow path only, after a wait
// has slept for a poll interval): a Busy(dead) at tail is reset to Free by
// a producer; a Busy(dead) in [head, tail) is taken over by a consumer (CAS
// to Busy(self)), its payload words reset, and marked Discard: consumers
// never see its partial record; a Reading(dead) at head is taken over and
// delivered; one below head is dropped (the dead consumer had claimed it)
// and counted. Dead pids are removed from the segment's producer and
// consumer tables; consumers get io.EOF when every producer that attached
// has closed (ErrPeerGone if one died), producers ErrPeerClosed when every
// consumer has closed (ErrPeerGone if one died).
//
// Memory ordering: every header transition is a CAS or an atomic Store
// (sequentially consistent); payload and marker writes are plain and
// happen before the owner's publishing CAS or Store, which pairs with the
// atomic Load of that header by the next owner. Sleep and wake use a
// sleeper count per side with the same store-then-load pairing as the
// SPSC ring: a producer wakes one consumer per publish only when a consumer
// sleeps; a consumer that advances reclaim wakes the sleeping producers.
// The count's top bit (pendingBit) suppresses further wakes until a woken
// sleeper has looked at the ring; see mpmcSide.wake, waiter.announce and
// waiter.retract for why it can neither stay set with no one asleep nor
// hide a sleeper that came after the wake. The protocol is modelled and
// checked with spin in ring/model (mpmc.pml).
//
// Hostile peers: head, tail and reclaim are checked for alignment on every
// load (loadPos) and map to offsets through a mask that keeps every word
// inside the area; every retry loop backs off and ends on Close, the
// deadline or the context; every sleep is bounded by mpmcPoll.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/shmlane/shmlane/futex"
	"github.com/shmlane/shmlane/layout"
)

const (
	// mpmcPoll bounds each futex sleep of an MPMC endpoint: after it, the
	// endpoint looks for dead peers (the slow path).
	mpmcPoll = 50 * time.Millisecond
	// statsEvery is how many messages an MPMC endpoint counts locally
	// before it adds them to the shared counters.
	statsEvery = 64
	// inProgressRounds is how many backoff rounds (see waiter.backoff)
	// a side waits for another process to finish the few instructions
	// between its two CASes before it asks whether that process is alive.
	inProgressRounds = 256
	// reclaimPasses bounds the passes of one reclaimStep.
	reclaimPasses = 16
)

// ErrTooManyPeers: the MPMC ring already has layout.MPMCMaxPeers live
// producers (or consumers) attached.
var ErrTooManyPeers = errors.New("shmlane: too many processes attached to the MPMC ring")

// CreateMPMC makes a segment holding an MPMC ring.
func CreateMPMC(cfg *Config) (*Segment, error) {
	s, err := create(cfg, layout.FeatureMPMC)
	if err != nil {
		return nil, err
	}
	d := s.data()
	for pos := 0; pos < len(d); pos += 8 {
		*(*uint64)(unsafe.Pointer(&d[pos])) = layout.Free(uint64(pos))
	}
	return s, nil
}

// OpenMPMC maps an MPMC segment received from another process (see Open).
func OpenMPMC(f *os.File) (*Segment, error) { return open(f, layout.FeatureMPMC) }

type mpmcSide struct {
	seq, count, joined, nlive   *atomic.Uint32
	sleeps, wakes, deaths, lost *atomic.Uint64
	table                       []atomic.Uint32 // pids of attached peers of this side
}

type mpmcShared struct {
	tail, head, reclaim        *atomic.Uint64
	prod, cons                 mpmcSide
	sent, sentBytes, recv, rcb *atomic.Uint64
}

func (s *Segment) mpmcSide(wait, table int) mpmcSide {
	w := layout.SlotOffset(wait)
	return mpmcSide{
		seq:    s.u32(w + layout.MPMCWaitSeq),
		count:  s.u32(w + layout.MPMCWaitCount),
		joined: s.u32(w + layout.MPMCWaitJoined),
		nlive:  s.u32(w + layout.MPMCWaitLive),
		sleeps: s.u64(w + layout.MPMCWaitSleeps),
		wakes:  s.u64(w + layout.MPMCWaitWakes),
		deaths: s.u64(w + layout.MPMCWaitDeaths),
		lost:   s.u64(w + layout.MPMCWaitDropped),
		table:  unsafe.Slice(s.u32(layout.SlotOffset(table)), layout.MPMCMaxPeers),
	}
}

func (s *Segment) mpmcShared() mpmcShared {
	st := layout.SlotOffset(layout.SlotMPMCStats)
	return mpmcShared{
		tail:      s.u64(layout.SlotOffset(layout.SlotMPMCTail)),
		head:      s.u64(layout.SlotOffset(layout.SlotMPMCHead)),
		reclaim:   s.u64(layout.SlotOffset(layout.SlotMPMCReclaim)),
		prod:      s.mpmcSide(layout.SlotMPMCProdWait, layout.SlotMPMCProducers),
		cons:      s.mpmcSide(layout.SlotMPMCConsWait, layout.SlotMPMCConsumers),
		sent:      s.u64(st + layout.MPMCSent),
		sentBytes: s.u64(st + layout.MPMCSentBytes),
		recv:      s.u64(st + layout.MPMCRecv),
		rcb:       s.u64(st + layout.MPMCRecvBytes),
	}
}

// reap removes the dead pids from a side's table and reports how many live
// entries remain.
func (m *mpmcSide) reap() (live int) {
	for i := range m.table {
		p := m.table[i].Load()
		if p == 0 {
			continue
		}
		if alive(p) {
			live++
		} else if m.table[i].CompareAndSwap(p, 0) {
			m.nlive.Add(^uint32(0))
			m.deaths.Add(1)
		}
	}
	return live
}

// live is the number of attached peers of this side (dead ones count
// until a slow path reaps them).
func (m *mpmcSide) live() int { return int(int32(m.nlive.Load())) }

// left reports whether peers of this side attached and all have left.
func (m *mpmcSide) left() bool { return m.joined.Load() != 0 && m.nlive.Load() == 0 }

// gone reports the error for "every peer of this side has left", or nil.
// closedErr is what a clean departure gives.
func (m *mpmcSide) gone(closedErr error) error {
	if !m.left() {
		return nil
	}
	if m.deaths.Load() != 0 {
		return ErrPeerGone
	}
	return closedErr
}

// pendingBit is the top bit of a side's sleeper-count word
// (layout.MPMCWaitCount): set by a waker, cleared by every sleeper when it
// announces itself and when it retracts (waiter.announce, waiter.retract).
// While it is set, the sleepers counted have been woken (or are about to
// look at the ring) and further wakes would be redundant. The count and
// the bit share one word so that a waker decides on both in one CAS.
const pendingBit uint32 = 1 << 31

// wake wakes n sleepers of a side if any sleep and none was woken since
// the last sleeper looked at the ring. It follows an atomic publishing
// store (see the ordering notes): a sleeper announces itself (count+1)
// before it re-checks the ring, so either it sees the publish or this
// sees it counted.
//
// The CAS sets pendingBit only on the exact word it read: if a sleeper
// retracted in between (count-1), the CAS fails and the word is read
// again, so the bit is never set on behalf of a sleeper that has gone
// (which would suppress every later wake). Every sleeper clears the bit
// when it retracts (waiter.retract), so a bit set while a sleeper was
// counted is cleared by that sleeper after it has looked at the ring; and
// when it announces itself (waiter.announce), so a sleeper that arrives
// after a wake is not left out of the next one.
// If the CAS keeps failing (a peer rewriting the word), it wakes anyway:
// a spare wake is harmless.
func (m *mpmcSide) wake(n int) {
	for try := 0; ; try++ {
		v := m.count.Load()
		if v&^pendingBit == 0 || v&pendingBit != 0 {
			return
		}
		if try < 4 && !m.count.CompareAndSwap(v, v|pendingBit) {
			continue
		}
		m.seq.Add(1)
		futex.Wake(m.seq, n)
		m.wakes.Add(1)
		return
	}
}

// wakeAll wakes every sleeper of a side whatever the count says, so that
// each re-checks its wait condition (the other side closed).
func (m *mpmcSide) wakeAll() {
	m.seq.Add(1)
	futex.Wake(m.seq, 1<<30)
}

// mpmc is what MPMC producers and consumers share.
type mpmc struct {
	mu       sync.Mutex // held by every operation; Close takes it
	seg      *Segment
	data     []byte
	capacity uint64
	mask     uint64
	maxMsg   int
	sh       mpmcShared
	me       *mpmcSide
	pid      uint32
	slot     int
	waiter
	err     error
	closeMu sync.Mutex
	done    bool
	msgs    uint64 // counted locally since the last flush
	bytes   uint64
}

func (e *mpmc) init(s *Segment, consumer bool, o *Options) error {
	if s.geo.Features&layout.FeatureMPMC == 0 {
		return fmt.Errorf("segment holds an SPSC ring: use Producer and Consumer")
	}
	if err := s.ref(); err != nil {
		return err
	}
	e.seg, e.data = s, s.data()
	e.capacity = uint64(len(e.data))
	e.mask = offsetMask(e.capacity)
	e.maxMsg = layout.MaxMessage(e.capacity)
	e.sh = s.mpmcShared()
	e.pid = uint32(pid())
	e.me = &e.sh.prod
	if consumer {
		e.me = &e.sh.cons
	}
	e.waiter = waiter{seq: e.me.seq, waiting: e.me.count, count: true, spin: o.spin(), poll: mpmcPoll}
	e.sleepCount = func() { e.me.sleeps.Add(1) }
	e.slot = -1
	for pass := 0; pass < 2 && e.slot < 0; pass++ {
		if pass == 1 {
			e.me.reap()
		}
		for i := range e.me.table {
			if e.me.table[i].CompareAndSwap(0, e.pid) {
				e.slot = i
				break
			}
		}
	}
	if e.slot < 0 {
		s.unref()
		return fmt.Errorf("%w: %d live", ErrTooManyPeers, layout.MPMCMaxPeers)
	}
	e.me.nlive.Add(1)
	e.me.joined.Store(1)
	return nil
}

// Transport names the mechanism underneath: "mpmc".
func (e *mpmc) Transport() string { return "mpmc" }

// MaxMessage is the largest message the ring carries.
func (e *mpmc) MaxMessage() int { return e.maxMsg }

func (e *mpmc) word(pos uint64) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&e.data[pos&e.mask]))
}

// free writes the next lap's Free markers over [from, to), positions of
// a record this endpoint owns.
func (e *mpmc) free(from, to uint64) {
	for pos := from; pos < to; pos += 8 {
		*(*uint64)(unsafe.Pointer(&e.data[pos&e.mask])) = layout.Free(pos + e.capacity)
	}
}

func (e *mpmc) begin() error {
	e.mu.Lock()
	if e.closed.Load() {
		e.mu.Unlock()
		return ErrClosed
	}
	if e.err != nil {
		e.mu.Unlock()
		return e.err
	}
	return nil
}

func (e *mpmc) fail(err error) error {
	if e.err == nil {
		e.err = err
	}
	return e.err
}

// count adds one message to the local counters and flushes them to the
// shared ones every statsEvery messages.
func (e *mpmc) count(n uint64, msgs, bytes *atomic.Uint64) {
	e.msgs++
	e.bytes += n
	if e.msgs >= statsEvery {
		e.flush(msgs, bytes)
	}
}

func (e *mpmc) flush(msgs, bytes *atomic.Uint64) {
	if e.msgs != 0 {
		msgs.Add(e.msgs)
		bytes.Add(e.bytes)
		e.msgs, e.bytes = 0, 0
	}
}

// loadPos reads a shared position (tail, head or reclaim) and checks that
// it is aligned; a peer's scribble there is corruption.
func (e *mpmc) loadPos(w *atomic.Uint64, what string) (uint64, error) {
	v := w.Load()
	if v%layout.RecordAlign != 0 {
		return 0, e.fail(corruptf("%s position %d is not %d-byte aligned", what, v, layout.RecordAlign))
	}
	return v, nil
}

// recordSize validates a length read from a header at pos and returns the
// record's size.
func (e *mpmc) recordSize(n uint32, pos uint64) (uint64, error) {
	size := layout.RecordSize(int(n))
	if size > layout.RecordSize(e.maxMsg) || pos&e.mask+size > e.capacity {
		return 0, corruptf("record at position %d has length %d (max %d, area %d bytes)", pos, n, e.maxMsg, e.capacity)
	}
	return size, nil
}

// reclaimStep frees the records at reclaim that are finished, in order, a
// run of them with one CAS of reclaim, and wakes sleeping producers if it
// freed any. Each record's header is Reclaimed before the CAS that releases
// its space (a consumer writes Reclaimed itself when it finishes a record;
// Pad, Discard and Done records are reset here). On the slow path it also
// takes over a record whose reading consumer died (the message is lost
// with it).
//
// It makes at most reclaimPasses passes: each either advances reclaim or
// lost a CAS to another process that did; whatever is left is reclaimed by
// the next caller, so a peer rewriting reclaim cannot keep it here.
func (e *mpmc) reclaimStep(slow bool) {
	advanced := false
	for pass := 0; pass < reclaimPasses; pass++ {
		r, err := e.loadPos(e.sh.reclaim, "reclaim")
		if err != nil {
			break
		}
		h := e.sh.head.Load()
		end := r
		for end < h && end-r < 64<<10 {
			size, ok := e.finished(end, slow)
			if !ok {
				break
			}
			end += size
		}
		if end == r {
			break
		}
		if e.sh.reclaim.CompareAndSwap(r, end) {
			advanced = true
		}
	}
	if advanced {
		e.sh.prod.wake(1 << 30)
	}
}

// finished reports whether the record at pos, below head, is finished and
// its header reset to Reclaimed (resetting it if needed), and its size.
func (e *mpmc) finished(pos uint64, slow bool) (uint64, bool) {
	w := e.word(pos)
	v := w.Load()
	d := layout.DecodeHeader(v)
	switch d.Type {
	case layout.TypeReclaimed:
		if d.Tag != layout.Tag(pos+e.capacity) {
			return 0, false // a stale position, or corrupt: the consumers report it
		}
	case layout.TypeDone, layout.TypeDiscard, layout.TypePad:
		if d.Tag != layout.Tag(pos) {
			return 0, false
		}
		n := d.Len
		if d.Type == layout.TypePad {
			n = uint32(e.capacity - pos&e.mask - hdrSize) // a record to the end
		}
		// Reset the header first: after the reclaim CAS the space is a
		// producer's, and nobody else may write it.
		nv := layout.EncodeHeader(n, layout.TypeReclaimed, pos+e.capacity)
		if !w.CompareAndSwap(v, nv) {
			return 0, false
		}
		d = layout.DecodeHeader(nv)
	case layout.TypeReading:
		if !slow || alive(d.Tag) {
			return 0, false
		}
		size, err := e.recordSize(d.Len, pos)
		if err != nil || !w.CompareAndSwap(v, layout.OwnerHeader(d.Len, layout.TypeReading, e.pid)) {
			return 0, false
		}
		e.free(pos+hdrSize, pos+size)
		w.Store(layout.EncodeHeader(d.Len, layout.TypeReclaimed, pos+e.capacity))
		e.sh.cons.lost.Add(1)
		return size, true
	default:
		return 0, false
	}
	size := layout.RecordSize(int(d.Len))
	if pos&e.mask+size > e.capacity {
		return 0, false // corrupt; the consumers report it
	}
	return size, true
}

// closeMPMC is Close for both sides.
func (e *mpmc) closeMPMC(finish func(), other *mpmcSide) error {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	if e.done {
		return nil
	}
	e.done = true
	e.closed.Store(true)
	e.kick()
	e.mu.Lock() // waits for the operation in progress, now woken
	finish()
	if e.me.table[e.slot].CompareAndSwap(e.pid, 0) {
		e.me.nlive.Add(^uint32(0))
	}
	// Every peer of the other side re-checks: this may have been the
	// last. The wake bypasses pendingBit and leaves it alone: setting it
	// here would suppress the next publish's wake when no one sleeps now.
	other.wakeAll()
	e.seg.unref()
	e.data = nil
	e.mu.Unlock()
	return nil
}

// MPMCProducer is one sending side of an MPMC ring. Many producers, in any
// processes, may send at once.
//
// Concurrency: like Producer, one goroutine at a time per MPMCProducer
// (open one per goroutine for parallel sends); Close from any goroutine.
type MPMCProducer struct {
	mpmc
	reclaimCache uint64
	resv         bool
	resvPos      uint64
	resvLen      int
	resvBusy     uint64
}

// MPMCProducer attaches a producer to an MPMC segment.
func (s *Segment) MPMCProducer(o *Options) (*MPMCProducer, error) {
	p := &MPMCProducer{}
	if err := p.init(s, false, o); err != nil {
		return nil, err
	}
	p.recover = p.recoverSlow
	return p, nil
}

// Close detaches the producer; an outstanding reservation is discarded.
// Consumers get io.EOF once every producer has closed and everything was
// received. Close is idempotent.
func (p *MPMCProducer) Close() error {
	return p.closeMPMC(func() {
		if p.resv {
			p.discardOwn()
		}
		p.flush(p.sh.sent, p.sh.sentBytes)
	}, &p.sh.cons)
}

func (p *MPMCProducer) recoverSlow() error {
	p.sh.cons.reap()
	p.reclaimStep(true)
	return p.err
}

// room reports whether need bytes are free at t.
func (p *MPMCProducer) room(t, need uint64) bool {
	if t+need <= p.reclaimCache+p.capacity {
		return true
	}
	p.reclaimCache = p.sh.reclaim.Load()
	if t+need <= p.reclaimCache+p.capacity {
		return true
	}
	p.reclaimStep(false)
	p.reclaimCache = p.sh.reclaim.Load()
	return t+need <= p.reclaimCache+p.capacity
}

// span is the space a claim of size bytes at t takes: size, or, when the
// record would cross the end of the area, the rest of the area (a Pad).
func (p *MPMCProducer) span(t, size uint64) uint64 {
	if off := t & p.mask; off+size > p.capacity {
		return p.capacity - off
	}
	return size
}

// claim reserves size bytes (a record, or several for a batch, whose
// Busy header carries hlen) and returns the position.
//
// Every way round the loop is bounded: waiting for space sleeps in wait;
// waiting behind another producer's claim at tail backs off (waiter.backoff)
// and takes the claim over once its owner is dead; CAS races lost, and a
// tail a peer keeps rewriting, end on Close, the deadline or the context
// (checked every 64 rounds).
func (p *MPMCProducer) claim(ctx context.Context, size uint64, hlen uint32) (uint64, error) {
	busy := layout.OwnerHeader(hlen, layout.TypeBusy, p.pid)
	behind := 0 // rounds spent behind another producer's claim at tail
	for round := 1; ; round++ {
		if round%64 == 0 {
			if err := p.check(ctx); err != nil {
				return 0, err
			}
		}
		if err := p.claimable(); err != nil {
			return 0, err
		}
		t, err := p.loadPos(p.sh.tail, "tail")
		if err != nil {
			return 0, err
		}
		need := p.span(t, size)
		if !p.room(t, need) {
			err := p.wait(ctx, func() (bool, error) {
				if err := p.claimable(); err != nil {
					return false, err
				}
				t := p.sh.tail.Load()
				return p.room(t, p.span(t, size)), nil
			})
			if err != nil {
				return 0, err
			}
			continue
		}
		hdr := busy
		if need < size {
			// Pad to the end of the area, then claim at the next lap.
			hdr = layout.OwnerHeader(uint32(need-hdrSize), layout.TypeBusy, p.pid)
		}
		ok, other, err := p.claimAt(t, need, hdr)
		switch {
		case err != nil:
			return 0, err
		case ok && need == size:
			return t, nil
		case ok:
			p.free(t+hdrSize, t+need)
			p.word(t).CompareAndSwap(hdr, layout.EncodeHeader(0, layout.TypePad, t))
		case other != 0:
			// Another producer between its two CASes at tail.
			behind++
			if behind > inProgressRounds && !alive(layout.DecodeHeader(other).Tag) {
				if p.word(t).CompareAndSwap(other, layout.Free(t)) {
					p.sh.prod.lost.Add(1)
				}
				continue
			}
			if err := p.backoff(ctx, behind); err != nil {
				return 0, err
			}
		}
	}
}

// claimable is the error that stops a claim before it looks at the ring:
// this endpoint's sticky error (reclaimStep may have found corruption),
// or every consumer gone.
func (p *MPMCProducer) claimable() error {
	if p.err != nil {
		return p.err
	}
	return p.sh.cons.gone(ErrPeerClosed)
}

// waitEnded reports whether err is the end of a wait: the deadline passed
// or the context ended.
func waitEnded(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// claimAt tries to claim size bytes at t, the tail it read. When another
// producer's claim is in progress at t (a Busy header while tail is still
// t), it returns that header as other.
func (p *MPMCProducer) claimAt(t, size, busy uint64) (ok bool, other uint64, err error) {
	w := p.word(t)
	v := w.Load()
	if v == layout.Free(t) || layout.DecodeHeader(v).Type == layout.TypeReclaimed && layout.DecodeHeader(v).Tag == layout.Tag(t) {
		if !w.CompareAndSwap(v, busy) {
			return false, 0, nil
		}
		if p.sh.tail.CompareAndSwap(t, t+size) {
			return true, 0, nil
		}
		// t was stale: the Free(t) we took lay inside a record claimed
		// since. Put it back before its owner writes there.
		w.CompareAndSwap(busy, v)
		return false, 0, nil
	}
	if p.sh.tail.Load() != t {
		return false, 0, nil // a stale tail
	}
	if layout.DecodeHeader(v).Type == layout.TypeBusy {
		return false, v, nil
	}
	return false, 0, p.fail(corruptf("word at tail %d is %#x, not free", t, v))
}

// commit publishes a claimed record (or batch) and wakes one sleeping
// consumer.
func (p *MPMCProducer) commit(t uint64, busy, hdr uint64) error {
	// Pairs with the consumers' atomic Load of the header at head.
	if !p.word(t).CompareAndSwap(busy, hdr) {
		return p.fail(corruptf("reservation at position %d was taken over", t))
	}
	p.sh.cons.wake(1)
	return nil
}

// Send copies msg into the ring as one message, waiting for space.
func (p *MPMCProducer) Send(msg []byte) error { return p.SendContext(context.Background(), msg) }

// SendContext is Send with a context.
func (p *MPMCProducer) SendContext(ctx context.Context, msg []byte) error {
	if err := p.begin(); err != nil {
		return err
	}
	defer p.mu.Unlock()
	if p.resv {
		return ErrPending
	}
	if len(msg) > p.maxMsg {
		return ErrTooLarge
	}
	n := uint32(len(msg))
	t, err := p.claim(ctx, layout.RecordSize(len(msg)), n)
	if err != nil {
		return err
	}
	off := t&p.mask + hdrSize
	copy(p.data[off:off+uint64(n)], msg)
	raceRelease(&p.seg.race)
	if err := p.commit(t, layout.OwnerHeader(n, layout.TypeBusy, p.pid), layout.EncodeHeader(n, layout.TypeData, t)); err != nil {
		return err
	}
	p.count(uint64(n), p.sh.sent, p.sh.sentBytes)
	return nil
}

// SendBatch sends msgs in order, claiming as many as fit in one record's
// worth of space at a time (one claim and one publish per group). It
// returns how many were sent. When the deadline passes or the context
// ends, it still sends, one at a time, the messages there is room for.
func (p *MPMCProducer) SendBatch(msgs [][]byte) (int, error) {
	return p.SendBatchContext(context.Background(), msgs)
}

// SendBatchContext is SendBatch with a context.
func (p *MPMCProducer) SendBatchContext(ctx context.Context, msgs [][]byte) (int, error) {
	if err := p.begin(); err != nil {
		return 0, err
	}
	defer p.mu.Unlock()
	if p.resv {
		return 0, ErrPending
	}
	limit := layout.RecordSize(p.maxMsg)
	sent := 0
	for sent < len(msgs) {
		if len(msgs[sent]) > p.maxMsg {
			return sent, ErrTooLarge
		}
		var total uint64
		k := sent
		// A group that starts before the end of the area stays there
		// (tail is a hint: another producer may claim first), so that
		// its first messages are not padded away with the rest.
		off := p.sh.tail.Load() & p.mask
		for ; k < len(msgs) && len(msgs[k]) <= p.maxMsg; k++ {
			s := layout.RecordSize(len(msgs[k]))
			if total+s > limit || total > 0 && off+total <= p.capacity && off+total+s > p.capacity {
				break
			}
			total += s
		}
		hlen := uint32(total - hdrSize)
		t, err := p.claim(ctx, total, hlen)
		if err != nil && k-sent > 1 && waitEnded(err) {
			// The group found no room before the deadline or the
			// context's end: send its first message alone if there is
			// room for that, so that a batch makes the progress that
			// single sends would.
			k, total = sent+1, layout.RecordSize(len(msgs[sent]))
			hlen = uint32(total - hdrSize)
			t, err = p.claim(ctx, total, hlen)
		}
		if err != nil {
			return sent, err
		}
		if t&p.mask+total > p.capacity {
			return sent, p.fail(corruptf("claimed batch crosses the end of the area"))
		}
		pos := t
		var first uint64
		for i := sent; i < k; i++ {
			n := uint32(len(msgs[i]))
			off := pos&p.mask + hdrSize
			copy(p.data[off:off+uint64(n)], msgs[i])
			h := layout.EncodeHeader(n, layout.TypeData, pos)
			if i == sent {
				first = h
			} else {
				*(*uint64)(unsafe.Pointer(&p.data[pos&p.mask])) = h
			}
			pos += layout.RecordSize(int(n))
			p.count(uint64(n), p.sh.sent, p.sh.sentBytes)
		}
		raceRelease(&p.seg.race)
		if err := p.commit(t, layout.OwnerHeader(hlen, layout.TypeBusy, p.pid), first); err != nil {
			return sent, err
		}
		sent = k
	}
	return sent, nil
}

// Reserve claims room for an n-byte message and returns its payload, to be
// filled in place and published by Commit or dropped by Abort. Consumers
// deliver in claim order, so a reservation held long delays the messages
// claimed after it (other producers are not delayed).
func (p *MPMCProducer) Reserve(n int) ([]byte, error) {
	return p.ReserveContext(context.Background(), n)
}

// ReserveContext is Reserve with a context.
func (p *MPMCProducer) ReserveContext(ctx context.Context, n int) ([]byte, error) {
	if err := p.begin(); err != nil {
		return nil, err
	}
	defer p.mu.Unlock()
	if p.resv {
		return nil, ErrPending
	}
	if n > p.maxMsg || n < 0 {
		return nil, ErrTooLarge
	}
	t, err := p.claim(ctx, layout.RecordSize(n), uint32(n))
	if err != nil {
		return nil, err
	}
	p.resv, p.resvPos, p.resvLen = true, t, n
	p.resvBusy = layout.OwnerHeader(uint32(n), layout.TypeBusy, p.pid)
	off := t&p.mask + hdrSize
	return p.data[off : off+uint64(n) : off+uint64(n)], nil
}

// Commit publishes the reserved message.
func (p *MPMCProducer) Commit() error {
	if err := p.begin(); err != nil {
		return err
	}
	defer p.mu.Unlock()
	if !p.resv {
		return ErrNoPending
	}
	p.resv = false
	raceRelease(&p.seg.race)
	if err := p.commit(p.resvPos, p.resvBusy, layout.EncodeHeader(uint32(p.resvLen), layout.TypeData, p.resvPos)); err != nil {
		return err
	}
	p.count(uint64(p.resvLen), p.sh.sent, p.sh.sentBytes)
	return nil
}

// Abort drops the reserved message; consumers skip it.
func (p *MPMCProducer) Abort() error {
	if err := p.begin(); err != nil {
		return err
	}
	defer p.mu.Unlock()
	if !p.resv {
		return ErrNoPending
	}
	p.discardOwn()
	return nil
}

func (p *MPMCProducer) discardOwn() {
	p.resv = false
	t := p.resvPos
	p.free(t+hdrSize, t+layout.RecordSize(p.resvLen))
	if p.word(t).CompareAndSwap(p.resvBusy, layout.EncodeHeader(uint32(p.resvLen), layout.TypeDiscard, t)) {
		p.sh.prod.lost.Add(1)
		p.sh.cons.wake(1)
	}
}

// MPMCConsumer is one receiving side of an MPMC ring. Many consumers, in
// any processes, may receive at once; each message goes to exactly one.
//
// Concurrency: like Consumer, one goroutine at a time per MPMCConsumer;
// Close from any goroutine.
type MPMCConsumer struct {
	mpmc
	peeked   bool
	peekPos  uint64
	peekLen  uint64
	peekSize uint64
}

// MPMCConsumer attaches a consumer to an MPMC segment.
func (s *Segment) MPMCConsumer(o *Options) (*MPMCConsumer, error) {
	c := &MPMCConsumer{}
	if err := c.init(s, true, o); err != nil {
		return nil, err
	}
	c.recover = c.recoverSlow
	return c, nil
}

// Close detaches the consumer; a message it peeked and did not release
// counts as received. Close is idempotent.
func (c *MPMCConsumer) Close() error {
	return c.closeMPMC(func() {
		if c.peeked {
			c.finish(c.peekPos, c.peekLen, c.peekSize)
			c.peeked = false
		}
		c.flush(c.sh.recv, c.sh.rcb)
	}, &c.sh.prod)
}

func (c *MPMCConsumer) recoverSlow() error {
	if c.sh.prod.reap() == 0 {
		c.sh.cons.wakeAll() // everyone re-checks for EOF
	}
	if err := c.takeOver(); err != nil {
		return err
	}
	c.reclaimStep(true)
	return c.err
}

// takeOver handles a dead owner at head: a Busy(dead) record is discarded
// (its partial payload is never delivered).
func (c *MPMCConsumer) takeOver() error {
	h := c.sh.head.Load()
	w := c.word(h)
	v := w.Load()
	d := layout.DecodeHeader(v)
	if d.Type != layout.TypeBusy || h >= c.sh.tail.Load() || c.sh.head.Load() != h || alive(d.Tag) {
		return nil
	}
	return c.discard(h, v)
}

// discard takes over the Busy record v at h, whose owner is gone, resets
// its payload words and marks it Discard. A length that cannot be right
// is corruption: nobody could ever skip the record.
func (c *MPMCConsumer) discard(h, v uint64) error {
	d := layout.DecodeHeader(v)
	size, err := c.recordSize(d.Len, h)
	if err != nil {
		return c.fail(err)
	}
	w := c.word(h)
	mine := layout.OwnerHeader(d.Len, layout.TypeBusy, c.pid)
	if !w.CompareAndSwap(v, mine) {
		return nil
	}
	c.free(h+hdrSize, h+size)
	w.Store(layout.EncodeHeader(d.Len, layout.TypeDiscard, h))
	c.sh.prod.lost.Add(1)
	return nil
}

// claim takes the next message without sleeping: ok=false when there is
// none yet. When patient, it waits (backing off, see waiter.backoff) for
// another consumer that is between its two CASes at head, and takes its
// message over once that consumer is dead; otherwise it returns ok=false
// there too (a batch ends). CAS races lost and a head that a peer keeps
// rewriting end on Close, the deadline or the context (every 64 rounds).
func (c *MPMCConsumer) claim(ctx context.Context, patient bool) (pos, n, size uint64, ok bool, err error) {
	behind := 0 // rounds spent behind another consumer's claim at head
	for round := 1; ; round++ {
		if round%64 == 0 {
			if err := c.check(ctx); err != nil {
				return 0, 0, 0, false, err
			}
		}
		h, err := c.loadPos(c.sh.head, "head")
		if err != nil {
			return 0, 0, 0, false, err
		}
		w := c.word(h)
		v := w.Load()
		d := layout.DecodeHeader(v)
		switch d.Type {
		case layout.TypeData:
			if d.Tag != layout.Tag(h) {
				break
			}
			size, err := c.recordSize(d.Len, h)
			if err != nil {
				return 0, 0, 0, false, c.fail(err)
			}
			if !w.CompareAndSwap(v, layout.OwnerHeader(d.Len, layout.TypeReading, c.pid)) {
				continue
			}
			if !c.sh.head.CompareAndSwap(h, h+size) {
				return 0, 0, 0, false, c.fail(corruptf("head moved past the record at %d while it was claimed", h))
			}
			raceAcquire(&c.seg.race)
			return h, uint64(d.Len), size, true, nil
		case layout.TypePad:
			if d.Tag != layout.Tag(h) || d.Len != 0 {
				break
			}
			c.sh.head.CompareAndSwap(h, h+c.capacity-h&c.mask)
			continue
		case layout.TypeDiscard:
			if d.Tag != layout.Tag(h) {
				break
			}
			size, err := c.recordSize(d.Len, h)
			if err != nil {
				return 0, 0, 0, false, c.fail(err)
			}
			c.sh.head.CompareAndSwap(h, h+size)
			continue
		case layout.TypeReading:
			if c.sh.tail.Load() <= h {
				// Nothing is claimed at h yet: this is the previous
				// lap's record, peeked and not yet released (it holds
				// reclaim, so no producer can claim here before it goes).
				return 0, 0, 0, false, nil
			}
			// Another consumer between its two CASes.
			if c.sh.head.Load() != h {
				continue
			}
			if !patient {
				return 0, 0, 0, false, nil
			}
			if behind++; behind > inProgressRounds && !alive(d.Tag) {
				// It died there: deliver the message ourselves.
				size, err := c.recordSize(d.Len, h)
				if err != nil {
					return 0, 0, 0, false, c.fail(err)
				}
				if w.CompareAndSwap(v, layout.OwnerHeader(d.Len, layout.TypeReading, c.pid)) && c.sh.head.CompareAndSwap(h, h+size) {
					raceAcquire(&c.seg.race)
					return h, uint64(d.Len), size, true, nil
				}
				continue
			}
			if err := c.backoff(ctx, behind); err != nil {
				return 0, 0, 0, false, err
			}
			continue
		case layout.TypeBusy:
			// Claimed, not yet committed (or a claim at tail in progress).
			if c.sh.head.Load() != h {
				continue
			}
			if h < c.sh.tail.Load() && c.sh.prod.left() {
				// Every producer has left: nobody will commit it.
				if err := c.discard(h, v); err != nil {
					return 0, 0, 0, false, err
				}
				continue
			}
			return 0, 0, 0, false, nil
		}
		if c.sh.head.Load() != h {
			continue // a stale head
		}
		if c.sh.tail.Load() <= h {
			return 0, 0, 0, false, nil // nothing claimed here yet
		}
		if w.Load() != v {
			continue // claimed between our two loads
		}
		return 0, 0, 0, false, c.fail(corruptf("record header %#x at head %d below tail %d", v, h, c.sh.tail.Load()))
	}
}

// ready is the wait condition: something at head to look at, or every
// producer gone.
func (c *MPMCConsumer) ready() (bool, error) {
	gone := c.sh.prod.gone(errEOF)
	h := c.sh.head.Load()
	d := layout.DecodeHeader(c.word(h).Load())
	switch d.Type {
	case layout.TypeData, layout.TypePad, layout.TypeDiscard:
		if d.Tag == layout.Tag(h) {
			return true, nil
		}
	case layout.TypeBusy:
		// A claim not yet committed: ready once every producer has gone
		// (claim discards it).
		if gone != nil && h < c.sh.tail.Load() {
			return true, nil
		}
		return c.idle(h, gone)
	}
	// Anything else below tail is for claim to look at: another consumer
	// between its two CASes (Reading), one that died there, or a corrupt
	// word. At or past tail nothing is claimed yet, whatever the word
	// says: it is the previous lap's (a record peeked and not yet
	// released, a padding not yet reclaimed). claim must agree, or a
	// waiter would spin without ever reaching its deadline.
	if h < c.sh.tail.Load() {
		return true, nil
	}
	return c.idle(h, gone)
}

// idle is ready's answer when the header it read at h says "nothing
// yet": if head moved since ready loaded it, that header may be a later
// lap's (the record at h was taken and its space claimed again), so look
// again. Otherwise it was h's own: positions only grow, and no producer
// claims h's space again before head has passed h.
func (c *MPMCConsumer) idle(h uint64, gone error) (bool, error) {
	if c.sh.head.Load() != h {
		return true, nil
	}
	return false, gone
}

// await claims the next message, waiting for one. A consumer that had to
// wait passes the wake on if more messages are ready, so that a burst
// published while it slept does not wait for the next publish.
func (c *MPMCConsumer) await(ctx context.Context) (pos, n, size uint64, err error) {
	for waited := false; ; waited = true {
		pos, n, size, ok, err := c.claim(ctx, true)
		if ok || err != nil {
			if ok && waited && layout.DecodeHeader(c.word(c.sh.head.Load()).Load()).Type == layout.TypeData {
				c.sh.cons.wake(1)
			}
			return pos, n, size, err
		}
		c.flush(c.sh.recv, c.sh.rcb)
		if waited {
			// ready said yes but claim found nothing to take (a record
			// another consumer claimed first, words a peer rewrote):
			// Close, the deadline and the context still end the wait.
			if err := c.check(ctx); err != nil {
				return 0, 0, 0, err
			}
		}
		if err := c.wait(ctx, c.ready); err != nil {
			return 0, 0, 0, err
		}
	}
}

// finish frees a record this consumer read.
func (c *MPMCConsumer) finish(pos, n, size uint64) {
	c.free(pos+hdrSize, pos+size)
	// Straight to Reclaimed: this consumer owns the record, its words are
	// the next lap's markers now, and reclaim may pass it.
	c.word(pos).Store(layout.EncodeHeader(uint32(n), layout.TypeReclaimed, pos+c.capacity))
	c.count(n, c.sh.recv, c.sh.rcb)
}

// Recv waits for the next message and copies it into buf. If buf is too
// short the message is still consumed: MPMC consumers cannot put a message
// back, so Recv returns its length and an error wrapping io.ErrShortBuffer
// and the message is lost to this consumer and to the others. Size buf to
// MaxMessage. After every producer has closed and everything was received,
// Recv returns io.EOF.
func (c *MPMCConsumer) Recv(buf []byte) (int, error) {
	return c.RecvContext(context.Background(), buf)
}

// RecvContext is Recv with a context.
func (c *MPMCConsumer) RecvContext(ctx context.Context, buf []byte) (int, error) {
	if err := c.begin(); err != nil {
		return 0, err
	}
	defer c.mu.Unlock()
	if c.peeked {
		return 0, ErrPending
	}
	pos, n, size, err := c.await(ctx)
	if err != nil {
		return 0, err
	}
	off := pos&c.mask + hdrSize
	short := uint64(len(buf)) < n
	if !short {
		copy(buf, c.data[off:off+n])
	}
	c.finish(pos, n, size)
	c.reclaimStep(false)
	if short {
		return int(n), errShortBuffer(int(n), len(buf))
	}
	return int(n), nil
}

// Peek waits for the next message and returns it in place; it is this
// consumer's until Release (other consumers go on with later messages).
// The bytes stay in shared memory, where other processes can still write
// them: if they are not trusted, copy a message before validating it
// (Recv copies), here and in RecvBatch's callback.
func (c *MPMCConsumer) Peek() ([]byte, error) { return c.PeekContext(context.Background()) }

// PeekContext is Peek with a context.
func (c *MPMCConsumer) PeekContext(ctx context.Context) ([]byte, error) {
	if err := c.begin(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	if !c.peeked {
		pos, n, size, err := c.await(ctx)
		if err != nil {
			return nil, err
		}
		c.peeked, c.peekPos, c.peekLen, c.peekSize = true, pos, n, size
	}
	off := c.peekPos&c.mask + hdrSize
	return c.data[off : off+c.peekLen : off+c.peekLen], nil
}

// Release frees the message returned by Peek.
func (c *MPMCConsumer) Release() error {
	if err := c.begin(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	if !c.peeked {
		return ErrNoPending
	}
	c.peeked = false
	c.finish(c.peekPos, c.peekLen, c.peekSize)
	c.reclaimStep(false)
	return nil
}

// RecvBatch waits for at least one message, then claims and passes to fn
// up to max messages (max <= 0: all available), reclaiming once at the
// end. The slice passed to fn is valid only during the call.
func (c *MPMCConsumer) RecvBatch(max int, fn func(msg []byte)) (int, error) {
	return c.RecvBatchContext(context.Background(), max, fn)
}

// RecvBatchContext is RecvBatch with a context.
func (c *MPMCConsumer) RecvBatchContext(ctx context.Context, max int, fn func(msg []byte)) (int, error) {
	if err := c.begin(); err != nil {
		return 0, err
	}
	defer c.mu.Unlock()
	if c.peeked {
		return 0, ErrPending
	}
	pos, n, size, err := c.await(ctx)
	count := 0
	var taken uint64
	for err == nil {
		off := pos&c.mask + hdrSize
		fn(c.data[off : off+n : off+n])
		c.finish(pos, n, size)
		count++
		// A lap's worth ends the batch even with max <= 0: records keep
		// coming while other consumers reclaim, and a peer can write
		// headers ahead of head without end.
		if taken += size; count == max || taken >= c.capacity {
			break
		}
		var ok bool
		pos, n, size, ok, err = c.claim(ctx, false)
		if !ok {
			break
		}
	}
	c.reclaimStep(false)
	if count > 0 && !errors.Is(err, ErrCorrupt) {
		return count, nil
	}
	return count, err
}

// MPMCStats are the shared counters of an MPMC segment.
type MPMCStats struct {
	Capacity                uint64
	Head, Tail, Reclaim     uint64
	Producers, Consumers    int // attached now
	Sent, SentBytes         uint64
	Received, ReceivedBytes uint64
	ProducerSleeps          uint64
	ConsumerSleeps          uint64
	ProducerWakes           uint64 // FUTEX_WAKE calls issued to producers
	ConsumerWakes           uint64 // FUTEX_WAKE calls issued to consumers
	ProducerDeaths          uint64 // producers found dead
	ConsumerDeaths          uint64
	Discarded               uint64 // reservations discarded (aborted, or their producer died)
	Lost                    uint64 // messages claimed by a consumer that died before finishing
}

// MPMCStats reads the counters of an MPMC segment. Each endpoint adds its
// message counts in groups, so they may lag by up to 64 messages per
// endpoint until it waits or closes.
func (s *Segment) MPMCStats() MPMCStats {
	if s.geo.Features&layout.FeatureMPMC == 0 || !s.tryRef() {
		return MPMCStats{}
	}
	defer s.unref()
	m := s.mpmcShared()
	return MPMCStats{
		Capacity: s.geo.Capacity,
		Head:     m.head.Load(), Tail: m.tail.Load(), Reclaim: m.reclaim.Load(),
		Producers: m.prod.live(), Consumers: m.cons.live(),
		Sent: m.sent.Load(), SentBytes: m.sentBytes.Load(),
		Received: m.recv.Load(), ReceivedBytes: m.rcb.Load(),
		ProducerSleeps: m.prod.sleeps.Load(), ConsumerSleeps: m.cons.sleeps.Load(),
		ProducerWakes: m.prod.wakes.Load(), ConsumerWakes: m.cons.wakes.Load(),
		ProducerDeaths: m.prod.deaths.Load(), ConsumerDeaths: m.cons.deaths.Load(),
		Discarded: m.prod.lost.Load(), Lost: m.cons.lost.Load(),
	}
}

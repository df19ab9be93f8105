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
//
// Files: this one holds the shared words, the endpoints' types, attach and
// Close, and the statistics; mpmc_producer.go and mpmc_consumer.go each
// side's claim loop and calls; mpmc_reclaim.go reclaim; mpmc_takeover.go
// dead owners; mpmc_wait.go the sleeper count and wakes. What every
// endpoint of either ring shares (the operation lock that Close waits on,
// the sticky error, the outstanding reservation or peek) is lifecycle, in
// endpoint.go.

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/shmlane/shmlane/internal/layout"
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

// mpmc is what MPMC producers and consumers share: the lifecycle
// (endpoint.go), the views of the shared words, and this endpoint's entry
// in its side's table.
type mpmc struct {
	lifecycle
	sh    mpmcShared
	me    *mpmcSide
	pid   uint32
	slot  int
	msgs  uint64 // counted locally since the last flush
	bytes uint64
}

func (e *mpmc) init(s *Segment, consumer bool, o *Options) error {
	if s.geo.Features&layout.FeatureMPMC == 0 {
		return fmt.Errorf("segment holds an SPSC ring: use Producer and Consumer")
	}
	if err := e.attach(s, s.data()); err != nil {
		return err
	}
	e.sh = s.mpmcShared()
	e.pid = uint32(pid())
	e.me = &e.sh.prod
	if consumer {
		e.me = &e.sh.cons
	}
	e.waiter = waiter{seq: e.me.seq, waiting: e.me.count, count: true, spin: o.spin(), fixed: o != nil && o.FixedSpin, poll: mpmcPoll}
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

// free writes the next lap's Free markers over [from, to), positions of
// a record this endpoint owns.
func (e *mpmc) free(from, to uint64) {
	for pos := from; pos < to; pos += 8 {
		*(*uint64)(unsafe.Pointer(&e.data[pos&e.mask])) = layout.Free(pos + e.capacity)
	}
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
		return 0, e.corrupt(corruptf("%s position %d is not %d-byte aligned", what, v, layout.RecordAlign))
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

// closeMPMC is Close for both sides (lifecycle.close): once no operation
// is in progress, finish ends this endpoint's own work, then it leaves its
// side's table and wakes the other side.
func (e *mpmc) closeMPMC(finish func(), other *mpmcSide) error {
	return e.close(func() { // e.mu is held
		finish()
		if e.me.table[e.slot].CompareAndSwap(e.pid, 0) {
			e.me.nlive.Add(^uint32(0))
		}
		// Every peer of the other side re-checks: this may have been the
		// last. The wake bypasses pendingBit and leaves it alone: setting it
		// here would suppress the next publish's wake when no one sleeps now.
		other.wakeAll()
	})
}

// MPMCProducer is one sending side of an MPMC ring. Many producers, in any
// processes, may send at once.
//
// Concurrency: like Producer, one goroutine at a time per MPMCProducer
// (open one per goroutine for parallel sends); Close from any goroutine.
type MPMCProducer struct {
	mpmc
	reclaimCache uint64
	// An outstanding reservation (lifecycle.pending).
	resvPos  uint64
	resvLen  int
	resvBusy uint64
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
		if p.pending {
			p.discardOwn()
		}
		p.flush(p.sh.sent, p.sh.sentBytes)
	}, &p.sh.cons)
}

// MPMCConsumer is one receiving side of an MPMC ring. Many consumers, in
// any processes, may receive at once; each message goes to exactly one.
//
// Concurrency: like Consumer, one goroutine at a time per MPMCConsumer;
// Close from any goroutine.
type MPMCConsumer struct {
	mpmc
	// The peeked message, while lifecycle.pending.
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
		if c.pending {
			c.finish(c.peekPos, c.peekLen, c.peekSize)
			c.pending = false
		}
		c.flush(c.sh.recv, c.sh.rcb)
	}, &c.sh.prod)
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

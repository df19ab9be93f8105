package ring

// The SPSC ring: one producer, one consumer, variable-length records in the
// data area of a segment (format in package layout).
//
// Positions are byte counts that only grow (uint64, never wrapping in
// practice); a position's offset in the data area is pos & (capacity-1).
//
// Invariants:
//   - head <= tail <= head + capacity, both multiples of 8.
//   - Bytes in [head, tail) are owned by the consumer once published; bytes
//     in [tail, head+capacity) are owned by the producer.
//   - The header word at tail is 0 whenever the consumer may read it: the
//     producer clears the word after each record it writes before it
//     publishes that record, and reserves those 8 bytes in its space check.
//     So a non-zero header at head is always a published record of this lap,
//     never a leftover.
//   - A record never crosses the end of the area: when it would, the
//     producer first writes a padding record to the end.
//
// Memory ordering (sync/atomic operations are sequentially consistent):
//   - Publish: the producer writes payloads, the headers of all but the
//     first new record, and the cleared word after the last, with plain
//     stores; then it stores the first new header atomically. That store
//     pairs with the consumer's atomic Load of the header at head, which
//     therefore sees every byte of every record up to the cleared word.
//   - Release: the consumer reads payloads, then stores head atomically;
//     that store pairs with the producer's atomic Load of head when its
//     cached copy runs out of space, so the producer reuses only bytes the
//     consumer has finished with.
//   - Sleep and wake (each side the same; "data" is a header for the
//     consumer, space for the producer): the sleeper reads its futex word
//     seq, stores waiting=1, then re-checks for data and for the peer's
//     closed flag; the waker stores data (the header or head), then loads
//     the sleeper's waiting flag. Both pairs are store-then-load through
//     sequentially consistent atomics, so at least one side sees the
//     other's store: either the sleeper finds data, or the waker finds
//     waiting=1, clears it, increments seq and calls FUTEX_WAKE. The
//     increment makes a sleeper that read seq before it fail its
//     FUTEX_WAIT at once. No FUTEX_WAKE is issued while waiting is 0.
//     Modelled and checked with spin in ring/model (spsc.pml). Every
//     sleep is bounded by spscPoll: a peer that rewrites seq, or never
//     wakes, delays Close or a cancelled context by at most that.
//   - Counters, the published tail and the sleep count are statistics:
//     their owner writes them with plain stores before the next atomic
//     store, readers load them atomically and may see them lag.

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/shmlane/shmlane/internal/futex"
	"github.com/shmlane/shmlane/internal/layout"
)

const (
	// DefaultSpinTime is how long a side busy-waits before it sleeps.
	DefaultSpinTime = 50 * time.Microsecond
	// spscPoll bounds each futex sleep of an SPSC endpoint. A sleeper is
	// woken by its peer's publish, by Close, by its deadline or by its
	// context; the bound only matters when a wake was lost because a
	// hostile peer rewrote this side's futex word, and then it bounds how
	// late Close and a cancelled context take effect.
	spscPoll = time.Second
	hdrSize  = layout.RecordHeaderSize
)

// Options configure one endpoint. The zero value is the default.
type Options struct {
	// SpinTime bounds the busy-wait (with backoff) that precedes a futex
	// sleep when there is nothing to do. Zero means DefaultSpinTime; a
	// negative value never spins: the side sleeps at once, which costs a
	// FUTEX_WAKE from the peer for each wait but leaves the CPU free.
	//
	// Within it the spin adapts. It polls with the processor's PAUSE hint
	// first, then yields the CPU between polls (sched_yield), then sleeps.
	// When the peer runs on another CPU it answers within the PAUSE
	// phase, which then stays SpinTime long and the round trip never
	// sleeps nor makes a system call. When answers come only later (the
	// peer waits for this CPU: two processes on one core, a loaded host),
	// each such wait halves the PAUSE phase (down to 1 µs), so that the
	// side yields to its peer at once instead of holding the CPU it
	// needs; every 32 such waits in a row one wait spins with PAUSE alone,
	// to see whether the sides run apart again.
	SpinTime time.Duration
	// FixedSpin turns the adaptation off: every wait polls with PAUSE for
	// the whole SpinTime before it sleeps, as before the adaptation.
	FixedSpin bool
}

func (o *Options) spin() time.Duration {
	if o == nil || o.SpinTime == 0 {
		return DefaultSpinTime
	}
	if o.SpinTime < 0 {
		return 0
	}
	return o.SpinTime
}

// endpoint is what Producer and Consumer share: the lifecycle (endpoint.go),
// the views of both sides' slots, and the watch on the peer process.
type endpoint struct {
	lifecycle
	me, peer side
	peerGone atomic.Bool // set by WatchPeer's goroutine when the peer exits
	pidfd    *os.File
	peerPID  int
}

// Transport names the mechanism underneath: "ring".
func (e *endpoint) Transport() string { return "ring" }

func (e *endpoint) init(s *Segment, me, peer side, o *Options) error {
	if err := e.attach(s, s.data()); err != nil {
		return err
	}
	e.me, e.peer = me, peer
	e.waiter = waiter{seq: me.seq, waiting: me.waiting, spin: o.spin(), fixed: o != nil && o.FixedSpin, poll: spscPoll}
	e.sleepCount = func() { storeRelaxed(me.sleeps, me.sleeps.Load()+1) }
	if !me.pid.CompareAndSwap(0, uint32(pid())) {
		s.unref()
		return ErrRoleTaken
	}
	return nil
}

// storeRelaxed writes a statistics word with a plain store (see the
// memory-ordering notes above).
func storeRelaxed(w *atomic.Uint64, v uint64) { *(*uint64)(unsafe.Pointer(w)) = v }

// wakePeer wakes the peer if its waiting flag says it sleeps. It is called
// after an atomic store of data or space (see the memory-ordering notes).
func (e *endpoint) wakePeer() {
	if e.peer.waiting.Load() != 0 && e.peer.waiting.CompareAndSwap(1, 0) {
		e.peer.seq.Add(1)
		futex.Wake(e.peer.seq, 1)
		storeRelaxed(e.me.wakes, e.me.wakes.Load()+1)
	}
}

// close stops this endpoint's operations (the one in progress is woken and
// returns ErrClosed; quiesce, if set, waits for others that do not take
// mu), then marks the side closed in shared memory, wakes the peer, and
// drops the endpoint's reference to the mapping (lifecycle.close). It is
// idempotent.
//
// The shared flag is stored only once no operation of this side is in
// progress: a producer's every publish comes before it, so a consumer that
// finds the flag set and the ring empty has received everything (EOF is
// final), and no Send returns nil for a message that will never be read.
func (e *endpoint) close(quiesce func()) error {
	return e.lifecycle.close(func() { // e.mu is held
		if quiesce != nil {
			quiesce()
		}
		// Pairs with the peer's Load of our closed flag in its ready check,
		// which it makes before it looks for data (or space).
		e.me.closed.Store(1)
		e.peer.seq.Add(1)
		futex.Wake(e.peer.seq, 1<<30)
		e.stopWatch()
	})
}

// Producer is the sending side of an SPSC ring.
//
// Concurrency: one goroutine at a time may send (calls from several
// goroutines are serialised, never interleaved within a message, but their
// order is theirs to arrange). Close may be called from any goroutine: it
// unblocks a waiting call. The slice returned by Reserve is valid until
// Commit, Abort or Close.
type Producer struct {
	endpoint
	tail      uint64 // next position to write; the truth (shared copy is a statistic)
	headCache uint64 // last head read from the consumer's slot
	msgs      uint64
	bytes     uint64

	// The first record written since the last publish: its header is
	// stored last, atomically, by publish.
	pendWord *atomic.Uint64
	pendHdr  uint64

	// An outstanding reservation (lifecycle.pending).
	resvStart uint64 // tail before Reserve, for Abort
	resvLen   int

	oob   *oobProducer // nil without an out-of-band lane
	oobMu sync.Mutex   // held by SendUrgent and Flush, never by the data path
}

// Producer attaches this process as the segment's producer.
func (s *Segment) Producer(o *Options) (*Producer, error) {
	p := &Producer{}
	if err := p.init(s, s.producerSide(), s.consumerSide(), o); err != nil {
		return nil, err
	}
	if err := p.attach(p.me.pos.Load(), p.peer.pos.Load()); err != nil {
		p.close(nil)
		return nil, err
	}
	p.msgs = p.me.msgs.Load()
	p.bytes = p.me.bytes.Load()
	if err := p.initOOB(); err != nil {
		p.close(nil)
		return nil, err
	}
	return p, nil
}

// MaxMessage is the largest message Send accepts.
func (p *Producer) MaxMessage() int { return p.maxMsg }

// Stats reads the segment's counters.
func (p *Producer) Stats() Stats { return p.seg.Stats() }

// Close closes the producing side: the consumer receives everything
// committed so far, then io.EOF. A pending reservation is dropped. Close is
// idempotent; later calls on p return ErrClosed.
func (p *Producer) Close() error {
	return p.close(func() {
		p.oobMu.Lock() // wait for an out-of-band call in progress
		p.oobMu.Unlock()
	})
}

// attach takes the producer's tail and the consumer's head from the
// segment (a producer may attach to a ring that was used before) and
// checks them: the tail must be aligned, the head aligned and within one
// capacity below it.
func (p *Producer) attach(tail, head uint64) error {
	if tail%layout.RecordAlign != 0 {
		return p.corrupt(corruptf("producer tail %d is not %d-byte aligned", tail, layout.RecordAlign))
	}
	p.tail, p.headCache = tail, head
	return p.checkHead(head)
}

func (p *Producer) checkHead(head uint64) error {
	if head > p.tail || p.tail-head > p.capacity || head%layout.RecordAlign != 0 {
		return p.corrupt(corruptf("consumer head %d is outside [tail-capacity, tail] = [%d, %d] or unaligned", head, p.tail-min(p.tail, p.capacity), p.tail))
	}
	return nil
}

// need returns how many bytes from tail a record of n payload bytes takes,
// padding before it included, plus the cleared header word after it.
func (p *Producer) need(n int) (total uint64, pad bool) {
	size := layout.RecordSize(n)
	off := p.tail & p.mask
	if off+size > p.capacity {
		return p.capacity - off + size + hdrSize, true
	}
	return size + hdrSize, false
}

// room reports whether total bytes are free at tail, refreshing the cached
// head from shared memory only when the cache says no.
func (p *Producer) room(total uint64) (bool, error) {
	if p.tail+total-p.headCache <= p.capacity {
		return true, nil
	}
	// Pairs with the consumer's atomic Store of head in release.
	h := p.peer.pos.Load()
	if err := p.checkHead(h); err != nil {
		return false, err
	}
	p.headCache = h
	return p.tail+total-h <= p.capacity, nil
}

// acquire waits until a record of n bytes fits, honouring ctx, the
// deadline and both sides' closed flags.
func (p *Producer) acquire(ctx context.Context, n int) error {
	if n > p.maxMsg || n < 0 {
		return ErrTooLarge
	}
	if p.peer.closed.Load() != 0 {
		return ErrPeerClosed
	}
	if p.peerGone.Load() {
		return ErrPeerGone
	}
	total, _ := p.need(n)
	if ok, err := p.room(total); ok || err != nil {
		return err
	}
	return p.wait(ctx, func() (bool, error) {
		if p.peer.closed.Load() != 0 {
			return false, ErrPeerClosed
		}
		if p.peerGone.Load() {
			return false, ErrPeerGone
		}
		return p.room(total)
	})
}

// write lays out a record of n bytes at tail (after padding if needed),
// clears the word after it, and returns the payload slice. Headers are
// written with plain stores except the first since the last publish, which
// is kept for publish.
func (p *Producer) write(n int) []byte {
	if _, pad := p.need(n); pad {
		p.setHeader(p.tail, layout.EncodeHeader(0, layout.TypePad, p.tail))
		p.tail += p.capacity - p.tail&p.mask
	}
	pos := p.tail
	p.tail += layout.RecordSize(n)
	// The word after the record stays 0 until its own record is published.
	*(*uint64)(unsafe.Pointer(p.word(p.tail))) = 0
	p.setHeader(pos, layout.EncodeHeader(uint32(n), layout.TypeData, pos))
	off := pos&p.mask + hdrSize
	p.msgs++
	p.bytes += uint64(n)
	return p.data[off : off+uint64(n) : off+uint64(n)]
}

func (p *Producer) setHeader(pos, h uint64) {
	w := p.word(pos)
	if p.pendWord == nil {
		p.pendWord, p.pendHdr = w, h
		return
	}
	*(*uint64)(unsafe.Pointer(w)) = h
}

// publish makes every record written since the last publish visible, then
// wakes the consumer if it sleeps.
func (p *Producer) publish() {
	if p.store() {
		p.wakePeer()
	}
}

// store makes every record written since the last publish visible,
// without waking the consumer; it reports whether there was any.
func (p *Producer) store() bool {
	if p.pendWord == nil {
		return false
	}
	raceRelease(&p.seg.race)
	// Pairs with the consumer's atomic Load of the header in next.
	p.pendWord.Store(p.pendHdr)
	p.pendWord = nil
	// The published tail is stored after the header (release order, see
	// storeRelease): Flush reads it from another goroutine, and every
	// record below the tail it reads is visible.
	storeRelease(p.me.pos, p.tail)
	storeRelaxed(p.me.msgs, p.msgs)
	storeRelaxed(p.me.bytes, p.bytes)
	return true
}

// Send copies msg into the ring as one message and publishes it, waiting
// for space if the ring is full. len(msg) may be 0; more than MaxMessage
// gives ErrTooLarge.
func (p *Producer) Send(msg []byte) error {
	return p.SendContext(context.Background(), msg)
}

// SendContext is Send with a context that can cancel the wait for space.
func (p *Producer) SendContext(ctx context.Context, msg []byte) error {
	if err := p.begin(nonePending); err != nil {
		return err
	}
	defer p.mu.Unlock()
	if err := p.acquire(ctx, len(msg)); err != nil {
		return err
	}
	copy(p.write(len(msg)), msg)
	p.publish()
	return nil
}

// batchPublishBytes bounds how much SendBatch writes before it publishes.
const batchPublishBytes = 64 << 10

// SendBatch sends msgs in order, publishing them in groups (up to 64 KiB,
// or as many as fit) with one atomic store and at most one wake each, and
// waiting for space between groups. It returns how many messages were sent; on error, the messages
// before that count were sent and the rest were not.
func (p *Producer) SendBatch(msgs [][]byte) (int, error) {
	return p.SendBatchContext(context.Background(), msgs)
}

// SendBatchContext is SendBatch with a context.
func (p *Producer) SendBatchContext(ctx context.Context, msgs [][]byte) (int, error) {
	if err := p.begin(nonePending); err != nil {
		return 0, err
	}
	defer p.mu.Unlock()
	group := p.tail // where the unpublished group starts
	for i, m := range msgs {
		if len(m) > p.maxMsg {
			p.publish()
			return i, ErrTooLarge
		}
		if p.tail-group >= batchPublishBytes {
			// Large messages: publish as we go, so the consumer is not
			// kept waiting (and falls asleep) behind a long copy.
			p.publish()
			group = p.tail
		}
		total, _ := p.need(len(m))
		ok, err := p.room(total)
		if err != nil {
			p.publish()
			return i, err
		}
		if !ok {
			p.publish()
			if err := p.acquire(ctx, len(m)); err != nil {
				return i, err
			}
		}
		copy(p.write(len(m)), m)
	}
	p.publish()
	return len(msgs), nil
}

// Reserve waits for room for an n-byte message and returns its payload,
// to be filled in place and published by Commit (or dropped by Abort).
// Only one reservation may be outstanding.
func (p *Producer) Reserve(n int) ([]byte, error) { return p.ReserveContext(context.Background(), n) }

// ReserveContext is Reserve with a context.
func (p *Producer) ReserveContext(ctx context.Context, n int) ([]byte, error) {
	if err := p.begin(nonePending); err != nil {
		return nil, err
	}
	defer p.mu.Unlock()
	if err := p.acquire(ctx, n); err != nil {
		return nil, err
	}
	p.resvStart = p.tail
	buf := p.write(n)
	p.pending, p.resvLen = true, n
	return buf, nil
}

// Commit publishes the reserved message.
func (p *Producer) Commit() error {
	if err := p.begin(onePending); err != nil {
		return err
	}
	defer p.mu.Unlock()
	p.pending = false
	p.publish()
	return nil
}

// Abort drops the reserved message: nothing of it is ever visible.
func (p *Producer) Abort() error {
	if err := p.begin(onePending); err != nil {
		return err
	}
	defer p.mu.Unlock()
	p.pending = false
	p.pendWord = nil
	p.tail = p.resvStart
	p.msgs--
	p.bytes -= uint64(p.resvLen)
	// The word at the old tail was never written (its header was pending),
	// so it is still 0.
	return nil
}

// Consumer is the receiving side of an SPSC ring.
//
// Concurrency: one goroutine at a time may receive (calls from several
// goroutines are serialised). Close may be called from any goroutine: it
// unblocks a waiting call. The slice returned by Peek, and those passed to
// a RecvBatch callback, are valid until Release (the callback's return) or
// Close.
type Consumer struct {
	endpoint
	head  uint64 // next position to read; the truth
	msgs  uint64
	bytes uint64

	peek record // the peeked message, while lifecycle.pending

	oob *oobConsumer // nil without an out-of-band lane
}

// Consumer attaches this process as the segment's consumer.
func (s *Segment) Consumer(o *Options) (*Consumer, error) {
	c := &Consumer{}
	if err := c.init(s, s.consumerSide(), s.producerSide(), o); err != nil {
		return nil, err
	}
	c.head = c.me.pos.Load()
	c.msgs = c.me.msgs.Load()
	c.bytes = c.me.bytes.Load()
	if c.head%layout.RecordAlign != 0 {
		c.close(nil)
		return nil, corruptf("consumer head %d is not %d-byte aligned", c.head, layout.RecordAlign)
	}
	if err := c.initOOB(); err != nil {
		c.close(nil)
		return nil, err
	}
	return c, nil
}

// MaxMessage is the largest message the ring carries.
func (c *Consumer) MaxMessage() int { return c.maxMsg }

// Stats reads the segment's counters.
func (c *Consumer) Stats() Stats { return c.seg.Stats() }

// Close closes the receiving side: the producer's later sends fail with
// ErrPeerClosed. Close is idempotent; later calls on c return ErrClosed.
func (c *Consumer) Close() error { return c.close(nil) }

// next looks at the record at pos without waiting. It returns the
// payload's offset and length in the data area and the position after the
// record, or ok=false if nothing is published there.
func (c *Consumer) next(pos uint64) (off, n, after uint64, ok bool, err error) {
	// Pairs with the producer's atomic Store of the header in publish.
	h := c.word(pos).Load()
	if h == 0 {
		return 0, 0, 0, false, nil
	}
	size, err := layout.CheckHeader(h, pos, c.capacity, c.maxMsg)
	if err != nil {
		return 0, 0, 0, false, c.corrupt(err)
	}
	if layout.DecodeHeader(h).Type == layout.TypePad {
		pos += size
		// Written before the padding's header was published.
		h = c.word(pos).Load()
		if h == 0 || layout.DecodeHeader(h).Type != layout.TypeData {
			return 0, 0, 0, false, c.corrupt(corruptf("padding at position %d is not followed by a data record (header %#x)", pos-size, h))
		}
		if size, err = layout.CheckHeader(h, pos, c.capacity, c.maxMsg); err != nil {
			return 0, 0, 0, false, c.corrupt(err)
		}
	}
	raceAcquire(&c.seg.race)
	return pos&c.mask + hdrSize, uint64(layout.DecodeHeader(h).Len), pos + size, true, nil
}

// ready is the wait condition: a record at head, or io.EOF once the
// producer closed and nothing more is published (ErrPeerGone if it died).
func (c *Consumer) ready() (bool, error) {
	// Both flags are read before the header: a producer publishes before
	// it closes or exits, so an empty ring after either is final.
	closed := c.peer.closed.Load() != 0
	gone := c.peerGone.Load()
	if c.word(c.head).Load() != 0 {
		return true, nil
	}
	// The lane's event count, not its head word: SendUrgent adds to the
	// count after it publishes and before it wakes, and oobPoll looks at
	// the lane only when the count changed. A ready condition that saw
	// more than oobPoll takes would spin (the lane's head word can be
	// non-zero while the count is unchanged, by a peer's scribble).
	if o := c.oob; o != nil && o.words.events.Load() != o.seen {
		return true, nil
	}
	if closed {
		return false, errEOF
	}
	if gone {
		return false, ErrPeerGone
	}
	return false, nil
}

// await waits for the next message: an urgent one first, else the data
// record at head.
func (c *Consumer) await(ctx context.Context) (record, error) {
	for waited := false; ; waited = true {
		if c.oob != nil {
			if r, ok, err := c.oobPoll(); ok || err != nil {
				return r, err
			}
		}
		off, n, after, ok, err := c.next(c.head)
		if ok || err != nil {
			return record{area: c.data, off: off, n: n, after: after}, err
		}
		if waited {
			// ready said yes and there was nothing to take (a lane
			// event that was a flush, or words a peer rewrote): the
			// deadline, the context and Close still end the wait.
			if err := c.check(ctx); err != nil {
				return record{}, err
			}
		}
		if err := c.wait(ctx, c.ready); err != nil {
			return record{}, err
		}
	}
}

// take frees a message this consumer has read.
func (c *Consumer) take(r record) {
	if r.urgent {
		l := &c.oob.lane
		l.msgs++
		l.bytes += r.n
		l.release(r.after)
		return
	}
	c.msgs++
	c.bytes += r.n
	c.release(r.after)
}

// release makes everything before pos free for the producer and wakes it
// if it sleeps.
func (c *Consumer) release(pos uint64) {
	c.head = pos
	storeRelaxed(c.me.msgs, c.msgs)
	storeRelaxed(c.me.bytes, c.bytes)
	// Pairs with the producer's atomic Load of head in room.
	c.me.pos.Store(pos)
	c.wakePeer()
}

// Recv waits for the next message and copies it into buf, returning its
// length. If buf is too short, Recv returns the message's length and an
// error wrapping io.ErrShortBuffer, and the message stays in the ring. Once
// the producer has closed and everything committed has been received, Recv
// returns io.EOF.
func (c *Consumer) Recv(buf []byte) (int, error) {
	return c.RecvContext(context.Background(), buf)
}

// RecvContext is Recv with a context that can cancel the wait.
//
// With an out-of-band lane, urgent messages come first; RecvMsg tells them
// apart.
func (c *Consumer) RecvContext(ctx context.Context, buf []byte) (int, error) {
	n, _, err := c.RecvMsg(ctx, buf)
	return n, err
}

// RecvMsg is RecvContext that also reports whether the message came on the
// out-of-band lane (Producer.SendUrgent). Urgent messages are received
// before any data message not yet received; a flush (Producer.Flush) is
// applied before the next data message is taken.
func (c *Consumer) RecvMsg(ctx context.Context, buf []byte) (n int, urgent bool, err error) {
	if err := c.begin(nonePending); err != nil {
		return 0, false, err
	}
	defer c.mu.Unlock()
	r, err := c.await(ctx)
	if err != nil {
		return 0, false, err
	}
	if uint64(len(buf)) < r.n {
		return int(r.n), r.urgent, errShortBuffer(int(r.n), len(buf))
	}
	copy(buf, r.payload())
	c.take(r)
	return int(r.n), r.urgent, nil
}

// Peek waits for the next message and returns it in place, without
// copying. The slice is valid until Release or Close. Peek again before
// Release returns the same message.
//
// The bytes stay in shared memory, where the producer's process can still
// write them: if it is not trusted, copy a message before validating it
// (Recv copies), here and in RecvBatch's callback.
func (c *Consumer) Peek() ([]byte, error) {
	return c.PeekContext(context.Background())
}

// PeekContext is Peek with a context.
func (c *Consumer) PeekContext(ctx context.Context) ([]byte, error) {
	m, _, err := c.PeekMsg(ctx)
	return m, err
}

// PeekMsg is PeekContext that also reports whether the message is urgent.
// A peeked message is never discarded by a flush: it counts as received
// once it has been returned, and a flush that arrives meanwhile is applied
// to the messages after it.
func (c *Consumer) PeekMsg(ctx context.Context) (msg []byte, urgent bool, err error) {
	if err := c.begin(anyPending); err != nil {
		return nil, false, err
	}
	defer c.mu.Unlock()
	if !c.pending {
		r, err := c.await(ctx)
		if err != nil {
			return nil, false, err
		}
		c.pending, c.peek = true, r
	}
	return c.peek.payload(), c.peek.urgent, nil
}

// Release frees the message returned by Peek.
func (c *Consumer) Release() error {
	if err := c.begin(onePending); err != nil {
		return err
	}
	defer c.mu.Unlock()
	c.pending = false
	c.take(c.peek)
	return nil
}

// RecvBatch waits for at least one message, then passes up to max
// available messages (max <= 0: all that are available) to fn in order,
// and frees them all with one store of the consumer index. The slice passed
// to fn is valid only during the call. It returns how many messages fn saw.
func (c *Consumer) RecvBatch(max int, fn func(msg []byte)) (int, error) {
	return c.RecvBatchContext(context.Background(), max, fn)
}

// RecvBatchContext is RecvBatch with a context.
//
// With an out-of-band lane, an urgent message is passed alone (a batch of
// one), and an urgent message or flush that arrives during a batch ends it
// before the next data message; RecvBatchMsg tells urgent messages apart.
func (c *Consumer) RecvBatchContext(ctx context.Context, max int, fn func(msg []byte)) (int, error) {
	return c.RecvBatchMsg(ctx, max, func(msg []byte, _ bool) { fn(msg) })
}

// RecvBatchMsg is RecvBatchContext whose callback also learns whether the
// message is urgent.
func (c *Consumer) RecvBatchMsg(ctx context.Context, max int, fn func(msg []byte, urgent bool)) (int, error) {
	if err := c.begin(nonePending); err != nil {
		return 0, err
	}
	defer c.mu.Unlock()
	r, err := c.await(ctx)
	if err != nil {
		return 0, err
	}
	fn(r.payload(), r.urgent)
	if r.urgent {
		c.take(r)
		return 1, nil
	}
	count := 1
	c.msgs++
	c.bytes += r.n
	pos := r.after
	for count != max {
		if o := c.oob; o != nil && o.words.events.Load() != o.seen {
			break // out-of-band first: end the batch here
		}
		if pos-c.head >= c.capacity {
			// The producer cannot publish a lap ahead of the head this
			// batch has not released yet.
			err := c.corrupt(corruptf("records published beyond one lap past head %d (at %d)", c.head, pos))
			c.release(pos)
			return count, err
		}
		off, n, after, ok, err := c.next(pos)
		if err != nil {
			c.release(pos)
			return count, err
		}
		if !ok {
			break
		}
		fn(c.data[off:off+n:off+n], false)
		count++
		c.msgs++
		c.bytes += n
		pos = after
	}
	c.release(pos)
	return count, nil
}

package ring

// The out-of-band lane of an SPSC segment (Config.OOBCapacity > 0).
//
// Urgent messages travel in a small SPSC ring of their own, in the
// segment's out-of-band area, with the same record format and publishing
// protocol as the data ring and the data ring's futex words: a sleeping
// consumer is woken by an urgent message as by a data message. A flush
// records the producer's published tail in SlotOOBFlush and counts itself
// there; the consumer walks the records from its head to that tail
// (checking each header, counting what it discards) and skips to it in
// one store of its head.
//
// Order of an urgent send: publish the lane record, add to OOBEvents, then
// look at the consumer's waiting flag (and wake it). A flush stores its
// position, adds to OOBFlushes and OOBEvents, then looks at the flag. The
// consumer's ready check loads OOBEvents after it stores its waiting flag,
// so either it sees the event or the producer sees it waiting.
//
// Nothing the producer reads back from the segment can make it wait: the
// flush position comes from one load of its own published tail, and a
// peer's scribble there only corrupts what the consumer is told, which the
// consumer checks.
//
// Polling rule: before taking each data message (in Recv, Peek and every
// message of RecvBatch), the consumer loads one word, OOBEvents, which the
// producer increments after every urgent message and flush, and compares
// it with its cached copy. The word is written only by out-of-band events,
// so it stays in the consumer's cache and the check costs one load from
// L1. The trade-off is the lecture's: an event is noticed before the next
// data message is taken, never in the middle of one; a consumer busy with
// a long message (or a RecvBatch callback) notices it when it returns.
// The load may run ahead of an urgent message's publish by a few
// nanoseconds, in which case one more data message is taken first.

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/shmlane/shmlane/internal/futex"
	"github.com/shmlane/shmlane/internal/layout"
)

// Out-of-band errors.
var (
	// ErrNoLane: the segment has no out-of-band lane (Config.OOBCapacity
	// was 0). It matches ErrNotSupported.
	ErrNoLane = fmt.Errorf("shmlane: the segment has no out-of-band lane: %w", ErrNotSupported)
	// ErrLaneFull: the out-of-band lane holds as many urgent messages as it
	// can; the consumer has not received them yet. SendUrgent never waits.
	ErrLaneFull = errors.New("shmlane: out-of-band lane is full")
)

type oobWords struct {
	events, flushes, pos *atomic.Uint64
}

func (s *Segment) oobWords() oobWords {
	f := layout.SlotOffset(layout.SlotOOBFlush)
	return oobWords{
		events:  s.u64(f + layout.OOBEvents),
		flushes: s.u64(f + layout.OOBFlushes),
		pos:     s.u64(f + layout.OOBFlushPos),
	}
}

// laneSides are the urgent lane's sides: its own hot slots, and the data
// ring's control slots (one futex word per side for both rings).
func (s *Segment) laneSides() (prod, cons side) {
	return s.side(layout.SlotOOBProducer, layout.SlotProducerCtl), s.side(layout.SlotOOBConsumer, layout.SlotConsumerCtl)
}

// initLane fills e for the urgent lane. It takes no reference and no
// pid: the data endpoint that owns it holds both.
func (e *endpoint) initLane(s *Segment, me, peer side) {
	e.mapArea(s, s.area(layout.AreaOOB))
	e.me, e.peer = me, peer
}

type oobProducer struct {
	lane  Producer
	words oobWords
}

func (p *Producer) initOOB() error {
	if p.seg.geo.OOBCapacity == 0 {
		return nil
	}
	o := &oobProducer{words: p.seg.oobWords()}
	me, peer := p.seg.laneSides()
	o.lane.initLane(p.seg, me, peer)
	if err := o.lane.attach(me.pos.Load(), peer.pos.Load()); err != nil {
		return fmt.Errorf("out-of-band lane: %w", err)
	}
	o.lane.msgs, o.lane.bytes = me.msgs.Load(), me.bytes.Load()
	p.oob = o
	return nil
}

// oobBegin starts an out-of-band operation: it takes the lane's own lock,
// never the data path's, so that it works while a Send waits for space.
func (p *Producer) oobBegin() error {
	if p.oob == nil {
		return ErrNoLane
	}
	p.oobMu.Lock()
	switch {
	case p.closed.Load():
		p.oobMu.Unlock()
		return ErrClosed
	case p.peer.closed.Load() != 0:
		p.oobMu.Unlock()
		return ErrPeerClosed
	case p.peerGone.Load():
		p.oobMu.Unlock()
		return ErrPeerGone
	}
	return nil
}

// MaxUrgent is the largest message SendUrgent accepts (0 without a lane).
func (p *Producer) MaxUrgent() int {
	if p.oob == nil {
		return 0
	}
	return p.oob.lane.maxMsg
}

// SendUrgent sends msg on the out-of-band lane: the consumer receives it
// before any data message it has not yet received, flagged as urgent
// (Consumer.RecvMsg). It never waits: if the lane is full it returns
// ErrLaneFull. It may be called while another goroutine is blocked in Send.
func (p *Producer) SendUrgent(msg []byte) error {
	if err := p.oobBegin(); err != nil {
		return err
	}
	defer p.oobMu.Unlock()
	l := &p.oob.lane
	if l.err != nil {
		return l.err
	}
	if len(msg) > l.maxMsg {
		return ErrTooLarge
	}
	total, _ := l.need(len(msg))
	ok, err := l.room(total)
	if err != nil {
		return err
	}
	if !ok {
		return ErrLaneFull
	}
	copy(l.write(len(msg)), msg)
	l.store()
	// Pairs with the consumer's Load of events in ready and oobPoll,
	// which it makes after it stores its waiting flag; the wake comes
	// after, so a consumer it wakes sees the event.
	p.oob.words.events.Add(1)
	l.wakePeer()
	return nil
}

// Flush tells the consumer to discard, without delivering them, every
// data message committed before the call that it has not yet received.
// Messages sent after Flush are delivered as usual. A message being
// written (a Reserve not yet committed) is not committed, so it is not
// discarded. Flush may be called while another goroutine is blocked in
// Send: the space it frees lets that Send go on.
func (p *Producer) Flush() error {
	if err := p.oobBegin(); err != nil {
		return err
	}
	defer p.oobMu.Unlock()
	// The producer's published tail: store writes it after the header of
	// the last record published (storeRelease), so every record below it
	// is visible to the consumer that reads it from the flush record.
	w := p.oob.words
	w.pos.Store(p.me.pos.Load())
	w.flushes.Add(1)
	w.events.Add(1)
	// Pairs with the consumer's Store of waiting before its ready check,
	// which loads events.
	if p.peer.waiting.Load() != 0 && p.peer.waiting.CompareAndSwap(1, 0) {
		p.peer.seq.Add(1)
		futex.Wake(p.peer.seq, 1)
	}
	return nil
}

type oobConsumer struct {
	lane    Consumer
	words   oobWords
	seen    uint64 // events already handled
	flushes uint64 // flushes already applied
}

func (c *Consumer) initOOB() error {
	if c.seg.geo.OOBCapacity == 0 {
		return nil
	}
	o := &oobConsumer{words: c.seg.oobWords()}
	prod, me := c.seg.laneSides()
	o.lane.initLane(c.seg, me, prod)
	o.lane.head = me.pos.Load()
	o.lane.msgs, o.lane.bytes = me.msgs.Load(), me.bytes.Load()
	if o.lane.head%layout.RecordAlign != 0 {
		return corruptf("out-of-band head %d is not %d-byte aligned", o.lane.head, layout.RecordAlign)
	}
	o.flushes = o.words.flushes.Load()
	o.seen = o.words.events.Load()
	c.oob = o
	return nil
}

// oobPoll is the out-of-band check before each data message. It applies a
// new flush and returns an urgent message if there is one.
func (c *Consumer) oobPoll() (r record, ok bool, err error) {
	o := c.oob
	ev := o.words.events.Load()
	if ev == o.seen {
		return record{}, false, nil
	}
	if err := c.applyFlush(); err != nil {
		return record{}, false, err
	}
	off, n, after, ok, err := o.lane.next(o.lane.head)
	if err != nil {
		return record{}, false, c.corrupt(err)
	}
	if ok {
		return record{area: o.lane.data, off: off, n: n, after: after, urgent: true}, true, nil
	}
	o.seen = ev
	return record{}, false, nil
}

// applyFlush discards what the latest flush covers: every data record
// from head to the flush position. It walks those records, checking each
// header as Recv would, to count them; a position that is not a record
// boundary at most one lap ahead, or a record there that is not
// published, is corrupt.
func (c *Consumer) applyFlush() error {
	o := c.oob
	n := o.words.flushes.Load()
	if n == o.flushes {
		return nil
	}
	o.flushes = n
	// Stored before the count was added to (and a later flush only moves
	// it forward), so this is the latest flush's position or a newer one.
	pos := o.words.pos.Load()
	if pos <= c.head {
		return nil // nothing queued before it: all received already
	}
	if pos%layout.RecordAlign != 0 || pos-c.head >= c.capacity {
		return c.corrupt(corruptf("flush position %d is unaligned or a lap or more past head %d", pos, c.head))
	}
	var msgs, bytes uint64
	for at := c.head; at < pos; {
		h := c.word(at).Load()
		if h == 0 {
			return c.corrupt(corruptf("flush position %d is past the published records (none at %d)", pos, at))
		}
		size, err := layout.CheckHeader(h, at, c.capacity, c.maxMsg)
		if err != nil {
			return c.corrupt(err)
		}
		if d := layout.DecodeHeader(h); d.Type == layout.TypeData {
			msgs++
			bytes += uint64(d.Len)
		}
		if at += size; at > pos {
			return c.corrupt(corruptf("flush position %d falls inside the record ending at %d", pos, at))
		}
	}
	storeRelaxed(c.me.dmsgs, c.me.dmsgs.Load()+msgs)
	storeRelaxed(c.me.dbytes, c.me.dbytes.Load()+bytes)
	c.release(pos)
	return nil
}

// record is a message found by await: in the data area or the lane.
type record struct {
	area          []byte
	off, n, after uint64
	urgent        bool
}

func (r record) payload() []byte { return r.area[r.off : r.off+r.n : r.off+r.n] }

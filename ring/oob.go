package ring

// The out-of-band lane of an SPSC segment (Config.OOBCapacity > 0).
//
// Urgent messages travel in a small SPSC ring of their own, in the
// segment's out-of-band area, with the same record format and publishing
// protocol as the data ring and the data ring's futex words: a sleeping
// consumer is woken by an urgent message as by a data message. A flush
// records the producer's published tail, message count and byte count
// (under a sequence lock) in SlotOOBFlush; the consumer skips to that tail
// in one store of its head and counts what it skipped.
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

	"github.com/shmlane/shmlane/futex"
	"github.com/shmlane/shmlane/layout"
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
	events, gen, pos, msgs, bytes *atomic.Uint64
}

func (s *Segment) oobWords() oobWords {
	f := layout.SlotOffset(layout.SlotOOBFlush)
	return oobWords{
		events: s.u64(f + layout.OOBEvents),
		gen:    s.u64(f + layout.OOBFlushGen),
		pos:    s.u64(f + layout.OOBFlushPos),
		msgs:   s.u64(f + layout.OOBFlushMsgs),
		bytes:  s.u64(f + layout.OOBFlushBytes),
	}
}

// laneSides are the urgent lane's sides: its own hot slots, and the data
// ring's control slots (one futex word per side for both rings).
func (s *Segment) laneSides() (prod, cons side) {
	return s.side(layout.SlotOOBProducer, layout.SlotProducerCtl), s.side(layout.SlotOOBConsumer, layout.SlotConsumerCtl)
}

// laneEndpoint fills e for the urgent lane. It takes no reference and no
// pid: the data endpoint that owns it holds both.
func (e *endpoint) initLane(s *Segment, me, peer side) {
	e.seg = s
	e.data = s.area(layout.AreaOOB)
	e.capacity = uint64(len(e.data))
	e.mask = e.capacity - 1
	e.maxMsg = layout.MaxMessage(e.capacity)
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
	o.lane.tail = me.pos.Load()
	o.lane.headCache = peer.pos.Load()
	o.lane.msgs, o.lane.bytes = me.msgs.Load(), me.bytes.Load()
	if err := o.lane.checkHead(o.lane.headCache); err != nil {
		return err
	}
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
	l.publish() // wakes a sleeping consumer
	p.oob.words.events.Add(1)
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
	// The producer's published position and counts, read as one.
	var pos, msgs, bytes uint64
	for {
		g := p.me.gen.Load()
		if g&1 != 0 {
			pause(1)
			continue
		}
		pos, msgs, bytes = p.me.pos.Load(), p.me.msgs.Load(), p.me.bytes.Load()
		if p.me.gen.Load() == g {
			break
		}
	}
	w := p.oob.words
	w.gen.Add(1)
	w.pos.Store(pos)
	w.msgs.Store(msgs)
	w.bytes.Store(bytes)
	w.gen.Add(1)
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
	lane  Consumer
	words oobWords
	seen  uint64 // events already handled
	flush uint64 // flush generation already applied
	// checked is the head when events was last found unchanged: a flush
	// noticed later was made after that, so its position is not below it.
	checked uint64
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
		return corruptf("out-of-band head %d is not aligned", o.lane.head)
	}
	o.flush = o.words.gen.Load() &^ 1
	o.seen = o.words.events.Load()
	o.checked = c.head
	c.oob = o
	return nil
}

// oobPoll is the out-of-band check before each data message. It applies a
// new flush and returns an urgent message if there is one.
func (c *Consumer) oobPoll() (r record, ok bool, err error) {
	o := c.oob
	ev := o.words.events.Load()
	if ev == o.seen {
		o.checked = c.head
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
	o.seen, o.checked = ev, c.head
	return record{}, false, nil
}

// applyFlush discards what the latest flush covers.
func (c *Consumer) applyFlush() error {
	o := c.oob
	w := o.words
	var pos, msgs, bytes uint64
	var g uint64
	for tries := 0; ; tries++ {
		g = w.gen.Load()
		if g == o.flush {
			return nil
		}
		if g&1 != 0 {
			if tries > 1<<20 {
				return c.corrupt(corruptf("flush record stays half-written (generation %d)", g))
			}
			pause(1)
			continue
		}
		pos, msgs, bytes = w.pos.Load(), w.msgs.Load(), w.bytes.Load()
		if w.gen.Load() == g {
			break
		}
	}
	o.flush = g
	// The producer's tail was published before the flush was written.
	tail := c.peer.pos.Load()
	taken, takenBytes := c.msgs+c.me.dmsgs.Load(), c.bytes+c.me.dbytes.Load()
	if pos%layout.RecordAlign != 0 || pos < o.checked || pos > tail || tail-pos > c.capacity {
		return c.corrupt(corruptf("flush position %d outside [%d, %d]", pos, o.checked, tail))
	}
	if pos <= c.head {
		return nil // nothing queued before it: all received already
	}
	if msgs < taken || bytes < takenBytes || pos-c.head < (msgs-taken)*layout.RecordHeaderSize {
		return c.corrupt(corruptf("flush counts %d messages, %d bytes; %d and %d already taken", msgs, bytes, taken, takenBytes))
	}
	storeRelaxed(c.me.dmsgs, c.me.dmsgs.Load()+msgs-taken)
	storeRelaxed(c.me.dbytes, c.me.dbytes.Load()+bytes-takenBytes)
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

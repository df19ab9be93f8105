package ring

// The MPMC producer's side: claiming space at tail (claim, claimAt,
// room), publishing a claimed record (commit), and the Send, SendBatch,
// Reserve, Commit and Abort calls. The protocol ("Producer: read tail t;
// ..."), its invariants and its memory-ordering contract are in the
// opening comment of mpmc.go.

import (
	"context"
	"errors"
	"os"
	"unsafe"

	"github.com/shmlane/shmlane/internal/layout"
)

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
	return false, 0, p.corrupt(corruptf("word at tail %d is %#x, not free", t, v))
}

// commit publishes a claimed record (or batch) and wakes one sleeping
// consumer.
func (p *MPMCProducer) commit(t uint64, busy, hdr uint64) error {
	// Pairs with the consumers' atomic Load of the header at head.
	if !p.word(t).CompareAndSwap(busy, hdr) {
		return p.corrupt(corruptf("reservation at position %d was taken over", t))
	}
	p.sh.cons.wake(1)
	return nil
}

// Send copies msg into the ring as one message, waiting for space.
func (p *MPMCProducer) Send(msg []byte) error { return p.SendContext(context.Background(), msg) }

// SendContext is Send with a context.
func (p *MPMCProducer) SendContext(ctx context.Context, msg []byte) error {
	if err := p.begin(nonePending); err != nil {
		return err
	}
	defer p.mu.Unlock()
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
	limit := layout.RecordSize(p.maxMsg) // the most one group may claim
	if err := p.begin(nonePending); err != nil {
		return 0, err
	}
	defer p.mu.Unlock()
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
			return sent, p.corrupt(corruptf("claimed batch crosses the end of the area"))
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
	if err := p.begin(nonePending); err != nil {
		return nil, err
	}
	defer p.mu.Unlock()
	if n > p.maxMsg || n < 0 {
		return nil, ErrTooLarge
	}
	t, err := p.claim(ctx, layout.RecordSize(n), uint32(n))
	if err != nil {
		return nil, err
	}
	p.pending, p.resvPos, p.resvLen = true, t, n
	p.resvBusy = layout.OwnerHeader(uint32(n), layout.TypeBusy, p.pid)
	off := t&p.mask + hdrSize
	return p.data[off : off+uint64(n) : off+uint64(n)], nil
}

// Commit publishes the reserved message.
func (p *MPMCProducer) Commit() error {
	if err := p.begin(onePending); err != nil {
		return err
	}
	defer p.mu.Unlock()
	p.pending = false
	raceRelease(&p.seg.race)
	if err := p.commit(p.resvPos, p.resvBusy, layout.EncodeHeader(uint32(p.resvLen), layout.TypeData, p.resvPos)); err != nil {
		return err
	}
	p.count(uint64(p.resvLen), p.sh.sent, p.sh.sentBytes)
	return nil
}

// Abort drops the reserved message; consumers skip it.
func (p *MPMCProducer) Abort() error {
	if err := p.begin(onePending); err != nil {
		return err
	}
	defer p.mu.Unlock()
	p.discardOwn()
	return nil
}

func (p *MPMCProducer) discardOwn() {
	p.pending = false
	t := p.resvPos
	p.free(t+hdrSize, t+layout.RecordSize(p.resvLen))
	if p.word(t).CompareAndSwap(p.resvBusy, layout.EncodeHeader(uint32(p.resvLen), layout.TypeDiscard, t)) {
		p.sh.prod.lost.Add(1)
		p.sh.cons.wake(1)
	}
}

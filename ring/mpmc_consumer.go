package ring

// The MPMC consumer's side: claiming the record at head (claim), the wait
// condition (ready, idle), freeing a record read (finish), and the Recv,
// Peek, Release and RecvBatch calls. The protocol ("Consumer: read head h;
// ..."), its invariants and its memory-ordering contract are in the
// opening comment of mpmc.go.

import (
	"context"
	"errors"

	"github.com/shmlane/shmlane/internal/layout"
)

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
				return 0, 0, 0, false, c.corrupt(err)
			}
			if !w.CompareAndSwap(v, layout.OwnerHeader(d.Len, layout.TypeReading, c.pid)) {
				continue
			}
			if !c.sh.head.CompareAndSwap(h, h+size) {
				return 0, 0, 0, false, c.corrupt(corruptf("head moved past the record at %d while it was claimed", h))
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
				return 0, 0, 0, false, c.corrupt(err)
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
					return 0, 0, 0, false, c.corrupt(err)
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
		return 0, 0, 0, false, c.corrupt(corruptf("record header %#x at head %d below tail %d", v, h, c.sh.tail.Load()))
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
	if err := c.begin(nonePending); err != nil {
		return 0, err
	}
	defer c.mu.Unlock()
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
	if err := c.begin(anyPending); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	if !c.pending {
		pos, n, size, err := c.await(ctx)
		if err != nil {
			return nil, err
		}
		c.pending, c.peekPos, c.peekLen, c.peekSize = true, pos, n, size
	}
	off := c.peekPos&c.mask + hdrSize
	return c.data[off : off+c.peekLen : off+c.peekLen], nil
}

// Release frees the message returned by Peek.
func (c *MPMCConsumer) Release() error {
	if err := c.begin(onePending); err != nil {
		return err
	}
	defer c.mu.Unlock()
	c.pending = false
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
	if err := c.begin(nonePending); err != nil {
		return 0, err
	}
	defer c.mu.Unlock()
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

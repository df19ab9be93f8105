package ring

// Dead owners in the MPMC ring (the "Dead owners" paragraph of the opening
// comment of mpmc.go, which holds the protocol and its memory-ordering
// contract): removing dead pids from a side's table (reap), the slow path
// an endpoint runs after each sleep (recoverSlow), and taking over a
// record at head whose producer died (takeOver, discard). The claim loops
// (mpmc_producer.go, mpmc_consumer.go) and finished (mpmc_reclaim.go) take
// over the in-progress claims they find of dead owners themselves.

import "github.com/shmlane/shmlane/internal/layout"

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

func (p *MPMCProducer) recoverSlow() error {
	p.sh.cons.reap()
	p.reclaimStep(true)
	return p.err
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
		return c.corrupt(err)
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

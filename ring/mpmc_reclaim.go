package ring

// Reclaim in the MPMC ring: advancing reclaim over the run of finished
// records, so that producers may claim their space again (reclaimStep,
// finished). The protocol and its memory-ordering contract are in the
// opening comment of mpmc.go.

import "github.com/shmlane/shmlane/internal/layout"

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

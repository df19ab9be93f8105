package bench

// The rings between two processes: the SPSC ring, with and without an
// idle out-of-band lane, and the link that the MPMC ring's pingpong uses.

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/shmlane/shmlane/ring"
)

// ringTransport is the SPSC ring between two processes.
var ringTransport = &Transport{
	Name: "ring",
	How: "the SPSC ring between two processes. Stream: the producer publishes -batch messages per SendBatch " +
		"(one index store and at most one wake per batch; -batch 1 is one Send per message), the consumer takes all " +
		"available messages with RecvBatch (one index store per batch) and copies each out; amortising the publication " +
		"is what the ring can do and a pipe write or a channel send cannot. Pingpong: a ring each way, Send and Recv.",
	modes:   []string{ModeStream, ModePingpong, ModeUrgent, ModeFlush},
	batches: true,
	link:    ringLink{},
}

// ringLaneTransport is the ring with an out-of-band lane present and idle:
// the cost of the lane's check on the data path.
var ringLaneTransport = &Transport{
	Name:    "ringlane",
	How:     "the ring as above, in a segment with a 4 KiB out-of-band lane that carries nothing: the consumer checks it before every data message.",
	modes:   bothModes,
	batches: true,
	link:    ringLink{lane: true},
}

// laneCapacity is the out-of-band lane of ringlane and of the
// out-of-band modes.
const laneCapacity = 4096

// ringLink connects the two sides through ring segments, passed to the
// peer as memfds: one for a stream (this process produces, the peer
// consumes), one each way for pingpong.
type ringLink struct {
	mpmc bool // MPMC segments and endpoints instead of SPSC ones
	lane bool // segments with an out-of-band lane that carries nothing
}

// check rejects sizes over the ring's largest message at cfg.Capacity,
// and, where the out-of-band modes run, sizes under what their events
// carry.
func (rl ringLink) check(cfg *Config) error {
	limit := ring.MaxMessage(cfg.Capacity)
	for _, size := range cfg.Sizes {
		if size > limit {
			return fmt.Errorf("size %d is over the ring's largest message, %d bytes at -capacity %d: raise -capacity or drop the size", size, limit, cfg.Capacity)
		}
	}
	if !rl.mpmc && !rl.lane && (slices.Contains(cfg.Modes, ModeUrgent) || slices.Contains(cfg.Modes, ModeFlush)) {
		return checkOOBSizes(cfg.Sizes)
	}
	return nil
}

// runner runs the out-of-band modes of the SPSC ring.
func (rl ringLink) runner(c *caseSpec) runner {
	if c.oob() && !rl.mpmc {
		return newOOBCase(c)
	}
	return nil
}

// listen creates the segments and attaches this side: the producer of
// the first, the consumer of the second if there is one. The end counts
// the futex sleeps of both segments.
func (rl ringLink) listen(c *caseSpec, _ string, l *listener) error {
	n := 1
	if c.mode == ModePingpong {
		n = 2
	}
	segs := make([]*ring.Segment, n)
	for i := range segs {
		seg, err := rl.create(c)
		if err != nil {
			return err
		}
		l.onClose(seg.Close)
		f, err := seg.File()
		if err != nil {
			return err
		}
		segs[i], l.files = seg, append(l.files, f)
	}
	l.local = &end{sleeps: func() uint64 { return rl.sleeps(segs) }}
	s, err := rl.producer(segs[0], c.spin)
	if err != nil {
		return err
	}
	l.local.s = s
	if n == 2 {
		r, err := rl.consumer(segs[1], c.spin)
		if err != nil {
			return err
		}
		l.local.r = r
	}
	return nil
}

// dial maps the segments and attaches the other ends: the consumer of
// the first, the producer of the second if there is one.
func (rl ringLink) dial(_ context.Context, spec *peerSpec, files []*os.File) (*end, error) {
	if len(files) < 1 || len(files) > 2 {
		closeFiles(files)
		return nil, fmt.Errorf("got %d segment descriptors, want 1 (stream) or 2 (pingpong)", len(files))
	}
	e := &end{}
	segs := make([]*ring.Segment, len(files))
	for i, f := range files {
		seg, err := rl.open(f)
		if err != nil {
			closeFiles(files[i+1:])
			e.close()
			return nil, err
		}
		segs[i], e.closers = seg, append(e.closers, seg.Close)
	}
	r, err := rl.consumer(segs[0], spec.Spin)
	if err != nil {
		e.close()
		return nil, err
	}
	e.r = r
	if len(segs) == 2 {
		s, err := rl.producer(segs[1], spec.Spin)
		if err != nil {
			e.close()
			return nil, err
		}
		e.s = s
	}
	return e, nil
}

// create makes a segment for case c.
func (rl ringLink) create(c *caseSpec) (*ring.Segment, error) {
	cfg := &ring.Config{Capacity: c.capacity, Name: "shmlane-bench"}
	if rl.mpmc {
		return ring.CreateMPMC(cfg)
	}
	if rl.lane || c.oob() {
		cfg.OOBCapacity = laneCapacity
	}
	return ring.Create(cfg)
}

// open maps the segment the peer got as its descriptor f, which it
// closes.
func (rl ringLink) open(f *os.File) (*ring.Segment, error) {
	defer f.Close()
	if rl.mpmc {
		return ring.OpenMPMC(f)
	}
	return ring.Open(f)
}

// producer attaches a producer that spins for spin (see caseSpec.spin)
// to seg.
func (rl ringLink) producer(seg *ring.Segment, spin time.Duration) (sender, error) {
	o := &ring.Options{SpinTime: spin}
	if rl.mpmc {
		return asSender(seg.MPMCProducer(o))
	}
	return asSender(seg.Producer(o))
}

// consumer attaches a consumer that spins for spin to seg.
func (rl ringLink) consumer(seg *ring.Segment, spin time.Duration) (receiver, error) {
	o := &ring.Options{SpinTime: spin}
	if rl.mpmc {
		return asReceiver(seg.MPMCConsumer(o))
	}
	return asReceiver(seg.Consumer(o))
}

// sleeps sums the futex sleeps of both sides of segs.
func (rl ringLink) sleeps(segs []*ring.Segment) uint64 {
	var n uint64
	for _, seg := range segs {
		if rl.mpmc {
			st := seg.MPMCStats()
			n += st.ProducerSleeps + st.ConsumerSleeps
		} else {
			st := seg.Stats()
			n += st.ProducerSleeps + st.ConsumerSleeps
		}
	}
	return n
}

package bench

// The MPMC ring. Its pingpong is the ring's link over MPMC segments; its
// stream runs -producers producer and -consumers consumer processes, all
// peers of this one, over one segment.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/shmlane/shmlane/ring"
)

// mpmcTransport is the MPMC ring between processes.
var mpmcTransport = &Transport{
	Name: "mpmc",
	How: "the MPMC ring. Stream: -producers producer and -consumers consumer processes (all peers of this one); " +
		"the producers start together and each publishes -batch messages per SendBatch for the duration, each consumer " +
		"takes what is available with RecvBatch and copies each out; msgs/s is the aggregate, over the span from the " +
		"first consumer's first message to the last consumer's last, and every message is accounted for (each " +
		"producer's count and the sum of its sequence numbers over all consumers). Pingpong (1 producer, 1 consumer " +
		"only): an MPMC ring each way, Send and Recv.",
	modes:   bothModes,
	batches: true,
	link:    mpmcLink{ringLink{mpmc: true}},
}

// mpmcLink is the ring's link over MPMC segments, with a stream of its
// own.
type mpmcLink struct{ ringLink }

// runner runs the stream with several processes a side.
func (mpmcLink) runner(c *caseSpec) runner {
	if c.mode == ModeStream {
		return &mpmcStream{c: c}
	}
	return nil
}

// An mpmc stream message carries its producer's index in the top byte of
// its sequence number (messages of 8 bytes or more; shorter ones carry
// too little to tell producers apart and are only counted).
const (
	mpmcIndexShift = 56
	mpmcSeqMask    = 1<<mpmcIndexShift - 1
)

// mpmcStream runs P producer and C consumer peers over one MPMC segment.
// Each producer has two pipes from this process: start (end of file: begin
// sending) and stop (end of file: close the producer). A producer reports
// its count the moment its loop ends and then waits for stop, so that the
// window (start to the last producer's report) holds the sending loops and
// nothing of closing.
type mpmcStream struct {
	c           *caseSpec
	seg         *ring.Segment
	prods       []*peer
	cons        []*peer
	start, stop []*os.File // write ends, one per producer
	done, shut  bool
}

// setup creates the segment and starts the consumers, then the
// producers, each waiting for its start signal.
func (m *mpmcStream) setup() error {
	seg, err := ring.CreateMPMC(&ring.Config{Capacity: m.c.capacity, Name: "shmlane-bench"})
	if err != nil {
		return err
	}
	m.seg = seg
	start := func(spec peerSpec, extra ...*os.File) (*peer, error) {
		f, err := seg.File()
		if err != nil {
			closeFiles(extra)
			return nil, err
		}
		spec.Size, spec.Producers, spec.Spin = m.c.size, m.c.producers, m.c.spin
		p, err := startPeer(spec, m.c, append([]*os.File{f}, extra...), nil, nil)
		if err != nil {
			return nil, err
		}
		return p, p.awaitReady()
	}
	// Consumers first: they wait on the empty ring until the producers
	// begin.
	for range m.c.consumers {
		p, err := start(peerSpec{Role: roleMPMCRecv})
		if p != nil {
			m.cons = append(m.cons, p)
		}
		if err != nil {
			return err
		}
	}
	for i := range m.c.producers {
		startR, startW, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("start pipe: %w", err)
		}
		m.start = append(m.start, startW)
		stopR, stopW, err := os.Pipe()
		if err != nil {
			startR.Close()
			return fmt.Errorf("stop pipe: %w", err)
		}
		m.stop = append(m.stop, stopW)
		p, err := start(peerSpec{Role: roleMPMCSend, Index: i, Duration: m.c.duration, Batch: m.c.batch}, startR, stopR)
		if p != nil {
			m.prods = append(m.prods, p)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// pids lists every producer and consumer process.
func (m *mpmcStream) pids() sidePIDs {
	var s sidePIDs
	for _, p := range m.prods {
		s.Producers = append(s.Producers, p.pid())
	}
	for _, p := range m.cons {
		s.Consumers = append(s.Consumers, p.pid())
	}
	s.Producer, s.Consumer = s.Producers[0], s.Consumers[0]
	return s
}

// run starts the producers, waits for their counts, stops them, and
// checks that the consumers together received every message exactly
// once; msgs/s spans the first consumer's first message to the last
// consumer's last.
func (m *mpmcStream) run(w *window) (measurement, error) {
	w.open()
	closeFiles(m.start)
	sent := make([]uint64, len(m.prods))
	var total uint64
	for i, p := range m.prods {
		rep, err := p.awaitReport()
		if err != nil {
			return measurement{}, err
		}
		sent[i] = rep.Received
		total += rep.Received
	}
	w.close(total)
	closeFiles(m.stop)

	var received uint64
	counts := make([]uint64, len(m.prods))
	sums := make([]uint64, len(m.prods))
	var first, last int64
	for _, p := range m.cons {
		rep, err := p.awaitReport()
		if err != nil {
			return measurement{}, err
		}
		received += rep.Received
		for i := range min(len(rep.Counts), len(rep.Sums), len(counts)) {
			counts[i] += rep.Counts[i]
			sums[i] += rep.Sums[i]
		}
		if rep.Received == 0 {
			continue
		}
		if first == 0 || rep.First < first {
			first = rep.First
		}
		last = max(last, rep.Last)
	}
	if received != total {
		return measurement{}, countError("consumers received", received, total)
	}
	if m.c.size >= 8 {
		if err := checkMPMCTotals(sent, counts, sums); err != nil {
			return measurement{}, err
		}
	}
	m.done = true
	if received == 0 || last <= first {
		return measurement{}, fmt.Errorf("no time to measure: %d messages arrived between %d and %d ns", received, first, last)
	}
	return measurement{messages: received - 1, seconds: float64(last-first) / 1e9}, nil
}

// close releases the control pipes, stops every peer (see stopPeers)
// and closes the segment. close is idempotent.
func (m *mpmcStream) close() error {
	if m.shut {
		return nil
	}
	m.shut = true
	closeFiles(m.start) // a producer still waiting for either ends
	closeFiles(m.stop)
	err := stopPeers(m.done, append(m.prods, m.cons...)...)
	if m.seg != nil {
		m.seg.Close()
	}
	return err
}

// checkMPMCTotals checks that the consumers together received each
// producer's messages exactly once: producer i sent sent[i] messages
// numbered from 0, and the consumers received counts[i] of them, their
// numbers summing to sums[i] (modulo 2^64). A message lost and another
// delivered twice leave the count right and the sum wrong.
func checkMPMCTotals(sent, counts, sums []uint64) error {
	for i, n := range sent {
		// 0 + 1 + … + n-1, modulo 2^64 like the consumers' sums.
		want := n / 2 * (n - 1)
		if n%2 == 1 {
			want = (n - 1) / 2 * n
		}
		if counts[i] != n || sums[i] != want {
			return fmt.Errorf("producer %d sent %d messages, numbers summing to %d; the consumers received %d, summing to %d: some were lost or delivered twice", i, n, want, counts[i], sums[i])
		}
	}
	return nil
}

// mpmcTally is an mpmc consumer's check of the messages it receives: each
// must have the case's size, and those of each producer must arrive in
// increasing order (a consumer claims records in ring order), though with
// gaps (other consumers take the rest). It counts each producer's messages
// and sums their sequence numbers for checkMPMCTotals. Messages under 8
// bytes cannot carry a producer's index: they are checked for size and
// counted in n only.
type mpmcTally struct {
	buf    []byte // the consumer's copy of the current message
	tagged bool
	n      uint64
	next   []uint64 // each producer's lowest sequence number still possible
	counts []uint64
	sums   []uint64
	first  time.Time // when the first message arrived
	err    error     // the first bad message
}

// newMPMCTally returns the tally of a consumer of messages of size bytes
// from producers producers.
func newMPMCTally(size, producers int) *mpmcTally {
	t := &mpmcTally{buf: make([]byte, size), tagged: size >= 8}
	if t.tagged {
		t.next = make([]uint64, producers)
		t.counts = make([]uint64, producers)
		t.sums = make([]uint64, producers)
	}
	return t
}

// take copies msg out of the ring and checks it.
func (t *mpmcTally) take(msg []byte) {
	copy(t.buf, msg)
	if t.n == 0 {
		t.first = time.Now()
	}
	t.n++
	if t.err != nil {
		return
	}
	if len(msg) != len(t.buf) {
		t.err = fmt.Errorf("message of %d bytes, want %d", len(msg), len(t.buf))
		return
	}
	if !t.tagged {
		return
	}
	v := seqOf(t.buf)
	i, seq := v>>mpmcIndexShift, v&mpmcSeqMask
	switch {
	case i >= uint64(len(t.next)):
		t.err = fmt.Errorf("message tagged with producer %d, want one of %d", i, len(t.next))
	case seq < t.next[i]:
		t.err = fmt.Errorf("producer %d's message %d arrived after its message %d: repeated or out of order", i, seq, t.next[i]-1)
	default:
		t.next[i] = seq + 1
		t.counts[i]++
		t.sums[i] += seq
	}
}

// mpmcSegment maps the MPMC segment a peer got as its first descriptor
// and checks that it got want descriptors in all; on failure it closes
// them.
func mpmcSegment(files []*os.File, want int) (*ring.Segment, error) {
	if len(files) != want {
		closeFiles(files)
		return nil, fmt.Errorf("got %d descriptors, want %d", len(files), want)
	}
	seg, err := (ringLink{mpmc: true}).open(files[0])
	if err != nil {
		closeFiles(files[1:])
	}
	return seg, err
}

// mpmcSendRole waits for the start signal, sends for the duration and
// reports how many messages it sent; after the report it waits for the
// stop signal, then closes the producer.
func mpmcSendRole(ps *peerSide) (peerReport, error) {
	spec := ps.spec
	seg, err := mpmcSegment(ps.files, 3)
	if err != nil {
		return peerReport{}, err
	}
	startR, stopR := ps.files[1], ps.files[2]
	p, err := seg.MPMCProducer(&ring.Options{SpinTime: spec.Spin})
	if err != nil {
		closeFiles(ps.files[1:])
		seg.Close()
		return peerReport{}, err
	}
	closeAll := func() error {
		err := p.Close()
		closeFiles(ps.files[1:])
		seg.Close()
		return err
	}
	if spec.Index < 0 || spec.Index > 0xff {
		closeAll()
		return peerReport{}, fmt.Errorf("producer index %d out of range [0, 255]", spec.Index)
	}
	batch := newBatch(spec.Batch, spec.Size)
	tag := uint64(spec.Index) << mpmcIndexShift
	if err := ps.ready(); err != nil {
		closeAll()
		return peerReport{}, err
	}
	if _, err := io.Copy(io.Discard, startR); err != nil {
		closeAll()
		return peerReport{}, fmt.Errorf("wait for the start: %w", err)
	}
	every := max(64/len(batch), 1)
	end := time.Now().Add(spec.Duration)
	var sent uint64
	for i := 1; ; i++ {
		stampBatch(batch, sent, tag)
		n, err := p.SendBatch(batch)
		sent += uint64(n)
		if err != nil {
			closeAll()
			return peerReport{Received: sent}, fmt.Errorf("send message %d: %w", sent, err)
		}
		if i%every == 0 && !time.Now().Before(end) {
			break
		}
	}
	rep := peerReport{Received: sent}
	rep.then = func() error {
		io.Copy(io.Discard, stopR)
		return closeAll()
	}
	return rep, nil
}

// mpmcRecvRole receives until every producer has closed, checking each
// message (see mpmcTally), and reports its count, each producer's count and
// sum of sequence numbers, and the times of its first and last message.
func mpmcRecvRole(ps *peerSide) (peerReport, error) {
	seg, err := mpmcSegment(ps.files, 1)
	if err != nil {
		return peerReport{}, err
	}
	defer seg.Close()
	c, err := seg.MPMCConsumer(&ring.Options{SpinTime: ps.spec.Spin})
	if err != nil {
		return peerReport{}, err
	}
	defer c.Close()
	t := newMPMCTally(ps.spec.Size, ps.spec.Producers)
	take := t.take // one method value, not one per call
	var rep peerReport
	if err := ps.ready(); err != nil {
		return peerReport{}, err
	}
	for {
		n, err := c.RecvBatch(0, take)
		if n > 0 {
			// From the first message's arrival to the end of the batch
			// that held the last.
			rep.First, rep.Last = t.first.UnixNano(), time.Now().UnixNano()
			rep.Received += uint64(n)
		}
		if t.err != nil {
			return rep, t.err
		}
		if errors.Is(err, io.EOF) {
			rep.Counts, rep.Sums = t.counts, t.sums
			return rep, nil
		}
		if err != nil {
			return rep, fmt.Errorf("receive message %d: %w", rep.Received, err)
		}
	}
}

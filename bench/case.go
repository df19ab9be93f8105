package bench

// A case from setup to teardown, its measurement window, and the common
// producer loops: stream and pingpong over any link.

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"
)

// A caseSpec is one measurement: one transport, mode and message size.
type caseSpec struct {
	transport *Transport
	mode      string
	size      int
	duration  time.Duration
	capacity  int // ring bytes; the channel buffers as much
	batch     int // batching stream producers: messages per SendBatch (1: Send each)
	producers int // mpmc: producer processes
	consumers int // mpmc: consumer processes
	// spin is every ring endpoint's ring.Options.SpinTime, on both
	// sides (0: ring.DefaultSpinTime; negative: never spin).
	spin time.Duration
	// inProcess runs the peer's side in a goroutine of this process
	// instead of a peer process (go test's in-process benchmarks).
	inProcess bool
	log       io.Writer // notes; nil discards them
}

// limit is how long a case may take, setup and teardown included, before
// its peer is killed: a generous bound that only a hang reaches.
func (c *caseSpec) limit() time.Duration { return 2*c.duration + 30*time.Second }

// oob reports whether c is one of the out-of-band modes.
func (c *caseSpec) oob() bool { return c.mode == ModeUrgent || c.mode == ModeFlush }

// sidePIDs are the processes of a case: for pingpong, the producer is the
// side that sends requests and times round trips, the consumer the side
// that echoes them. An in-process case runs both in this process.
type sidePIDs struct {
	Producer, Consumer int
	// Producers and Consumers list every process of a side when there
	// are several (mpmc); Producer and Consumer are then the first.
	Producers, Consumers []int
}

// A runner runs one case in three steps. Within run, the case's
// steady-state loop of moving messages is its measurement window, which
// run marks with w.open and w.close and which windowObservers bracket.
type runner interface {
	// setup starts the peers and attaches every side; it returns when
	// all are ready to move messages.
	setup() error
	// pids are the processes that run the two sides.
	pids() sidePIDs
	// run moves messages for the case's duration, checks that every one
	// arrived intact and in order, and returns the timed figures. It
	// calls w.open just before its loop, after allocating its buffers,
	// and w.close just after, before it closes anything.
	run(w *window) (measurement, error)
	// close releases what setup made; a peer still running is killed,
	// and it is always waited for. close is safe after a failed setup,
	// and idempotent.
	close() error
}

// measurement is what a case's run measured.
type measurement struct {
	// messages are the timed messages: for stream, those that arrived
	// after the first one (the clock starts at the first arrival and
	// stops when the consumer sees the end of the stream); for pingpong,
	// the round trips.
	messages uint64
	seconds  float64
	// rtts are the round-trip times of pingpong (the out-of-band modes:
	// the latencies of urgent messages or flushes); nil for stream.
	rtts *latencies
	// sleepsPerRT are pingpong's futex sleeps per round trip, both sides
	// of both rings, where the link counts them (see end.sleeps).
	sleepsPerRT *float64
	// drain is the out-of-band modes' queue drain time, in seconds.
	drain *float64
}

// windowObservers are called when a case's measurement window opens, with
// the case and its processes. The function each returns is called the
// moment the window closes, with the number of messages (pingpong: round
// trips) moved in it, and returns what to add to the case's result, or
// nil. The probe that counts system calls per process fills
// SyscallsPerMsg this way.
var windowObservers []func(c *caseSpec, pids sidePIDs) (closeWindow func(msgs uint64) func(r *Result))

// A window is a case's measurement window: its steady-state loop, from the
// moment every side is attached and about to move messages to the moment
// the producing side has sent its last one. Process start-up, attaching,
// allocating buffers, closing and the peers' exits lie outside it. Only
// observers see it; a case's msgs/s has its own clock (see measurement).
type window struct {
	c       *caseSpec
	pids    sidePIDs
	state   int // 0 not opened, 1 open, 2 closed
	closers []func(uint64) func(*Result)
	results []func(*Result)
}

// open opens the window: every observer starts watching. It does
// nothing if the window was opened before.
func (w *window) open() {
	if w.state != 0 {
		return
	}
	w.state = 1
	for _, o := range windowObservers {
		w.closers = append(w.closers, o(w.c, w.pids))
	}
}

// close closes the window after msgs messages moved in it. It does
// nothing if the window is not open.
func (w *window) close(msgs uint64) {
	if w.state != 1 {
		return
	}
	w.state = 2
	for _, closeWindow := range w.closers {
		if apply := closeWindow(msgs); apply != nil {
			w.results = append(w.results, apply)
		}
	}
}

// apply adds what the observers found to r.
func (w *window) apply(r *Result) {
	for _, f := range w.results {
		f(r)
	}
}

// newRunner returns the runner of case c: the link's own for a mode it
// runs with loops of its own, the common loops otherwise.
func newRunner(c *caseSpec) runner {
	if m, ok := c.transport.link.(modeRunner); ok {
		if r := m.runner(c); r != nil {
			return r
		}
	}
	role := roleStream
	if c.mode == ModePingpong {
		role = roleEcho
	}
	return &linkCase{c: c, role: role}
}

// runCase runs one case from setup to teardown.
func runCase(c *caseSpec) (Result, error) {
	r := Result{Transport: c.transport.Name, Mode: c.mode, Size: c.size, Capacity: c.capacity,
		Producers: c.producers, Consumers: c.consumers}
	if c.mode == ModeStream && c.transport.batches {
		r.Batch = c.batch
	}
	run := newRunner(c)
	defer run.close()
	if err := run.setup(); err != nil {
		return r, err
	}
	// Garbage from earlier cases is collected before the window, not in it.
	runtime.GC()

	w := &window{c: c, pids: run.pids()}
	m, err := run.run(w)
	w.close(0) // a run that failed before closing it: nothing to report
	r.Messages, r.Seconds = m.messages, m.seconds
	r.DrainSeconds, r.SleepsPerRT = m.drain, m.sleepsPerRT
	w.apply(&r)
	if err != nil {
		return r, err
	}
	if err := run.close(); err != nil {
		return r, err
	}
	if m.seconds > 0 {
		r.MsgsPerSec = float64(m.messages) / m.seconds
		r.MBPerSec = r.MsgsPerSec * float64(c.size) / 1e6
	}
	if q := m.rtts.summary(); q != nil {
		r.RTTP50, r.RTTP99, r.RTTP999, r.RTTMax = &q.P50, &q.P99, &q.P999, &q.Max
	}
	return r, nil
}

// linkCase is a case between this process and one peer over the case's
// link: this side produces (or requests), the peer runs role.
type linkCase struct {
	c    *caseSpec
	role string
	l    listener
	peer *peer
	// done is set when run succeeded: the peer then exits by itself.
	done   bool
	closed bool
	err    error // close's
}

// setup makes this side, starts the peer with the link's files (or, in
// process, its end), completes this side if the peer must run first, and
// waits until the peer is attached.
func (lc *linkCase) setup() error {
	c := lc.c
	dir, err := os.MkdirTemp("", "shmlane-bench-")
	if err != nil {
		return err
	}
	lc.l.onClose(func() error { return os.RemoveAll(dir) })
	if err := c.transport.link.listen(c, dir, &lc.l); err != nil {
		return err
	}
	spec := peerSpec{Role: lc.role, Transport: c.transport.Name, Size: c.size, Addr: lc.l.addr, Spin: c.spin}
	if c.transport.batches {
		spec.Batch = c.batch // the consumer takes what is there with RecvBatch
	}
	// If the peer dies, closing this side's end ends a wait on it (a ring
	// does not see a dead peer on its own as soon).
	var onExit func()
	if local := lc.l.local; local != nil {
		onExit = func() { local.close() }
	}
	files, given := lc.l.files, lc.l.peer
	lc.l.files, lc.l.peer = nil, nil
	if lc.peer, err = startPeer(spec, c, files, given, onExit); err != nil {
		return err
	}
	if lc.l.local == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if lc.l.local, err = lc.l.accept(ctx); err != nil {
			return lc.peer.explain(fmt.Errorf("accept the peer: %w", err))
		}
	}
	return lc.peer.awaitReady()
}

// pids: this process produces, the peer consumes (or echoes).
func (lc *linkCase) pids() sidePIDs {
	return sidePIDs{Producer: os.Getpid(), Consumer: lc.peer.pid()}
}

// run runs the common producer loop of the case's mode.
func (lc *linkCase) run(w *window) (measurement, error) {
	if lc.c.mode == ModePingpong {
		return lc.pingpong(w)
	}
	return lc.stream(w)
}

// close closes this side, which ends a peer still waiting on it, then
// stops the peer (see stopPeers). close is idempotent.
func (lc *linkCase) close() error {
	if lc.closed {
		return lc.err
	}
	lc.closed = true
	lc.l.close()
	if lc.peer != nil {
		lc.err = stopPeers(lc.done, lc.peer)
	}
	return lc.err
}

// stopPeers stops peers, all of them: after a run that succeeded (done)
// it gives each a moment to exit by itself, otherwise it kills them at
// once. It returns the first peer's error.
func stopPeers(done bool, peers ...*peer) error {
	grace := time.Duration(0)
	if done {
		grace = 5 * time.Second
	}
	var first error
	for _, p := range peers {
		if err := p.stop(grace); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// stream sends stamped messages for the case's duration, Batch at a time
// with SendBatch where the transport batches and the end can, one Send
// each otherwise, then closes this side and waits for the consumer's
// report (see streamEnd).
func (lc *linkCase) stream(w *window) (measurement, error) {
	s := lc.l.local.s
	if s == nil {
		return measurement{}, fmt.Errorf("stream from the listening side: %w", errOneWay)
	}
	bs, _ := s.(batchSender)
	if !lc.c.transport.batches || lc.c.batch == 1 {
		bs = nil
	}
	batch := newBatch(1, lc.c.size)
	if bs != nil {
		batch = newBatch(lc.c.batch, lc.c.size)
	}
	// Look at the clock about every 64 messages.
	every := max(64/len(batch), 1)
	var seq uint64
	w.open()
	end := time.Now().Add(lc.c.duration)
	for i := 1; ; i++ {
		if bs == nil {
			stamp(batch[0], seq)
			if err := s.Send(batch[0]); err != nil {
				return measurement{}, lc.peer.explain(fmt.Errorf("send message %d: %w", seq, err))
			}
			seq++
		} else {
			stampBatch(batch, seq, 0)
			n, err := bs.SendBatch(batch)
			seq += uint64(n)
			if err != nil {
				return measurement{}, lc.peer.explain(fmt.Errorf("send message %d: %w", seq, err))
			}
		}
		if i%every == 0 && !time.Now().Before(end) {
			break
		}
	}
	w.close(seq)
	s.Close()
	return lc.streamEnd(seq)
}

// streamEnd returns a stream case's measurement once the producer sent
// sent messages and closed: it waits for the consumer's report and checks
// that every message arrived.
func (lc *linkCase) streamEnd(sent uint64) (measurement, error) {
	rep, err := lc.awaitCount("consumer received", sent)
	return measurement{messages: rep.Timed, seconds: rep.Seconds}, err
}

// awaitCount waits for the peer's report once this side sent sent
// messages and closed, and checks that the peer counted them all (what
// names the count in the error). The case is then done: the peer exits
// by itself.
func (lc *linkCase) awaitCount(what string, sent uint64) (peerReport, error) {
	rep, err := lc.peer.awaitReport()
	if err != nil {
		return peerReport{}, err
	}
	if rep.Received != sent {
		return peerReport{}, countError(what, rep.Received, sent)
	}
	lc.done = true
	return rep, nil
}

// pingpong times round trips for the case's duration: it sends a request
// stamped with its number, receives the echo, checks it and records the
// round trip, and opens w just before the first request and closes it
// after the last echo. Where the link counts futex sleeps, those of the
// window give the sleeps per round trip. Then it closes its request side
// and checks the echo peer's count.
func (lc *linkCase) pingpong(w *window) (measurement, error) {
	e := lc.l.local
	if e.s == nil || e.r == nil {
		return measurement{}, fmt.Errorf("pingpong: %w", errOneWay)
	}
	size := lc.c.size
	out, in := payload(size), make([]byte, size)
	rtts := newLatencies()
	var sleeps0 uint64
	if e.sleeps != nil {
		sleeps0 = e.sleeps()
	}
	w.open()
	start := time.Now()
	end := start.Add(lc.c.duration)
	var seq uint64
	var t1 time.Time
	for {
		stamp(out, seq)
		t0 := time.Now()
		if err := e.s.Send(out); err != nil {
			return measurement{}, lc.peer.explain(fmt.Errorf("send request %d: %w", seq, err))
		}
		n, err := e.r.Recv(in)
		t1 = time.Now()
		if err != nil {
			return measurement{}, lc.peer.explain(fmt.Errorf("receive reply %d: %w", seq, err))
		}
		if err := checkEcho(in, n, size, seq); err != nil {
			return measurement{}, err
		}
		rtts.record(t1.Sub(t0))
		seq++
		if !t1.Before(end) {
			break
		}
	}
	m := measurement{messages: seq, seconds: t1.Sub(start).Seconds(), rtts: rtts}
	if e.sleeps != nil {
		x := float64(e.sleeps()-sleeps0) / float64(seq)
		m.sleepsPerRT = &x
	}
	w.close(seq)
	e.s.Close()
	if _, err := lc.awaitCount("echo peer received", seq); err != nil {
		return measurement{}, err
	}
	return m, nil
}

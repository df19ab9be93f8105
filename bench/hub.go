package bench

// The hub: one server process holding many ring connections, most of
// them idle, each served by a goroutine of its own blocked in Recv, as a
// server with thousands of quiet clients holds them. Client processes
// pick a connection at random after a random idle gap, send one small
// request on it and wait for the echo. What the hub measures is what
// idle connections cost the server: its OS threads (a futex sleep in the
// system call holds one), and how late the goroutine of a sleeping
// connection sees a request.
//
// This process creates every segment (a request ring and a response ring
// a connection, ring.Create at a small capacity) and keeps none of them
// mapped. It starts the clients first, each with its start pipe
// (descriptor 5) and the segments of its share of the connections (6 on:
// request, response, request, …), then the server with the segments of
// every connection (5 on, in the same order), which reports ready once
// every connection's goroutine has gone to sleep in Recv. This process
// counts the server's threads then, closes the start pipes, samples the
// count while the clients send, and collects the reports: each client's
// count and time, and the server's count and wake latencies.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	_ "unsafe" // go:linkname

	"github.com/shmlane/shmlane/ring"
)

// HubConfig is what RunHub runs. DefaultHubConfig returns the defaults
// of "shmlane bench -mode hub"; Prepare's errors name the fields by that
// command's flags where it has one.
type HubConfig struct {
	// Conns is how many connections the server holds, in [1, 100000].
	Conns int
	// Clients is how many client processes share the connections, each
	// an equal part (the sizes differ by one at most), in [1, 64] and at
	// most Conns.
	Clients int
	// Duration is how long the clients send; positive.
	Duration time.Duration
	// Capacity is the data area of every ring, each way, in bytes: a
	// power of two in [ring.MinCapacity, ring.MaxCapacity].
	Capacity int
	// SpinTime is the ring.Options.SpinTime of every endpoint, the
	// server's and the clients': zero means ring.DefaultSpinTime;
	// negative, never spin.
	SpinTime time.Duration
}

// HubResult is the hub's report; its JSON form is what "shmlane bench
// -mode hub -json" prints.
type HubResult struct {
	Conns    int           `json:"conns"`
	Clients  int           `json:"clients"`
	Capacity int           `json:"capacity"`
	SpinTime time.Duration `json:"spin_ns"`
	// ThreadsIdle and ThreadsMax are the OS threads of the server
	// process ("Threads:" in /proc/PID/status): once every connection's
	// goroutine had slept in Recv and HubSettle more had passed, before
	// the clients started; and the most seen while they sent, read every
	// HubSample.
	ThreadsIdle int `json:"threads_idle"`
	ThreadsMax  int `json:"threads_max"`
	// Messages are the requests echoed; Seconds the longest client's
	// time sending them.
	Messages   uint64  `json:"messages"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	// WakeP50, WakeP99 and WakeP999 are percentiles, and WakeMax the
	// longest, of the wake-to-receive latency in nanoseconds: from the
	// client's CLOCK_MONOTONIC stamp, taken just before its Send, to
	// the server goroutine's return from Recv, read on the same clock.
	WakeP50  int64 `json:"wake_p50_ns"`
	WakeP99  int64 `json:"wake_p99_ns"`
	WakeP999 int64 `json:"wake_p999_ns"`
	WakeMax  int64 `json:"wake_max_ns"`
}

// The hub's constants.
const (
	// HubMaxGap bounds the idle gap a client leaves before each request:
	// a uniform draw from [0, HubMaxGap), slept with time.Sleep (which
	// sleeps at least that long).
	HubMaxGap = time.Millisecond
	// HubSettle is how long the server's threads are left to settle
	// once every connection slept, before they are counted.
	HubSettle = 100 * time.Millisecond
	// HubSample is the interval of the thread count while clients send.
	HubSample = 10 * time.Millisecond

	// HubMessageSize is the size of a request and of its echo: the
	// client's CLOCK_MONOTONIC stamp (8 bytes), the connection's number
	// (4) and the request's sequence number on that connection (4).
	HubMessageSize = 16

	maxHubConns   = 100000
	maxHubClients = 64
)

// DefaultHubConfig returns the defaults of "shmlane bench -mode hub":
// 1000 connections over 2 clients, one second, rings of 4 KiB each way,
// the ring's default spin.
func DefaultHubConfig() *HubConfig {
	return &HubConfig{Conns: 1000, Clients: 2, Duration: time.Second, Capacity: ring.MinCapacity}
}

// Prepare checks that every field of cfg is in range.
func (cfg *HubConfig) Prepare() error {
	switch {
	case cfg.Conns < 1 || cfg.Conns > maxHubConns:
		return fmt.Errorf("-conns must be in [1, %d]: conns=%d", maxHubConns, cfg.Conns)
	case cfg.Clients < 1 || cfg.Clients > maxHubClients || cfg.Clients > cfg.Conns:
		return fmt.Errorf("the hub's clients must be in [1, %d] and at most -conns: clients=%d conns=%d", maxHubClients, cfg.Clients, cfg.Conns)
	case cfg.Duration <= 0:
		return fmt.Errorf("-duration must be positive: duration=%v", cfg.Duration)
	}
	return checkCapacity(cfg.Capacity)
}

// descriptors is how many descriptors the hub needs in this process at
// most: two a connection for the server, held until it starts, two a
// connection of the largest client's share while that starts, and room
// for the rest (standard files, the peers' pipes). The server needs
// fewer: two a connection and its own few.
func (cfg *HubConfig) descriptors() int {
	share := (cfg.Conns + cfg.Clients - 1) / cfg.Clients
	return 2*cfg.Conns + 2*share + 64
}

// RunHub prepares cfg (see Prepare) and runs the hub: the server and
// the clients in child processes that re-execute this program (which
// must call RunPeerIfChild first thing). Cancelling ctx kills them; RunHub
// then returns ctx's cause. It fails if this process may not open the
// descriptors the connections need, if a side fails, or if the server
// did not echo every request the clients sent.
func RunHub(ctx context.Context, cfg *HubConfig) (*HubResult, error) {
	if err := cfg.Prepare(); err != nil {
		return nil, err
	}
	if limit, ok := openFileLimit(); ok && cfg.descriptors() > limit {
		return nil, fmt.Errorf("-conns %d needs about %d open files in this process (a descriptor of each connection's two rings held for the server, and another for the client that has it while that one starts), over its limit of %d: raise the limit (ulimit -n) or lower -conns", cfg.Conns, cfg.descriptors(), limit)
	}
	stop := context.AfterFunc(ctx, func() { killPeers("interrupted") })
	defer stop()
	h := &hub{cfg: cfg, c: &caseSpec{mode: "hub", duration: cfg.Duration}}
	defer h.close()
	res, err := h.run()
	if err == nil {
		err = h.close()
	}
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// hub is a hub run from this process's side.
type hub struct {
	cfg     *HubConfig
	c       *caseSpec // the bound on each peer's life (see caseSpec.limit)
	clients []*peer
	server  *peer
	start   []*os.File // the start pipes' write ends, one a client
	// done is set when the run succeeded: the peers then exit by
	// themselves.
	done, closed bool
	err          error // close's
}

// run sets the hub up, counts the server's threads once its connections
// are idle, starts the clients, and collects the reports.
func (h *hub) run() (*HubResult, error) {
	if err := h.setup(); err != nil {
		return nil, err
	}
	time.Sleep(HubSettle)
	pid := h.server.pid()
	idle, err := processThreads(pid)
	if err != nil {
		return nil, err
	}
	most := sync.OnceValue(sampleThreads(pid, idle))
	defer most()
	closeFiles(h.start)
	h.start = nil

	res := &HubResult{Conns: h.cfg.Conns, Clients: h.cfg.Clients, Capacity: h.cfg.Capacity, SpinTime: h.cfg.SpinTime, ThreadsIdle: idle}
	var sent uint64
	for _, p := range h.clients {
		rep, err := p.awaitReport()
		if err != nil {
			return nil, h.clientFailed(err)
		}
		sent += rep.Received
		res.Seconds = max(res.Seconds, rep.Seconds)
	}
	res.ThreadsMax = most()
	rep, err := h.server.awaitReport()
	if err != nil {
		return nil, err
	}
	if rep.Received != sent {
		return nil, fmt.Errorf("the server echoed %d requests, the clients sent %d", rep.Received, sent)
	}
	if rep.Wake == nil || res.Seconds <= 0 {
		return nil, fmt.Errorf("no request in %.3fs: the clients sent %d", res.Seconds, sent)
	}
	h.done = true
	res.Messages, res.MsgsPerSec = sent, float64(sent)/res.Seconds
	res.WakeP50, res.WakeP99, res.WakeP999, res.WakeMax = rep.Wake.P50, rep.Wake.P99, rep.Wake.P999, rep.Wake.Max
	return res, nil
}

// setup creates the segments and starts the clients, each waiting on its
// start pipe, then the server, and waits until all are ready.
//
// The server's descriptors are made first, in one run, so that their
// numbers ascend with their places in its list: exec.Cmd, which moves
// each onto its place in the child, then moves none of them out of the
// way first (one that sits below its place must be, and thousands of
// those would pass the limit of open files in the child). The clients'
// come from the server's, and are closed once their client has them.
func (h *hub) setup() error {
	cfg := h.cfg
	serverFiles := make([]*os.File, 0, 2*cfg.Conns)
	defer func() { closeFiles(serverFiles) }()
	for i := range 2 * cfg.Conns {
		f, err := hubSegment(cfg.Capacity)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i/2, err)
		}
		serverFiles = append(serverFiles, f)
	}
	for k := range cfg.Clients {
		first, last := k*cfg.Conns/cfg.Clients, (k+1)*cfg.Conns/cfg.Clients
		startR, startW, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("start pipe: %w", err)
		}
		h.start = append(h.start, startW)
		files := []*os.File{startR}
		for i, f := range serverFiles[2*first : 2*last] {
			c, err := segmentFile(f)
			if err != nil {
				closeFiles(files)
				return fmt.Errorf("connection %d: %w", first+i/2, err)
			}
			files = append(files, c)
		}
		spec := peerSpec{Role: roleHubClient, Size: HubMessageSize, Index: first, Duration: cfg.Duration, Spin: cfg.SpinTime}
		p, err := startPeer(spec, h.c, files, nil, nil)
		if err != nil {
			return err
		}
		h.clients = append(h.clients, p)
		if err := p.awaitReady(); err != nil {
			return err
		}
	}
	files := serverFiles
	serverFiles = nil
	p, err := startPeer(peerSpec{Role: roleHubServer, Size: HubMessageSize, Spin: cfg.SpinTime}, h.c, files, nil, nil)
	if err != nil {
		return err
	}
	h.server = p
	return p.awaitReady()
}

// hubSegment creates a segment with a ring of capacity bytes and returns
// a descriptor of it; it does not keep the segment mapped.
func hubSegment(capacity int) (*os.File, error) {
	seg, err := ring.Create(&ring.Config{Capacity: capacity, Name: "shmlane-hub"})
	if err != nil {
		return nil, err
	}
	defer seg.Close()
	return seg.File()
}

// segmentFile returns another descriptor of the segment f holds, which
// it checks on the way (ring.Open); f stays open.
func segmentFile(f *os.File) (*os.File, error) {
	seg, err := ring.Open(f)
	if err != nil {
		return nil, err
	}
	defer seg.Close()
	return seg.File()
}

// clientFailed returns err, a client's failure, after the server's error
// if the server reports one within a second: a server that fails closes
// every connection, which fails the clients, so its error is the cause.
func (h *hub) clientFailed(err error) error {
	serverErr := make(chan error, 1)
	go func() {
		_, err := h.server.awaitReport()
		serverErr <- err
	}()
	select {
	case cause := <-serverErr:
		if cause != nil {
			return fmt.Errorf("%w (then %w)", cause, err)
		}
	case <-time.After(time.Second):
	}
	return err
}

// close closes the start pipes, which ends a client still waiting on
// one, and stops every peer (see stopPeers). close is idempotent.
func (h *hub) close() error {
	if h.closed {
		return h.err
	}
	h.closed = true
	closeFiles(h.start)
	peers := h.clients
	if h.server != nil {
		peers = append(peers, h.server)
	}
	h.err = stopPeers(h.done, peers...)
	return h.err
}

// sampleThreads reads the thread count of process pid every HubSample
// until the function it returns is called, which returns the highest
// count seen, and at least from. A failed read is skipped: the process
// may be exiting.
func sampleThreads(pid, from int) func() int {
	done, most := make(chan struct{}), make(chan int)
	go func() {
		tick := time.NewTicker(HubSample)
		defer tick.Stop()
		n := from
		for {
			if k, err := processThreads(pid); err == nil {
				n = max(n, k)
			}
			select {
			case <-done:
				most <- n
				return
			case <-tick.C:
			}
		}
	}()
	return func() int {
		close(done)
		return <-most
	}
}

// processThreads reads how many threads process pid has ("Threads:" in
// /proc/PID/status).
func processThreads(pid int) (int, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/status"
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("count the threads of pid %d: %w", pid, err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return 0, fmt.Errorf("%s: Threads: %q: %w", path, strings.TrimSpace(v), err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s has no Threads: line", path)
}

// openFileLimit reads this process's soft limit of open files ("Max open
// files" in /proc/self/limits); false where it cannot, or where there is
// none.
func openFileLimit() (int, bool) {
	b, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				n, err := strconv.Atoi(f[0])
				return n, err == nil
			}
		}
	}
	return 0, false
}

// nanotime is the runtime's reading of CLOCK_MONOTONIC (the vDSO's
// clock_gettime on Linux): the same clock in every process of the host,
// unlike the monotonic reading of a time.Time, which counts from the
// start of its process.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// putHubMsg writes request seq of connection conn into msg, stamping the
// time last.
func putHubMsg(msg []byte, conn int, seq uint32) {
	binary.LittleEndian.PutUint32(msg[8:], uint32(conn))
	binary.LittleEndian.PutUint32(msg[12:], seq)
	binary.LittleEndian.PutUint64(msg, uint64(nanotime()))
}

// checkHubMsg checks that msg is request seq of connection conn, and
// returns its stamp.
func checkHubMsg(msg []byte, conn int, seq uint32) (int64, error) {
	if len(msg) != HubMessageSize {
		return 0, fmt.Errorf("connection %d: request %d of %d bytes, want %d", conn, seq, len(msg), HubMessageSize)
	}
	gotConn, gotSeq := binary.LittleEndian.Uint32(msg[8:]), binary.LittleEndian.Uint32(msg[12:])
	if gotConn != uint32(conn) || gotSeq != seq {
		return 0, fmt.Errorf("connection %d: got request %d of connection %d, want request %d", conn, gotSeq, gotConn, seq)
	}
	return int64(binary.LittleEndian.Uint64(msg)), nil
}

// openHubConns maps the segments of the connections in files, a request
// and a response segment each, and attaches one side of each connection:
// the server's (the consumer of the request ring and the producer of the
// response ring) or a client's (the other two). It closes every file;
// connection numbers in errors count from spec.Index.
func openHubConns(files []*os.File, server bool, spec *peerSpec) ([]*end, error) {
	if len(files) == 0 || len(files)%2 != 0 {
		closeFiles(files)
		return nil, fmt.Errorf("got %d segment descriptors, want two (request, response) a connection", len(files))
	}
	ends := make([]*end, 0, len(files)/2)
	for i := 0; i < len(files); i += 2 {
		// ringLink's dial consumes the first segment and produces into
		// the second.
		pair := []*os.File{files[i], files[i+1]}
		if !server {
			pair[0], pair[1] = pair[1], pair[0]
		}
		e, err := ringLink{}.dial(context.Background(), spec, pair)
		if err != nil {
			closeFiles(files[i+2:])
			closeEnds(ends)
			return nil, fmt.Errorf("connection %d: %w", spec.Index+i/2, err)
		}
		ends = append(ends, e)
	}
	return ends, nil
}

// closeEnds closes every end of es.
func closeEnds(es []*end) {
	for _, e := range es {
		e.close()
	}
}

// hubServer is the server process's state: a goroutine a connection,
// each blocked in Recv on its request ring.
type hubServer struct {
	conns    []*end
	reqs     []*ring.Consumer // each connection's request consumer, for its counters
	lat      syncLatencies
	received atomic.Uint64
	wg       sync.WaitGroup
	failOnce sync.Once
	err      error // the first failure, set once
}

// hubServerRole is the server: it attaches every connection, starts
// their goroutines, reports ready once every one of them has slept in
// Recv, and reports, once the clients have closed every connection, how
// many requests it echoed and their wake-to-receive latencies.
func hubServerRole(ps *peerSide) (peerReport, error) {
	conns, err := openHubConns(ps.files, true, &ps.spec)
	if err != nil {
		return peerReport{}, err
	}
	s := &hubServer{conns: conns, lat: syncLatencies{l: newLatencies()}}
	defer closeEnds(conns)
	for i, e := range conns {
		c, ok := e.r.(*ring.Consumer)
		if !ok {
			return peerReport{}, fmt.Errorf("connection %d receives on %T, want the SPSC ring's consumer", i, e.r)
		}
		s.reqs = append(s.reqs, c)
	}
	// Until sleeping Recvs stop holding threads, each idle connection
	// holds one: let them pass the runtime's default limit of 10,000
	// rather than stop the process.
	debug.SetMaxThreads(len(conns) + 10000)
	for i := range conns {
		s.wg.Add(1)
		go s.serve(i)
	}
	if err := s.awaitAsleep(10*time.Second + max(ps.spec.Spin, 0)); err != nil {
		s.fail(err)
	} else if err := ps.ready(); err != nil {
		s.fail(err)
	}
	s.wg.Wait()
	return peerReport{Received: s.received.Load(), Wake: s.lat.l.summary()}, s.err
}

// serve echoes the requests of connection i until its client closes it,
// recording each request's wake-to-receive latency.
func (s *hubServer) serve(i int) {
	defer s.wg.Done()
	e := s.conns[i]
	buf := make([]byte, HubMessageSize)
	for seq := uint32(0); ; seq++ {
		n, err := e.r.Recv(buf)
		now := nanotime()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			s.fail(fmt.Errorf("connection %d: receive request %d: %w", i, seq, err))
			return
		}
		stamp, err := checkHubMsg(buf[:n], i, seq)
		if err != nil {
			s.fail(err)
			return
		}
		s.lat.record(time.Duration(now - stamp))
		if err := e.s.Send(buf[:n]); err != nil {
			s.fail(fmt.Errorf("connection %d: send reply %d: %w", i, seq, err))
			return
		}
		s.received.Add(1)
	}
}

// fail records err if it is the first failure, and closes every
// connection: their goroutines return, and the clients fail at once
// instead of waiting for replies.
func (s *hubServer) fail(err error) {
	s.failOnce.Do(func() {
		s.err = err
		closeEnds(s.conns)
	})
}

// awaitAsleep waits until every connection's goroutine has gone to sleep
// in Recv at least once (its request ring's ConsumerSleeps), for at most
// limit.
func (s *hubServer) awaitAsleep(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		awake := 0
		for _, c := range s.reqs {
			if c.Stats().ConsumerSleeps == 0 {
				awake++
			}
		}
		if awake == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d connections had not slept in Recv %v after they started", awake, len(s.reqs), limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hubClientRole is a client: it attaches its connections, waits for the
// start, then for the duration leaves a random gap (see HubMaxGap),
// sends one request on a connection picked at random, and checks its
// echo. It reports the requests sent and the time it took.
func hubClientRole(ps *peerSide) (peerReport, error) {
	if len(ps.files) < 3 {
		closeFiles(ps.files)
		return peerReport{}, fmt.Errorf("got %d descriptors, want the start pipe and two segments a connection", len(ps.files))
	}
	start := ps.files[0]
	defer start.Close()
	conns, err := openHubConns(ps.files[1:], false, &ps.spec)
	if err != nil {
		return peerReport{}, err
	}
	defer closeEnds(conns)
	if err := ps.ready(); err != nil {
		return peerReport{}, err
	}
	if _, err := io.Copy(io.Discard, start); err != nil {
		return peerReport{}, fmt.Errorf("wait for the start: %w", err)
	}
	msg, echo := make([]byte, HubMessageSize), make([]byte, HubMessageSize)
	seqs := make([]uint32, len(conns))
	var rep peerReport
	begin := time.Now()
	for end := begin.Add(ps.spec.Duration); time.Now().Before(end); {
		time.Sleep(rand.N(HubMaxGap))
		i := rand.IntN(len(conns))
		conn := ps.spec.Index + i
		putHubMsg(msg, conn, seqs[i])
		if err := conns[i].s.Send(msg); err != nil {
			return rep, fmt.Errorf("connection %d: send request %d: %w", conn, seqs[i], err)
		}
		n, err := conns[i].r.Recv(echo)
		if err != nil {
			return rep, fmt.Errorf("connection %d: receive reply %d: %w", conn, seqs[i], err)
		}
		if !bytes.Equal(echo[:n], msg) {
			return rep, fmt.Errorf("connection %d: reply %d is %x, want the request, %x", conn, seqs[i], echo[:n], msg)
		}
		seqs[i]++
		rep.Received++
	}
	rep.Seconds = time.Since(begin).Seconds()
	return rep, nil
}

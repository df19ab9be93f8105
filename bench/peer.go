package bench

// Peer processes. A case runs its second side in a copy of the running
// program, started with SHMLANE_BENCH_PEER holding a peerSpec in JSON.
// The copy calls RunPeerIfChild first thing, which finds the variable and
// runs the role instead of the program. Its descriptors:
//
//	3  report pipe (written): "ready\n" once attached, then one JSON
//	   peerReport line when its side's work is done (an mpmc producer
//	   then waits for a signal before it closes)
//	4  lifeline pipe (read): end of file means this program died; the peer
//	   exits at once instead of waiting forever on a ring nobody feeds
//	5… the transport: ring segments (memfds), pipe ends or control pipes,
//	   in the order the role expects
//
// This program keeps every peer in a set, kills peers on interrupt, on a
// case's time limit and when a case fails, and always waits for them.
//
// An in-process peer runs the same role in a goroutine of this program,
// with the same report pipe: a channel cannot cross processes, and go
// test's in-process benchmarks measure a transport without the process
// boundary.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

const peerEnv = "SHMLANE_BENCH_PEER"

// Descriptors of a peer process.
const (
	peerReportFd   = 3
	peerLifelineFd = 4
	peerFirstFd    = 5
)

// peerSpec tells a peer what to run.
type peerSpec struct {
	Role string `json:"role"`
	// Transport names the transport whose link the role dials (stream,
	// echo and out-of-band roles).
	Transport string `json:"transport,omitempty"`
	Size      int    `json:"size"`
	Files     int    `json:"files"` // descriptors from 5 on
	// Addr is what the link's dial opens: a name, a socket path, an
	// address or a FIFO path.
	Addr string `json:"addr,omitempty"`
	// Batch is, for a consumer, nonzero when it takes what is there with
	// RecvBatch; for an mpmc producer, the messages per SendBatch.
	Batch int `json:"batch,omitempty"`
	// Duration drives an mpmc producer or a hub client: it sends for
	// Duration. Index is the mpmc producer's number, in [0, Producers),
	// or the number of a hub client's first connection.
	Duration  time.Duration `json:"duration,omitempty"`
	Index     int           `json:"index,omitempty"`
	Producers int           `json:"producers,omitempty"`
	// Spin is the SpinTime of the peer's ring endpoints (see
	// caseSpec.spin).
	Spin time.Duration `json:"spin,omitempty"`
}

// encodePeerSpec returns spec as the value of SHMLANE_BENCH_PEER.
func encodePeerSpec(spec peerSpec) (string, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return "", fmt.Errorf("encode the peer's spec: %w", err)
	}
	return string(b), nil
}

// decodePeerSpec parses the value of SHMLANE_BENCH_PEER.
func decodePeerSpec(v string) (peerSpec, error) {
	var spec peerSpec
	if err := json.Unmarshal([]byte(v), &spec); err != nil {
		return peerSpec{}, fmt.Errorf("%s: %w", peerEnv, err)
	}
	return spec, nil
}

// peerReport is what a peer reports when its side is done.
type peerReport struct {
	Error string `json:"error,omitempty"`
	// Received counts the messages the peer received: for stream, all of
	// them; for pingpong, the requests it echoed; for an mpmc producer,
	// those it sent.
	Received uint64 `json:"received"`
	// Timed and Seconds are the stream consumer's window: messages after
	// the first, and the time from the first arrival to the end of the
	// stream.
	Timed   uint64  `json:"timed,omitempty"`
	Seconds float64 `json:"seconds,omitempty"`
	// First and Last are the wall-clock times (Unix nanoseconds) of an
	// mpmc consumer's first message and of the end of the batch that held
	// its last, to combine the spans of several consumers.
	First int64 `json:"first,omitempty"`
	Last  int64 `json:"last,omitempty"`
	// Samples are the out-of-band latencies the consumer measured (ns);
	// DataRate its rate on data messages while the lane was full.
	Samples  []int64 `json:"samples,omitempty"`
	DataRate float64 `json:"data_rate,omitempty"`
	// Wake is the hub server's wake-to-receive latencies.
	Wake *latencySummary `json:"wake,omitempty"`
	// Counts and Sums are an mpmc consumer's, per producer: how many of
	// its messages arrived here and the sum of their sequence numbers
	// (modulo 2^64).
	Counts []uint64 `json:"counts,omitempty"`
	Sums   []uint64 `json:"sums,omitempty"`

	// then, if set, runs after the report is written; an error from it
	// fails the peer (exit status 1).
	then func() error
}

// RunPeerIfChild runs this process as a benchmark peer and exits, if the
// benchmark started it as one (SHMLANE_BENCH_PEER is set); otherwise it
// returns at once. Every program that runs benchmarks calls it first
// thing in main or TestMain: the peers are copies of the program itself.
func RunPeerIfChild() {
	v, ok := os.LookupEnv(peerEnv)
	if !ok {
		return
	}
	os.Exit(runPeerProcess(v))
}

// runPeerProcess is a peer process's main: it runs the role that the
// JSON spec v names on its inherited descriptors and returns the exit
// status.
func runPeerProcess(v string) int {
	spec, err := decodePeerSpec(v)
	if err != nil {
		return peerFailed(err)
	}
	report := os.NewFile(peerReportFd, "report")
	lifeline := os.NewFile(peerLifelineFd, "lifeline")
	files := make([]*os.File, max(spec.Files, 0))
	for i := range files {
		files[i] = os.NewFile(uintptr(peerFirstFd+i), fmt.Sprintf("fd%d", peerFirstFd+i))
	}
	for _, f := range append([]*os.File{report, lifeline}, files...) {
		if _, err := f.Stat(); err != nil {
			return peerFailed(fmt.Errorf("descriptor from the benchmark: %w", err))
		}
	}
	go func() {
		io.Copy(io.Discard, lifeline)
		os.Exit(3) // the benchmark is gone
	}()
	return runRole(spec, files, nil, report)
}

// peerFailed prints err on stderr and returns the exit status of a peer
// that failed.
func peerFailed(err error) int {
	fmt.Fprintf(os.Stderr, "shmlane bench peer: %v\n", err)
	return 1
}

// runRole runs the role spec names, on files or, in process, on the given
// end, writing the ready line and the report to report, and returns the
// exit status: 0 when the role succeeded.
func runRole(spec peerSpec, files []*os.File, given *end, report io.Writer) int {
	refuse := func(err error) int {
		closeFiles(files)
		if given != nil {
			given.close()
		}
		return peerFailed(err)
	}
	role, ok := roles[spec.Role]
	if !ok {
		return refuse(fmt.Errorf("unknown role %q", spec.Role))
	}
	if spec.Size < 1 {
		return refuse(fmt.Errorf("message size %d, want at least 1", spec.Size))
	}
	ready := func() error {
		_, err := io.WriteString(report, "ready\n")
		return err
	}
	rep, err := role(&peerSide{spec: spec, files: files, given: given, ready: ready})
	if err != nil {
		rep.Error = err.Error()
	}
	line, err := json.Marshal(rep)
	if err != nil {
		return peerFailed(fmt.Errorf("encode report: %w", err))
	}
	if _, err := report.Write(append(line, '\n')); err != nil {
		return peerFailed(fmt.Errorf("write report: %w", err))
	}
	if rep.Error != "" {
		return 1
	}
	if rep.then != nil {
		if err := rep.then(); err != nil {
			return peerFailed(err)
		}
	}
	return 0
}

// peerSide is what a role starts from.
type peerSide struct {
	spec  peerSpec
	files []*os.File
	// given is the peer's end, made by this process's side, for an
	// in-process transport; nil where the role dials it.
	given *end
	ready func() error
}

// attach returns the peer's end of the link: the given one, or the one
// its transport's dial opens from the files and the address, within 20
// seconds.
func (ps *peerSide) attach() (*end, error) {
	if ps.given != nil {
		return ps.given, nil
	}
	t := Lookup(ps.spec.Transport)
	if t == nil {
		closeFiles(ps.files)
		return nil, fmt.Errorf("unknown transport %q", ps.spec.Transport)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return t.link.dial(ctx, &ps.spec, ps.files)
}

// peer is a running peer, seen from this program.
type peer struct {
	role     string
	cmd      *exec.Cmd // nil for an in-process peer
	report   *bufio.Reader
	rfile    *os.File // report pipe, read end
	lifeline *os.File // lifeline pipe, write end; nil in process
	watchdog *time.Timer
	exited   chan struct{} // closed once the peer was waited for
	waitErr  error         // the peer's exit, valid after exited

	mu         sync.Mutex
	killReason string
	stopped    bool
}

// livePeers are the peers started and not yet stopped.
var livePeers struct {
	sync.Mutex
	set map[*peer]struct{}
}

// killPeers kills every running peer, giving reason as the cause.
func killPeers(reason string) {
	livePeers.Lock()
	defer livePeers.Unlock()
	for p := range livePeers.set {
		p.kill(reason)
	}
}

// startPeer starts the peer of case c running spec, with files as its
// descriptors 5 and up, in a peer process; or in a goroutine of this
// process with given as its end if given is set or c runs in process. It
// takes ownership of files and given: files are closed here once the
// child has them, given on failure. onExit, if set, runs as soon as a
// peer process exits, whatever the reason: it closes this side's end, so
// that a wait on a ring whose peer died ends with an error instead of
// lasting forever. The process is killed if it still runs after
// c.limit().
func startPeer(spec peerSpec, c *caseSpec, files []*os.File, given *end, onExit func()) (*peer, error) {
	defer func() { closeFiles(files) }()
	spec.Files = len(files)
	p := &peer{role: spec.Role, exited: make(chan struct{})}
	if spec.Transport != "" {
		p.role = spec.Transport + "-" + spec.Role
	}
	rr, rw, err := os.Pipe()
	if err != nil {
		if given != nil {
			given.close()
		}
		return nil, fmt.Errorf("report pipe: %w", err)
	}
	p.report, p.rfile = bufio.NewReader(rr), rr
	if given != nil || c.inProcess {
		owned := files
		files = nil
		go func() {
			if code := runRole(spec, owned, given, rw); code != 0 {
				p.waitErr = fmt.Errorf("exit status %d", code)
			}
			rw.Close()
			close(p.exited)
		}()
		addLivePeer(p)
		return p, nil
	}
	defer rw.Close()
	exe, err := os.Executable()
	if err != nil {
		rr.Close()
		return nil, fmt.Errorf("find this program to start the peer: %w", err)
	}
	envSpec, err := encodePeerSpec(spec)
	if err != nil {
		rr.Close()
		return nil, err
	}
	lr, lw, err := os.Pipe()
	if err != nil {
		rr.Close()
		return nil, fmt.Errorf("lifeline pipe: %w", err)
	}
	defer lr.Close()
	p.lifeline = lw
	p.cmd = exec.Command(exe)
	p.cmd.Env = append(os.Environ(), peerEnv+"="+envSpec)
	p.cmd.Stderr = os.Stderr
	p.cmd.ExtraFiles = append([]*os.File{rw, lr}, files...)
	// Started under the set's lock: an interrupt either comes before the
	// start and stops the run, or finds the peer in the set.
	livePeers.Lock()
	defer livePeers.Unlock()
	if err := p.cmd.Start(); err != nil {
		rr.Close()
		lw.Close()
		return nil, fmt.Errorf("start %s peer: %w", p.role, err)
	}
	addLivePeerLocked(p)
	limit := c.limit()
	p.watchdog = time.AfterFunc(limit, func() { p.kill(fmt.Sprintf("still running after %v", limit)) })
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
		if onExit != nil {
			onExit()
		}
	}()
	return p, nil
}

// addLivePeer adds p to the set of live peers.
func addLivePeer(p *peer) {
	livePeers.Lock()
	defer livePeers.Unlock()
	addLivePeerLocked(p)
}

// addLivePeerLocked adds p to the set of live peers, whose lock the
// caller holds.
func addLivePeerLocked(p *peer) {
	if livePeers.set == nil {
		livePeers.set = map[*peer]struct{}{}
	}
	livePeers.set[p] = struct{}{}
}

// pid is the peer's process: this one for an in-process peer.
func (p *peer) pid() int {
	if p.cmd == nil {
		return os.Getpid()
	}
	return p.cmd.Process.Pid
}

// kill kills the peer process if it still runs, recording why. An
// in-process peer cannot be killed: kill only records the reason, and the
// peer ends when this side closes its end, which it does on every path.
func (p *peer) kill(reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.exited:
		return
	default:
	}
	if p.killReason == "" {
		p.killReason = reason
	}
	if p.cmd != nil {
		p.cmd.Process.Kill()
	}
}

// explain adds to err, an error of this side's work, what became of the
// peer, when that is the likely cause.
func (p *peer) explain(err error) error {
	p.mu.Lock()
	reason := p.killReason
	p.mu.Unlock()
	if reason != "" {
		return fmt.Errorf("%w (%s peer killed: %s)", err, p.role, reason)
	}
	select {
	case <-p.exited:
		if p.waitErr != nil {
			return fmt.Errorf("%w (%s peer: %v)", err, p.role, p.waitErr)
		}
		return fmt.Errorf("%w (%s peer exited)", err, p.role)
	case <-time.After(100 * time.Millisecond):
		return err
	}
}

// awaitReady waits for the peer's ready line.
func (p *peer) awaitReady() error {
	line, err := p.report.ReadString('\n')
	if err != nil {
		<-p.exited
		return p.explain(fmt.Errorf("%s peer did not get ready: %w", p.role, err))
	}
	if line != "ready\n" {
		if rep, err := parseReport(line); err == nil && rep.Error != "" {
			return fmt.Errorf("%s peer: %s", p.role, rep.Error)
		}
		return fmt.Errorf("%s peer: got %q, want a ready line", p.role, line)
	}
	return nil
}

// awaitReport waits for the peer's report; the peer's error is returned as
// this side's error.
func (p *peer) awaitReport() (peerReport, error) {
	line, err := p.report.ReadString('\n')
	if err != nil {
		<-p.exited
		return peerReport{}, p.explain(fmt.Errorf("read %s peer's report: %w", p.role, err))
	}
	rep, err := parseReport(line)
	if err != nil {
		return peerReport{}, fmt.Errorf("%s peer's report %q: %w", p.role, line, err)
	}
	if rep.Error != "" {
		return rep, fmt.Errorf("%s peer: %s", p.role, rep.Error)
	}
	return rep, nil
}

// parseReport decodes a report line.
func parseReport(line string) (peerReport, error) {
	var rep peerReport
	err := json.Unmarshal([]byte(line), &rep)
	return rep, err
}

// stop ends the peer: it waits up to grace for the exit that the end of a
// case brings (the peer saw the end of the stream and reported), then kills
// the process, and always waits for it. It returns an error if the peer
// failed or had to be killed. stop is idempotent; later calls return nil.
func (p *peer) stop(grace time.Duration) error {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return nil
	}
	p.stopped = true
	p.mu.Unlock()
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.kill("did not exit at the end of the case")
	}
	<-p.exited
	if p.watchdog != nil {
		p.watchdog.Stop()
	}
	livePeers.Lock()
	delete(livePeers.set, p)
	livePeers.Unlock()
	if p.lifeline != nil {
		p.lifeline.Close()
	}
	p.rfile.Close()
	p.mu.Lock()
	reason := p.killReason
	p.mu.Unlock()
	if reason != "" {
		return fmt.Errorf("%s peer killed: %s", p.role, reason)
	}
	if p.waitErr != nil {
		return fmt.Errorf("%s peer: %w", p.role, p.waitErr)
	}
	return nil
}

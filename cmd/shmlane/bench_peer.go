package main

// Peer processes. A cross-process case runs its second side in a copy of
// this program, started with SHMLANE_BENCH_PEER holding a peerSpec in JSON.
// The copy finds the variable in a startup hook and runs the role instead
// of the command line. Its descriptors:
//
//	3  report pipe (written): "ready\n" once attached, then one JSON
//	   peerReport line when its side's work is done (an mpmc producer
//	   then waits for a signal before it closes)
//	4  lifeline pipe (read): end of file means this program died; the peer
//	   exits at once instead of waiting forever on a ring nobody feeds
//	5… the transport: ring segments (memfds) or pipe ends, in the order the
//	   role expects
//
// This program keeps every peer in a set, kills peers on interrupt, on a
// case's time limit and when a case fails, and always waits for them.

import (
	"bufio"
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

// peerSpec tells a peer process what to run.
type peerSpec struct {
	Role  string `json:"role"`
	Size  int    `json:"size"`
	Files int    `json:"files"` // descriptors from 5 on
	// Duration and Batch drive a producing peer (mpmc): it sends for
	// Duration, Batch messages per SendBatch. Index is the producer's
	// number, in [0, Producers).
	Duration  time.Duration `json:"duration,omitempty"`
	Batch     int           `json:"batch,omitempty"`
	Index     int           `json:"index,omitempty"`
	Producers int           `json:"producers,omitempty"`
	// Kind and Addr tell a message-transport peer (conn, unix, tcp, fifo)
	// what to open: a name, a socket path, an address or a FIFO path.
	Kind string `json:"kind,omitempty"`
	Addr string `json:"addr,omitempty"`
}

// peerReport is what a peer process reports when its side is done.
type peerReport struct {
	Error string `json:"error,omitempty"`
	// Received counts the messages the peer received: for stream, all of
	// them; for pingpong, the requests it echoed.
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
	Samples  []uint32 `json:"samples,omitempty"`
	DataRate float64  `json:"data_rate,omitempty"`
	// Counts and Sums are an mpmc consumer's, per producer: how many of
	// its messages arrived here and the sum of their sequence numbers
	// (modulo 2^64).
	Counts []uint64 `json:"counts,omitempty"`
	Sums   []uint64 `json:"sums,omitempty"`

	// then, if set, runs after the report is written; an error from it
	// fails the peer (exit status 1).
	then func() error
}

// peerRoles are the programs a peer process runs, by role name. A role
// attaches to its files, calls ready, does its work and returns its report.
var peerRoles = map[string]func(spec peerSpec, files []*os.File, ready func() error) (peerReport, error){
	"ring-stream": ringStreamPeer,
	"ring-echo":   ringEchoPeer,
	"pipe-stream": pipeStreamPeer,
	"pipe-echo":   pipeEchoPeer,
	"mpmc-send":   mpmcSendPeer,
	"mpmc-recv":   mpmcRecvPeer,
	"mpmc-echo":   mpmcEchoPeer,
	"msg-stream":  msgStreamPeer,
	"ring-oob":    ringOOBPeer,
	"msg-echo":    msgEchoPeer,
}

// benchPeerHook runs this process as a peer and exits if SHMLANE_BENCH_PEER
// is set.
func benchPeerHook() {
	v, ok := os.LookupEnv(peerEnv)
	if !ok {
		return
	}
	os.Exit(runPeer(v))
}

func runPeer(v string) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "shmlane bench peer: %v\n", err)
		return 1
	}
	var spec peerSpec
	if err := json.Unmarshal([]byte(v), &spec); err != nil {
		return fail(fmt.Errorf("%s: %w", peerEnv, err))
	}
	role, ok := peerRoles[spec.Role]
	if !ok {
		return fail(fmt.Errorf("unknown role %q", spec.Role))
	}
	if spec.Size < 1 {
		return fail(fmt.Errorf("message size %d, want at least 1", spec.Size))
	}
	report := os.NewFile(peerReportFd, "report")
	lifeline := os.NewFile(peerLifelineFd, "lifeline")
	files := make([]*os.File, spec.Files)
	for i := range files {
		files[i] = os.NewFile(uintptr(peerFirstFd+i), fmt.Sprintf("fd%d", peerFirstFd+i))
	}
	for _, f := range append([]*os.File{report, lifeline}, files...) {
		if _, err := f.Stat(); err != nil {
			return fail(fmt.Errorf("descriptor from the benchmark: %w", err))
		}
	}
	go func() {
		io.Copy(io.Discard, lifeline)
		os.Exit(3) // the benchmark is gone
	}()
	ready := func() error {
		_, err := io.WriteString(report, "ready\n")
		return err
	}
	rep, err := role(spec, files, ready)
	if err != nil {
		rep.Error = err.Error()
	}
	line, _ := json.Marshal(rep)
	if _, werr := report.Write(append(line, '\n')); werr != nil {
		return fail(fmt.Errorf("write report: %w", werr))
	}
	if rep.Error != "" {
		return 1
	}
	if rep.then != nil {
		if err := rep.then(); err != nil {
			return fail(err)
		}
	}
	return 0
}

// peer is a running peer process, seen from this program.
type peer struct {
	role     string
	cmd      *exec.Cmd
	report   *bufio.Reader
	rfile    *os.File // report pipe, read end
	lifeline *os.File // lifeline pipe, write end
	watchdog *time.Timer
	exited   chan struct{} // closed once the process was waited for
	waitErr  error         // the process's exit, valid after exited
	onExit   []func()

	mu         sync.Mutex
	killReason string
	stopped    bool
}

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

// startPeer starts a peer process running spec with files as its
// descriptors 5 and up. It takes ownership of files: they are closed here
// once the child has them. onExit functions run as soon as the process
// exits, whatever the reason: they close this side's ring endpoints, so
// that a wait on a ring whose peer died ends with an error instead of
// lasting forever. The process is killed if it still runs after limit.
func startPeer(spec peerSpec, limit time.Duration, files []*os.File, onExit ...func()) (*peer, error) {
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this program to start the peer: %w", err)
	}
	spec.Files = len(files)
	envSpec, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	rr, rw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("report pipe: %w", err)
	}
	defer rw.Close()
	lr, lw, err := os.Pipe()
	if err != nil {
		rr.Close()
		return nil, fmt.Errorf("lifeline pipe: %w", err)
	}
	defer lr.Close()

	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), peerEnv+"="+string(envSpec))
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = append([]*os.File{rw, lr}, files...)
	p := &peer{
		role: spec.Role, cmd: cmd, report: bufio.NewReader(rr), rfile: rr, lifeline: lw,
		exited: make(chan struct{}), onExit: onExit,
	}
	livePeers.Lock()
	defer livePeers.Unlock()
	if err := cmd.Start(); err != nil {
		rr.Close()
		lw.Close()
		return nil, fmt.Errorf("start %s peer: %w", spec.Role, err)
	}
	if livePeers.set == nil {
		livePeers.set = map[*peer]struct{}{}
	}
	livePeers.set[p] = struct{}{}
	p.watchdog = time.AfterFunc(limit, func() { p.kill(fmt.Sprintf("still running after %v", limit)) })
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
		for _, f := range p.onExit {
			f()
		}
	}()
	return p, nil
}

func (p *peer) pid() int { return p.cmd.Process.Pid }

// kill kills the process if it still runs, recording why.
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
	p.cmd.Process.Kill()
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

func parseReport(line string) (peerReport, error) {
	var rep peerReport
	err := json.Unmarshal([]byte(line), &rep)
	return rep, err
}

// stop ends the peer: it waits up to grace for the exit that the end of a
// case brings (the peer saw the end of the stream and reported), then kills
// the process, and always waits for it. It returns an error if the process
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
	p.watchdog.Stop()
	livePeers.Lock()
	delete(livePeers.set, p)
	livePeers.Unlock()
	p.lifeline.Close()
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

package main

// shmlane bench: the ring against a pipe and a Go channel, each case run
// with its producer and consumer in separate processes (the channel in one
// process, two goroutines), all in one run so that the ratios between
// transports hold on a noisy machine even when absolute figures drift.

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shmlane/shmlane/ring"
)

func init() {
	startupHooks = append(startupHooks, benchPeerHook)
}

// Modes.
const (
	modeStream   = "stream"
	modePingpong = "pingpong"
	// The out-of-band modes (-mode oob): the time from SendUrgent, or from
	// Flush, to the consumer seeing it, with the data lane full.
	modeUrgent = "urgent"
	modeFlush  = "flush"
)

// A transport is one way of moving messages that bench compares.
type transport struct {
	name string
	// how describes, for the table's footer, how a case moves messages.
	how string
	// check rejects a configuration the transport cannot run.
	check func(cfg *benchConfig) error
	// newCase returns the runner of one case.
	newCase func(c benchCase) caseRunner
	// streamOnly transports skip pingpong cases.
	streamOnly bool
	// oob runs the out-of-band modes; nil skips them.
	oob func(c benchCase) caseRunner
	// batches: the stream producer publishes -batch messages at a time.
	batches bool
	// baseline names the transport whose cost this one is measured
	// against (a fallback against the bare system calls of its mechanism,
	// the connection against the bare ring), and bound the ratio it should
	// stay within (0: 1.3).
	baseline string
	bound    float64
}

// defaultBound is the overhead a transport may add to its baseline.
const defaultBound = 1.3

// overheadPreset names, in -transports, every transport with a baseline
// next to its baseline; with it, -rounds and -duration default to
// overheadRounds and overheadDuration: on a noisy machine many short
// rounds give a steadier median than a few long ones (about 4 minutes in
// all on 2 cores).
const (
	overheadPreset   = "overhead"
	overheadRounds   = 9
	overheadDuration = 300 * time.Millisecond
)

var overheadTransports = []*transport{ringTransport, connTransport, pipeTransport, rawPipeTransport, pipeFallbackTransport,
	rawFIFOTransport, fifoTransport, rawUnixTransport, unixTransport, connFallbackTransport, rawTCPTransport, tcpTransport}

// transports lists every transport bench knows, in the default order.
var transports = []*transport{ringTransport, pipeTransport, chanTransport, ringLaneTransport, mpmcTransport,
	connTransport, connFallbackTransport, pipeFallbackTransport, fifoTransport, unixTransport, tcpTransport,
	rawPipeTransport, rawFIFOTransport, rawUnixTransport, rawTCPTransport}

func lookupTransport(name string) *transport {
	for _, t := range transports {
		if t.name == name {
			return t
		}
	}
	return nil
}

func transportNames() string { return strings.Join(transportNameList(transports), ", ") }

func joinNames(ts []*transport) string { return strings.Join(transportNameList(ts), ",") }

func transportNameList(ts []*transport) []string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.name
	}
	return names
}

// flagSet reports whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// benchConfig is the parsed command line.
type benchConfig struct {
	transports []*transport
	sizes      []int
	modes      []string
	duration   time.Duration
	capacity   int
	producers  int
	consumers  int
	batch      int
	rounds     int
	json       bool
}

// A benchCase is one measurement: one transport, mode and message size.
type benchCase struct {
	transport *transport
	mode      string
	size      int
	duration  time.Duration
	capacity  int // ring bytes; the pipe and the channel buffer as much
	batch     int // ring stream: messages per SendBatch (1: Send each)
	producers int // mpmc: producer processes
	consumers int // mpmc: consumer processes
}

// limit is how long a case may take, setup and teardown included, before
// its peer is killed: a generous bound that only a hang reaches.
func (c benchCase) limit() time.Duration { return 2*c.duration + 30*time.Second }

// sidePIDs are the processes of a case: for pingpong, the producer is the
// side that sends requests and times round trips, the consumer the side
// that echoes them. The channel's case runs both in this process.
type sidePIDs struct {
	Producer, Consumer int
	// Producers and Consumers list every process of a side when there
	// are several (mpmc); Producer and Consumer are then the first.
	Producers, Consumers []int
}

// A caseRunner runs one case in three steps. Within run, the case's
// steady-state loop of moving messages is its measurement window, which
// run marks with w.open and w.close and which windowObservers bracket.
type caseRunner interface {
	// setup starts the peer processes, if any, and attaches every side;
	// it returns when all are ready to move messages.
	setup() error
	// pids are the processes that run the two sides.
	pids() sidePIDs
	// run moves messages for the case's duration, checks that every one
	// arrived intact and in order, and returns the timed figures. It calls
	// w.open just before its loop, after allocating its buffers, and
	// w.close just after, before it closes anything.
	run(w *window) (measurement, error)
	// close releases what setup made; a peer still running is killed, and
	// it is always waited for. close is safe after a failed setup.
	close() error
}

// measurement is what a case's run measured.
type measurement struct {
	// messages are the timed messages: for stream, those that arrived
	// after the first one (the clock starts at the first arrival and stops
	// when the consumer sees the end of the stream); for pingpong, the
	// round trips.
	messages uint64
	seconds  float64
	// rtts are the round-trip times of pingpong, in nanoseconds (the
	// out-of-band modes: the latencies of urgent messages or flushes).
	rtts []uint32
	// drain is the out-of-band modes' queue drain time, in seconds.
	drain *float64
}

// windowObservers are called when a case's measurement window opens, with
// the case and its processes. The function each returns is called the
// moment the window closes, with the number of messages (pingpong: round
// trips) moved in it, and returns what to add to the case's result, or nil.
// A probe that counts system calls per process fills SyscallsPerMsg this
// way.
var windowObservers []func(c benchCase, pids sidePIDs) (closeWindow func(msgs uint64) func(r *caseResult))

// A window is a case's measurement window: its steady-state loop, from the
// moment every side is attached and about to move messages to the moment
// the producing side has sent its last one. Process start-up, attaching,
// allocating buffers, closing and the peers' exits lie outside it. Only
// observers see it; a case's msgs/s has its own clock (see measurement).
type window struct {
	c       benchCase
	pids    sidePIDs
	state   int // 0 not opened, 1 open, 2 closed
	closers []func(uint64) func(*caseResult)
	results []func(*caseResult)
}

// open opens the window: every observer starts watching.
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

// caseResult is one row of the report; its JSON form is one element of the
// array that -json prints.
type caseResult struct {
	Transport  string  `json:"transport"`
	Mode       string  `json:"mode"`
	Size       int     `json:"size"`
	Producers  int     `json:"producers"`
	Consumers  int     `json:"consumers"`
	Capacity   int     `json:"capacity"`
	Messages   uint64  `json:"messages"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	MBPerSec   float64 `json:"mb_per_sec"`
	// RTTP50 and RTTP99 are round-trip percentiles, pingpong only.
	RTTP50 *int64 `json:"rtt_p50_ns"`
	RTTP99 *int64 `json:"rtt_p99_ns"`
	// RingRatio compares the case with the ring's case of the same mode
	// and size: stream, ring msgs/s ÷ this msgs/s; pingpong, this p50 ÷
	// ring p50. Null when the ring was not run.
	RingRatio *float64 `json:"ring_ratio"`
	// Baseline, when set, names the transport this one is measured
	// against, BaselineRatio is the cost ratio (stream, baseline msgs/s ÷
	// this msgs/s; pingpong, this p50 ÷ baseline p50), null when the
	// baseline's case was not run, and BaselineBound the ratio it should
	// stay within.
	// BaselineRatios are the ratios of each round when there were
	// several; BaselineRatio is then their median.
	Baseline       string    `json:"baseline,omitempty"`
	BaselineRatio  *float64  `json:"baseline_ratio,omitempty"`
	BaselineRatios []float64 `json:"baseline_ratios,omitempty"`
	BaselineBound  float64   `json:"baseline_bound,omitempty"`
	// Rounds, when above 1, is how many times the case ran; the row is
	// the median round's (by msgs/s for stream, by p50 otherwise).
	Rounds int `json:"rounds,omitempty"`
	// Batch is the messages per SendBatch of the ring and mpmc stream
	// producers (1: one Send each); absent for the other rows, which move
	// one message per write or channel send.
	Batch int `json:"batch,omitempty"`
	// DrainSeconds (out-of-band modes) is how long the consumer would
	// take to get through the queue the urgent message or flush jumped.
	DrainSeconds *float64 `json:"drain_seconds,omitempty"`
	// SyscallsPerMsg: each side's system calls per message (pingpong:
	// per round trip) during the window, from the eBPF probe.
	SyscallsPerMsg syscallsPerMsg `json:"syscalls_per_msg"`

	// PIDs are the processes that ran the case (they have exited).
	PIDs sidePIDs `json:"-"`
}

// syscallsPerMsg holds system calls per message on each side, when a probe
// measured them during the case's window; null otherwise.
type syscallsPerMsg struct {
	Producer *float64 `json:"producer"`
	Consumer *float64 `json:"consumer"`
}

func runBench(args []string, stdout, stderr io.Writer) error {
	cfg, err := parseBenchFlags(args, stderr)
	if err != nil {
		return err
	}
	cases := benchCases(cfg)

	// An interrupt kills the running case's peer, which ends the case
	// with an error; no later case starts.
	var interrupted atomic.Bool
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	defer func() {
		signal.Stop(sigc)
		close(sigc)
	}()
	go func() {
		for range sigc {
			interrupted.Store(true)
			killPeers("interrupted")
		}
	}()

	// Every round runs every case once, in the same order, so that a case
	// and its baseline run next to each other in each round.
	total := cfg.rounds * len(cases)
	rounds := make([][]caseResult, cfg.rounds)
	for k := range rounds {
		rounds[k] = make([]caseResult, 0, len(cases))
		for i, c := range cases {
			if interrupted.Load() {
				return errors.New("interrupted")
			}
			r, err := runCase(c)
			if err != nil {
				if interrupted.Load() {
					return errors.New("interrupted")
				}
				return fmt.Errorf("%s %s size=%d: %w", c.transport.name, c.mode, c.size, err)
			}
			rounds[k] = append(rounds[k], r)
			fmt.Fprintf(stderr, "[%d/%d] %s\n", k*len(cases)+i+1, total, progressLine(&r))
		}
	}
	results := medianRows(rounds)
	setRingRatios(results)
	setBaselineRatios(rounds, results)
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	printTable(stdout, cfg, results)
	return nil
}

func parseBenchFlags(args []string, stderr io.Writer) (*benchConfig, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		transportList = fs.String("transports", "ring,pipe,chan", "comma-separated `list` of transports: "+transportNames()+
			"; "+overheadPreset+" stands for "+joinNames(overheadTransports)+" and makes -rounds default to "+strconv.Itoa(overheadRounds)+" and -duration to "+overheadDuration.String())
		sizeList  = fs.String("sizes", "64,1024,16384", "comma-separated message sizes in `bytes` (suffixes k, M: binary multiples)")
		mode      = fs.String("mode", "both", "`stream`, pingpong, both, or oob (urgent and flush latency with the data lane full; ring only)")
		duration  = fs.Duration("duration", time.Second, "how long each case runs")
		capacity  = fs.String("capacity", "1M", "the ring's data area in `bytes`, a power of two; the channel buffers as many messages as fit in it (the pipe keeps the kernel's buffer)")
		producers = fs.Int("producers", 1, "producer processes of the mpmc transport; above 1 (or -consumers above 1) the other transports are skipped")
		consumers = fs.Int("consumers", 1, "consumer processes of the mpmc transport")
		asJSON    = fs.Bool("json", false, "print a JSON array, one object per case, instead of the table")
		rounds    = fs.Int("rounds", 1, "run every case this many `times`, in the same order each round, and report the median round of each case and the median of each round's overhead ratio")
		batch     = fs.Int("batch", 32, "ring, mpmc and conn stream: messages each producer publishes per SendBatch, with one index store and at most one wake (1: one Send per message); the pipe, the channel and the fallbacks always move one message per write or send")
	)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: shmlane bench [flags]

Bench moves fixed-size messages between a producer and a consumer in two
processes, over the shmlane ring and over a pipe, and between two goroutines
of one process over a Go channel, and reports each transport's rate and its
ratio to the ring's. Stream mode sends as fast as the consumer takes; pingpong
mode sends one message, waits for its echo, and times each round trip.
-transports adds the MPMC ring (with -producers and -consumers processes),
FIFOs, unix and TCP sockets, shmlane connections, and the bare system calls
beneath each fallback; "-transports overhead" runs every fallback beside the
bare loop of its mechanism and the connection beside the bare ring, and
prints each one's cost over its baseline. Run as root (or with
CAP_BPF and CAP_PERFMON), bench also counts each side's system calls per
message with an eBPF probe.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}

	cfg := &benchConfig{duration: *duration, producers: *producers, consumers: *consumers, batch: *batch, json: *asJSON, rounds: *rounds}
	if cfg.batch < 1 || cfg.batch > 4096 {
		return nil, usageErrorf("-batch must be in [1, 4096]: batch=%d", cfg.batch)
	}
	seen := map[string]bool{}
	preset := false
	for _, name := range strings.Split(*transportList, ",") {
		name = strings.TrimSpace(name)
		list := []*transport{lookupTransport(name)}
		if name == overheadPreset {
			list, preset = overheadTransports, true
		}
		if list[0] == nil {
			return nil, usageErrorf("unknown transport %q in -transports (known: %s, %s)", name, transportNames(), overheadPreset)
		}
		for _, t := range list {
			if !seen[t.name] {
				seen[t.name] = true
				cfg.transports = append(cfg.transports, t)
			}
		}
	}
	if preset && !flagSet(fs, "rounds") {
		cfg.rounds = overheadRounds
	}
	if preset && !flagSet(fs, "duration") {
		cfg.duration = overheadDuration
	}
	if cfg.rounds < 1 || cfg.rounds > 100 {
		return nil, usageErrorf("-rounds must be in [1, 100]: rounds=%d", cfg.rounds)
	}
	for _, s := range strings.Split(*sizeList, ",") {
		n, err := parseBytes(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, usageErrorf("-sizes: each size must be a whole number of bytes, at least 1: %q", s)
		}
		cfg.sizes = append(cfg.sizes, n)
	}
	switch *mode {
	case modeStream, modePingpong:
		cfg.modes = []string{*mode}
	case "oob":
		cfg.modes = []string{modeUrgent, modeFlush}
	case "both":
		cfg.modes = []string{modeStream, modePingpong}
	default:
		return nil, usageErrorf("-mode must be stream, pingpong, both or oob: mode=%q", *mode)
	}
	if cfg.duration <= 0 {
		return nil, usageErrorf("-duration must be positive: duration=%v", cfg.duration)
	}
	c, err := parseBytes(*capacity)
	if err != nil || c < ring.MinCapacity || c > ring.MaxCapacity || c&(c-1) != 0 {
		return nil, usageErrorf("-capacity must be a power of two in [%d, %d] bytes: capacity=%q", ring.MinCapacity, ring.MaxCapacity, *capacity)
	}
	cfg.capacity = c
	if cfg.producers < 1 || cfg.consumers < 1 || cfg.producers > 32 || cfg.consumers > 32 {
		return nil, usageErrorf("-producers and -consumers must be in [1, 32]: producers=%d consumers=%d", cfg.producers, cfg.consumers)
	}
	if cfg.producers != 1 || cfg.consumers != 1 {
		var kept []*transport
		var skipped []string
		for _, t := range cfg.transports {
			if t == mpmcTransport {
				kept = append(kept, t)
			} else {
				skipped = append(skipped, t.name)
			}
		}
		if len(kept) == 0 {
			return nil, usageErrorf("only the mpmc transport runs several producers or consumers: -producers=%d -consumers=%d, -transports=%s", cfg.producers, cfg.consumers, *transportList)
		}
		if len(skipped) > 0 {
			fmt.Fprintf(stderr, "skipping %s: only mpmc runs several producers or consumers (-producers=%d -consumers=%d)\n", strings.Join(skipped, ", "), cfg.producers, cfg.consumers)
		}
		cfg.transports = kept
		if slices.Contains(cfg.modes, modePingpong) {
			fmt.Fprintf(stderr, "skipping mpmc pingpong: a round trip has one requester and one echoer; it runs with -producers 1 -consumers 1 only\n")
			cfg.modes = slices.DeleteFunc(cfg.modes, func(m string) bool { return m == modePingpong })
			if len(cfg.modes) == 0 {
				return nil, usageErrorf("-mode pingpong runs with -producers 1 -consumers 1 only: producers=%d consumers=%d", cfg.producers, cfg.consumers)
			}
		}
	}
	for _, t := range cfg.transports {
		if err := t.check(cfg); err != nil {
			return nil, err
		}
	}
	if len(benchCases(cfg)) == 0 {
		return nil, usageErrorf("no case to run: -mode %s runs none of -transports %s", *mode, *transportList)
	}
	return cfg, nil
}

// benchCases lists the cases of cfg: every mode, size and transport, less
// the modes a transport does not run.
func benchCases(cfg *benchConfig) []benchCase {
	var cases []benchCase
	for _, mode := range cfg.modes {
		for _, size := range cfg.sizes {
			for _, t := range cfg.transports {
				oobMode := mode == modeUrgent || mode == modeFlush
				if t.streamOnly && mode != modeStream || oobMode && t.oob == nil {
					continue
				}
				cases = append(cases, benchCase{
					transport: t, mode: mode, size: size,
					duration: cfg.duration, capacity: cfg.capacity,
					batch: cfg.batch, producers: cfg.producers, consumers: cfg.consumers,
				})
			}
		}
	}
	return cases
}

// parseBytes parses a byte count: digits with an optional binary suffix
// k/K/KiB (2^10), M/MiB (2^20) or G/GiB (2^30).
func parseBytes(s string) (int, error) {
	mult := 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"k", 1 << 10}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("byte count out of range: %d*%d", n, mult)
	}
	return n * mult, nil
}

// runCase runs one case from setup to teardown.
func runCase(c benchCase) (caseResult, error) {
	r := caseResult{Transport: c.transport.name, Mode: c.mode, Size: c.size, Capacity: c.capacity,
		Producers: c.producers, Consumers: c.consumers}
	if c.mode == modeStream && c.transport.batches {
		r.Batch = c.batch
	}
	var runner caseRunner
	if c.mode == modeUrgent || c.mode == modeFlush {
		runner = c.transport.oob(c)
	} else {
		runner = c.transport.newCase(c)
	}
	defer runner.close()
	if err := runner.setup(); err != nil {
		return r, err
	}
	// Garbage from earlier cases is collected before the window, not in it.
	runtime.GC()

	r.PIDs = runner.pids()
	w := &window{c: c, pids: r.PIDs}
	m, err := runner.run(w)
	w.close(0) // a run that failed before closing it: nothing to report
	r.Messages, r.Seconds = m.messages, m.seconds
	r.DrainSeconds = m.drain
	for _, apply := range w.results {
		apply(&r)
	}
	if err != nil {
		return r, err
	}
	if err := runner.close(); err != nil {
		return r, err
	}

	if m.seconds > 0 {
		r.MsgsPerSec = float64(m.messages) / m.seconds
		r.MBPerSec = r.MsgsPerSec * float64(c.size) / 1e6
	}
	if len(m.rtts) > 0 {
		q := quantiles(m.rtts, 0.50, 0.99)
		r.RTTP50, r.RTTP99 = &q[0], &q[1]
	}
	return r, nil
}

// setRingRatios fills RingRatio from the ring's row of the same mode and
// size.
func setRingRatios(results []caseResult) {
	for i := range results {
		r := &results[i]
		for _, base := range results {
			if base.Transport != ringTransport.name || base.Mode != r.Mode || base.Size != r.Size {
				continue
			}
			var x float64
			switch {
			case r.Mode == modeStream && r.MsgsPerSec > 0:
				x = base.MsgsPerSec / r.MsgsPerSec
			case r.Mode == modePingpong && base.RTTP50 != nil && r.RTTP50 != nil && *base.RTTP50 > 0:
				x = float64(*r.RTTP50) / float64(*base.RTTP50)
			default:
				continue
			}
			r.RingRatio = &x
		}
	}
}

// medianRows picks, for each case, the row of the round in the middle by
// the case's figure of merit (stream: msgs/s; pingpong and the
// out-of-band modes: p50), the lower middle for an even count: a row that
// was measured, not an average of rows.
func medianRows(rounds [][]caseResult) []caseResult {
	results := make([]caseResult, len(rounds[0]))
	for i := range results {
		rows := make([]caseResult, len(rounds))
		for k := range rounds {
			rows[k] = rounds[k][i]
		}
		slices.SortStableFunc(rows, func(a, b caseResult) int {
			return cmp.Compare(cost(a), cost(b))
		})
		results[i] = rows[(len(rows)-1)/2]
		if len(rounds) > 1 {
			results[i].Rounds = len(rounds)
		}
	}
	return results
}

// cost orders rows of one case from best to worst.
func cost(r caseResult) float64 {
	if r.RTTP50 != nil {
		return float64(*r.RTTP50)
	}
	return -r.MsgsPerSec
}

// setBaselineRatios fills the Baseline fields of each row whose transport
// has a baseline: the ratio to the baseline's case of the same mode, size
// and round, and over several rounds the median of those ratios.
func setBaselineRatios(rounds [][]caseResult, results []caseResult) {
	for i := range results {
		r := &results[i]
		t := lookupTransport(r.Transport)
		if t == nil || t.baseline == "" {
			continue
		}
		r.Baseline, r.BaselineBound = t.baseline, t.bound
		if r.BaselineBound == 0 {
			r.BaselineBound = defaultBound
		}
		var ratios []float64
		for _, round := range rounds {
			for _, base := range round {
				if base.Transport != t.baseline || base.Mode != r.Mode || base.Size != r.Size {
					continue
				}
				if x, ok := costRatio(base, round[i]); ok {
					ratios = append(ratios, x)
				}
			}
		}
		if len(ratios) == 0 {
			continue
		}
		if len(rounds) > 1 {
			r.BaselineRatios = ratios
		}
		x := median(ratios)
		r.BaselineRatio = &x
	}
}

// median returns the median of xs (the mean of the two middle values for
// an even count); xs is not modified.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// costRatio is how much more r costs than base: stream, base msgs/s ÷ r
// msgs/s; pingpong, r p50 ÷ base p50.
func costRatio(base, r caseResult) (float64, bool) {
	switch {
	case r.Mode == modeStream && r.MsgsPerSec > 0:
		return base.MsgsPerSec / r.MsgsPerSec, true
	case r.Mode == modePingpong && base.RTTP50 != nil && r.RTTP50 != nil && *base.RTTP50 > 0:
		return float64(*r.RTTP50) / float64(*base.RTTP50), true
	}
	return 0, false
}

// printOverhead prints, for each row with a baseline, its cost over the
// baseline's and whether that stays within the bound.
func printOverhead(w io.Writer, results []caseResult) {
	header := false
	for _, r := range results {
		if r.Baseline == "" {
			continue
		}
		line := ""
		switch {
		case r.BaselineRatio != nil:
			verdict := "within"
			if *r.BaselineRatio > r.BaselineBound {
				verdict = "OVER"
			}
			line = fmt.Sprintf("%.2f×  (bound %.1f×: %s)", *r.BaselineRatio, r.BaselineBound, verdict)
			if len(r.BaselineRatios) > 1 {
				rs := make([]string, len(r.BaselineRatios))
				for k, x := range r.BaselineRatios {
					rs[k] = fmt.Sprintf("%.2f", x)
				}
				line += "  rounds: " + strings.Join(rs, " ")
			}
		default:
			continue // the baseline was not run
		}
		if !header {
			header = true
			fmt.Fprint(w, "\noverhead: each transport's cost over the bare mechanism beneath it, in this run (stream: baseline msgs/s ÷ msgs/s; pingpong: p50 RTT ÷ baseline p50 RTT; with -rounds, the median of the rounds' ratios)\n")
		}
		fmt.Fprintf(w, "%-8s %7s  %-8s vs %-8s %s\n", r.Mode, sizeString(r.Size), r.Transport, r.Baseline, line)
	}
}

func progressLine(r *caseResult) string {
	s := fmt.Sprintf("%-8s %7s  %-8s %9s msgs/s %10.1f MB/s", r.Mode, sizeString(r.Size), r.Transport, rateString(r.MsgsPerSec), r.MBPerSec)
	if r.RTTP50 != nil {
		s += fmt.Sprintf("  rtt p50 %s p99 %s", microString(*r.RTTP50), microString(*r.RTTP99))
	}
	return s
}

func printTable(w io.Writer, cfg *benchConfig, results []caseResult) {
	fmt.Fprintf(w, "machine: %s\n", machineString())
	fmt.Fprintf(w, "ring capacity %s, %v per case, -batch %d, %d producer(s), %d consumer(s)", sizeString(cfg.capacity), cfg.duration, cfg.batch, cfg.producers, cfg.consumers)
	if cfg.rounds > 1 {
		fmt.Fprintf(w, ", %d rounds (each row: the median round)", cfg.rounds)
	}
	fmt.Fprint(w, "\n\n")
	fmt.Fprintf(w, "%-8s %7s  %-8s %10s %10s %10s %10s %7s %10s %10s\n", "mode", "size", "", "msgs/s", "MB/s", "p50 RTT", "p99 RTT", "ring/x", "sys/msg P", "sys/msg C")
	for i, r := range results {
		if i > 0 && (r.Mode != results[i-1].Mode || r.Size != results[i-1].Size) {
			fmt.Fprintln(w)
		}
		p50, p99, ratio := "-", "-", "-"
		if r.RTTP50 != nil {
			p50, p99 = microString(*r.RTTP50), microString(*r.RTTP99)
		}
		if r.RingRatio != nil {
			ratio = fmt.Sprintf("%.2f", *r.RingRatio)
		}
		fmt.Fprintf(w, "%-8s %7s  %-8s %10s %10.1f %10s %10s %7s %10s %10s\n", r.Mode, sizeString(r.Size), r.Transport, rateString(r.MsgsPerSec), r.MBPerSec, p50, p99, ratio, perMsgString(r.SyscallsPerMsg.Producer), perMsgString(r.SyscallsPerMsg.Consumer))
	}
	printOverhead(w, results)
	fmt.Fprintln(w)
	for _, t := range cfg.transports {
		if slices.ContainsFunc(results, func(r caseResult) bool { return r.Transport == t.name }) {
			fmt.Fprintf(w, "%s: %s\n", t.name, t.how)
		}
	}
	fmt.Fprint(w, "stream: the clock runs from the consumer's first message to the end of the stream; pingpong: msgs/s are round trips.\n")
	fmt.Fprintf(w, "batching: the ring, mpmc and conn producers publish -batch %d messages per SendBatch, one index store for all of them; a pipe pays a write(2) and a channel a send for every message. Amortising the publication is what the ring can do and they cannot; -batch 1 compares one Send per message.\n", cfg.batch)
	fmt.Fprint(w, "ring/x: stream, ring msgs/s ÷ this msgs/s; pingpong, this p50 RTT ÷ ring p50 RTT. MB = 10^6 bytes.\n")
	fmt.Fprint(w, "sys/msg P, C: system calls of the producer and consumer processes (every thread; several processes of a side summed) per message, pingpong per round trip, from the start of the steady-state loop to the producer's last send (start-up and close left out), counted by an eBPF probe (- where it cannot run: it needs root or CAP_BPF); chan is one process, its total shown on both sides; the probe's own bpf(2) calls are not counted.\n")
	for _, r := range results {
		if r.DrainSeconds != nil && r.RTTP50 != nil {
			fmt.Fprintf(w, "%s %s: with %s queued behind a consumer that drains it in %.1f ms, the %s reached it in %s (p50).\n",
				r.Transport, r.Mode, sizeString(r.Capacity), *r.DrainSeconds*1e3, map[string]string{modeUrgent: "urgent message", modeFlush: "flush"}[r.Mode], microString(*r.RTTP50))
		}
	}
	if hasMode(results, modeUrgent) || hasMode(results, modeFlush) {
		fmt.Fprint(w, "urgent, flush (-mode oob): the producer fills the data lane (the consumer spends 1 µs on each data message), waits until the consumer is draining it, then times SendUrgent, or Flush followed by one data message, to the consumer's receiving it; msgs/s are events per second, sys/msg counts the filling and the waiting too.\n")
	}
}

// machineString describes the host for the table's header.
func machineString() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := runtime.GOOS
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = "Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d CPUs (GOMAXPROCS %d), %s, %s, %s %s/%s", runtime.NumCPU(), runtime.GOMAXPROCS(0), model, kernel, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// rateString formats a rate with a metric prefix.
func rateString(x float64) string {
	switch {
	case x >= 1e9:
		return fmt.Sprintf("%.2fG", x/1e9)
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

// microString formats a duration in nanoseconds as microseconds.
func microString(ns int64) string { return fmt.Sprintf("%.2fµs", float64(ns)/1e3) }

// sizeString formats a byte count, with a binary suffix when exact.
func sizeString(n int) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func hasMode(results []caseResult, mode string) bool {
	for _, r := range results {
		if r.Mode == mode {
			return true
		}
	}
	return false
}

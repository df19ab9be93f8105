package bench

// The public surface: a run's configuration, its rows, and Run, which
// runs every case round after round and reduces the rounds to one row a
// case with its ratios.

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/shmlane/shmlane/ring"
)

// Modes of a case. Stream sends as fast as the consumer takes; pingpong
// sends one message, waits for its echo and times the round trip; the
// out-of-band modes (the ring only) time SendUrgent, or Flush, to the
// consumer with the data lane full.
const (
	ModeStream   = "stream"
	ModePingpong = "pingpong"
	ModeUrgent   = "urgent"
	ModeFlush    = "flush"
)

// DefaultBound is the overhead a transport may add to its baseline when
// its Transport.Bound is 0.
const DefaultBound = 1.3

// SpreadLimit is the Result.RoundsSpread above which the rounds of a case
// disagree too much for its median to stand for it.
const SpreadLimit = 2.0

// Config is what Run runs: every mode, size and transport, less the modes
// a transport does not run. DefaultConfig returns the defaults of
// "shmlane bench". Prepare's errors name each field by that command's
// flag (Batch is -batch), since the command passes its flags through.
type Config struct {
	// Transports to compare, in the report's order.
	Transports []*Transport
	// Sizes are the message sizes in bytes, each at least 1.
	Sizes []int
	// Modes are Mode constants.
	Modes []string
	// Duration is how long each case moves messages; positive.
	Duration time.Duration
	// Capacity is the ring's data area in bytes, a power of two in
	// [ring.MinCapacity, ring.MaxCapacity]; the channel buffers as many
	// messages as it holds records.
	Capacity int
	// Batch is how many messages a batching producer (ring, mpmc, conn)
	// publishes per SendBatch, in [1, 4096].
	Batch int
	// Producers and Consumers are the mpmc transport's processes a side,
	// each in [1, 32]. Above 1, Prepare keeps mpmc stream only.
	Producers, Consumers int
	// Rounds is how many times every case runs, in the same order each
	// round, in [1, 100]; each row is then the median round's.
	Rounds int
	// SpinTime is the ring.Options.SpinTime of every ring endpoint on
	// both sides of every case (the ring, ringlane and mpmc transports,
	// and the conn transport's rings): how long a side busy-waits before
	// it sleeps on the futex. Zero means ring.DefaultSpinTime; negative,
	// never spin.
	SpinTime time.Duration
	// Log receives notes: what Prepare dropped, and why system calls were
	// not counted (nil: discarded).
	Log io.Writer
	// Progress, if set, is called after each case with how many cases of
	// the run are done, their total, and the case's row.
	Progress func(done, total int, r *Result)
}

// Result is one row of the report; its JSON form is one element of the
// array that "shmlane bench -json" prints.
type Result struct {
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
	// RTTP50, RTTP99 and RTTP999 are round-trip percentiles and RTTMax
	// the longest round trip, in nanoseconds, pingpong only (the
	// out-of-band modes: latencies of the events), from an HdrHistogram
	// of every round trip (three significant digits, up to 10 s).
	RTTP50  *int64 `json:"rtt_p50_ns"`
	RTTP99  *int64 `json:"rtt_p99_ns"`
	RTTP999 *int64 `json:"rtt_p999_ns"`
	RTTMax  *int64 `json:"rtt_max_ns"`
	// SleepsPerRT are pingpong's futex sleeps per round trip: those of
	// both sides of both rings during the timed loop (the segments'
	// ProducerSleeps and ConsumerSleeps), over the round trips. Null for
	// stream and for transports without such counters.
	SleepsPerRT *float64 `json:"sleeps_per_rt"`
	// RingRatio compares the case with the ring's case of the same mode
	// and size: stream, ring msgs/s ÷ this msgs/s; pingpong, this p50 ÷
	// ring p50. Null when the ring was not run.
	RingRatio *float64 `json:"ring_ratio"`
	// Baseline, when set, names the transport this one is measured
	// against, BaselineRatio is the cost ratio (stream, baseline msgs/s ÷
	// this msgs/s; pingpong, this p50 ÷ baseline p50), null when the
	// baseline's case was not run, and BaselineBound the ratio it should
	// stay within. BaselineRatios are the ratios of each round when there
	// were several; BaselineRatio is then their median.
	Baseline       string    `json:"baseline,omitempty"`
	BaselineRatio  *float64  `json:"baseline_ratio,omitempty"`
	BaselineRatios []float64 `json:"baseline_ratios,omitempty"`
	BaselineBound  float64   `json:"baseline_bound,omitempty"`
	// Rounds, when above 1, is how many times the case ran; the row is
	// the median round's (by msgs/s for stream, by p50 otherwise).
	Rounds int `json:"rounds,omitempty"`
	// RoundsSpread is, over several rounds, the highest of the case's
	// headline figure (msgs/s for stream, p50 otherwise) over the lowest,
	// and RoundsRange those two figures, lowest first; null and absent
	// with one round, or where a round has no figure. Above SpreadLimit
	// the rounds disagree: the machine is noisy or the case bimodal.
	RoundsSpread *float64  `json:"rounds_spread"`
	RoundsRange  []float64 `json:"rounds_range,omitempty"`
	// Batch is the messages per SendBatch of a batching stream producer
	// (1: one Send each); absent for the other rows, which move one
	// message per write or channel send.
	Batch int `json:"batch,omitempty"`
	// DrainSeconds (out-of-band modes) is how long the consumer would
	// take to get through the queue the urgent message or flush jumped.
	DrainSeconds *float64 `json:"drain_seconds,omitempty"`
	// SyscallsPerMsg: each side's system calls per message (pingpong:
	// per round trip) during the case's window, from the eBPF probe.
	SyscallsPerMsg SyscallsPerMsg `json:"syscalls_per_msg"`
}

// SyscallsPerMsg holds system calls per message on each side, when the
// probe measured them during the case's window; null otherwise.
type SyscallsPerMsg struct {
	Producer *float64 `json:"producer"`
	Consumer *float64 `json:"consumer"`
}

// DefaultConfig returns the defaults of "shmlane bench": the ring, the
// pipe and the channel, at 64, 1024 and 16384 bytes, stream and pingpong,
// one second a case, a 1 MiB ring, batches of 32, one producer and one
// consumer, one round.
func DefaultConfig() *Config {
	return &Config{
		Transports: []*Transport{ringTransport, pipeTransport, chanTransport},
		Sizes:      []int{64, 1024, 16384},
		Modes:      []string{ModeStream, ModePingpong},
		Duration:   time.Second,
		Capacity:   1 << 20,
		Batch:      32,
		Producers:  1,
		Consumers:  1,
		Rounds:     1,
	}
}

// Prepare checks cfg: every field in range, every transport able to run
// every size and mode. With several producers or consumers it drops the
// transports other than mpmc and the pingpong mode, with a note to Log
// for each drop. It fails if no case is left. Run calls it; calling it
// first tells a configuration error from a failed case. Preparing cfg
// again changes nothing and writes no note.
func (cfg *Config) Prepare() error {
	if err := cfg.checkRanges(); err != nil {
		return err
	}
	if cfg.Producers != 1 || cfg.Consumers != 1 {
		if err := cfg.keepMPMCStream(); err != nil {
			return err
		}
	}
	for _, t := range cfg.Transports {
		if c, ok := t.link.(checker); ok {
			if err := c.check(cfg); err != nil {
				return err
			}
		}
	}
	if len(cfg.cases()) == 0 {
		return fmt.Errorf("no case to run: -mode %s runs none of -transports %s", strings.Join(cfg.Modes, ","), joinNames(cfg.Transports))
	}
	return nil
}

// checkRanges checks every field that has a range.
func (cfg *Config) checkRanges() error {
	switch {
	case cfg.Batch < 1 || cfg.Batch > 4096:
		return fmt.Errorf("-batch must be in [1, 4096]: batch=%d", cfg.Batch)
	case cfg.Rounds < 1 || cfg.Rounds > 100:
		return fmt.Errorf("-rounds must be in [1, 100]: rounds=%d", cfg.Rounds)
	case cfg.Duration <= 0:
		return fmt.Errorf("-duration must be positive: duration=%v", cfg.Duration)
	case cfg.Producers < 1 || cfg.Consumers < 1 || cfg.Producers > 32 || cfg.Consumers > 32:
		return fmt.Errorf("-producers and -consumers must be in [1, 32]: producers=%d consumers=%d", cfg.Producers, cfg.Consumers)
	}
	if err := checkCapacity(cfg.Capacity); err != nil {
		return err
	}
	for _, size := range cfg.Sizes {
		if size < 1 {
			return fmt.Errorf("-sizes: each size must be at least 1 byte: size=%d", size)
		}
	}
	for _, m := range cfg.Modes {
		if !slices.Contains([]string{ModeStream, ModePingpong, ModeUrgent, ModeFlush}, m) {
			return fmt.Errorf("unknown mode %q (known: %s, %s, %s, %s)", m, ModeStream, ModePingpong, ModeUrgent, ModeFlush)
		}
	}
	return nil
}

// checkCapacity checks a ring capacity given with -capacity.
func checkCapacity(capacity int) error {
	if capacity < ring.MinCapacity || capacity > ring.MaxCapacity || capacity&(capacity-1) != 0 {
		return fmt.Errorf("-capacity must be a power of two in [%d, %d] bytes: capacity=%d", ring.MinCapacity, ring.MaxCapacity, capacity)
	}
	return nil
}

// keepMPMCStream drops what cannot run with several producers or
// consumers: every transport but mpmc, and pingpong (a round trip has one
// requester and one echoer).
func (cfg *Config) keepMPMCStream() error {
	var kept, skipped []*Transport
	for _, t := range cfg.Transports {
		if t == mpmcTransport {
			kept = append(kept, t)
		} else {
			skipped = append(skipped, t)
		}
	}
	if len(kept) == 0 {
		return fmt.Errorf("only the mpmc transport runs several producers or consumers: -producers=%d -consumers=%d, -transports=%s", cfg.Producers, cfg.Consumers, joinNames(cfg.Transports))
	}
	if len(skipped) > 0 {
		cfg.logf("skipping %s: only mpmc runs several producers or consumers (-producers=%d -consumers=%d)\n", strings.Join(names(skipped), ", "), cfg.Producers, cfg.Consumers)
	}
	cfg.Transports = kept
	if slices.Contains(cfg.Modes, ModePingpong) {
		cfg.logf("skipping mpmc pingpong: a round trip has one requester and one echoer; it runs with -producers 1 -consumers 1 only\n")
		cfg.Modes = slices.DeleteFunc(slices.Clone(cfg.Modes), func(m string) bool { return m == ModePingpong })
		if len(cfg.Modes) == 0 {
			return fmt.Errorf("-mode pingpong runs with -producers 1 -consumers 1 only: producers=%d consumers=%d", cfg.Producers, cfg.Consumers)
		}
	}
	return nil
}

// logf writes a note to cfg.Log, if set.
func (cfg *Config) logf(format string, args ...any) {
	if cfg.Log != nil {
		fmt.Fprintf(cfg.Log, format, args...)
	}
}

// cases lists the cases of cfg: every mode, size and transport, less the
// modes a transport does not run.
func (cfg *Config) cases() []*caseSpec {
	var cases []*caseSpec
	for _, mode := range cfg.Modes {
		for _, size := range cfg.Sizes {
			for _, t := range cfg.Transports {
				if !slices.Contains(t.modes, mode) {
					continue
				}
				cases = append(cases, &caseSpec{
					transport: t, mode: mode, size: size,
					duration: cfg.Duration, capacity: cfg.Capacity,
					batch: cfg.Batch, producers: cfg.Producers, consumers: cfg.Consumers,
					spin: cfg.SpinTime, log: cfg.Log,
				})
			}
		}
	}
	return cases
}

// Run prepares cfg (see Prepare) and runs every case, round after round,
// each from setup to teardown, with its peers in child processes that
// re-execute this program (which must call RunPeerIfChild first thing).
// It returns one row a case, in the order of the cases: the median
// round's, with its ratios to the ring and to its baseline. Cancelling
// ctx kills the running case's peers and starts no other case; Run then
// returns ctx's cause. A case that fails ends the run with an error that
// names it. Runs are not meant to overlap in one process: cancelling one
// kills the peers of all.
func Run(ctx context.Context, cfg *Config) ([]Result, error) {
	if err := cfg.Prepare(); err != nil {
		return nil, err
	}
	cases := cfg.cases()
	stop := context.AfterFunc(ctx, func() { killPeers("interrupted") })
	defer stop()

	// Every round runs every case once, in the same order, so that a case
	// and its baseline run next to each other in each round.
	total := cfg.Rounds * len(cases)
	rounds := make([][]Result, cfg.Rounds)
	for k := range rounds {
		rounds[k] = make([]Result, 0, len(cases))
		for i, c := range cases {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			r, err := runCase(c)
			if err != nil {
				if ctx.Err() != nil {
					return nil, context.Cause(ctx)
				}
				return nil, fmt.Errorf("%s %s size=%d: %w", c.transport.Name, c.mode, c.size, err)
			}
			rounds[k] = append(rounds[k], r)
			if cfg.Progress != nil {
				cfg.Progress(k*len(cases)+i+1, total, &rounds[k][i])
			}
		}
	}
	results := medianRows(rounds)
	setRingRatios(results)
	setBaselineRatios(rounds, results)
	return results, nil
}

// medianRows picks, for each case, the row of the round in the middle by
// the case's figure of merit (stream: msgs/s; pingpong and the
// out-of-band modes: p50), the lower middle for an even count: a row that
// was measured, not an average of rows, and sets its RoundsSpread. Every
// round must hold the same cases in the same order; no rounds give no
// rows.
func medianRows(rounds [][]Result) []Result {
	if len(rounds) == 0 {
		return nil
	}
	results := make([]Result, len(rounds[0]))
	for i := range results {
		rows := make([]Result, len(rounds))
		for k := range rounds {
			rows[k] = rounds[k][i]
		}
		slices.SortStableFunc(rows, func(a, b Result) int {
			return cmp.Compare(cost(a), cost(b))
		})
		results[i] = rows[(len(rows)-1)/2]
		if len(rounds) > 1 {
			results[i].Rounds = len(rounds)
			if lo, hi, ok := headlineRange(rows); ok {
				x := hi / lo
				results[i].RoundsSpread, results[i].RoundsRange = &x, []float64{lo, hi}
			}
		}
	}
	return results
}

// headline is a row's headline figure: p50 in nanoseconds where it has
// one (pingpong, the out-of-band modes), msgs/s otherwise (stream).
func headline(r Result) float64 {
	if r.RTTP50 != nil {
		return float64(*r.RTTP50)
	}
	return r.MsgsPerSec
}

// headlineRange returns the lowest and the highest headline figure of
// rows, the rounds of one case; false if any is not positive, when no
// ratio of them means anything.
func headlineRange(rows []Result) (lo, hi float64, ok bool) {
	for i, r := range rows {
		x := headline(r)
		if x <= 0 {
			return 0, 0, false
		}
		if i == 0 {
			lo, hi = x, x
		}
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi, len(rows) > 0
}

// cost orders rows of one case from best to worst: by p50 where they
// have one, by msgs/s, highest first, otherwise.
func cost(r Result) float64 {
	if r.RTTP50 != nil {
		return headline(r)
	}
	return -headline(r)
}

// setRingRatios fills RingRatio from the ring's row of the same mode and
// size.
func setRingRatios(results []Result) {
	for i := range results {
		for _, base := range results {
			if base.Transport != ringTransport.Name || base.Mode != results[i].Mode || base.Size != results[i].Size {
				continue
			}
			if x, ok := costRatio(base, results[i]); ok {
				results[i].RingRatio = &x
			}
		}
	}
}

// setBaselineRatios fills the Baseline fields of each row whose transport
// has a baseline: the ratio to the baseline's case of the same mode, size
// and round, and over several rounds the median of those ratios.
func setBaselineRatios(rounds [][]Result, results []Result) {
	for i := range results {
		r := &results[i]
		t := Lookup(r.Transport)
		if t == nil || t.Baseline == "" {
			continue
		}
		r.Baseline, r.BaselineBound = t.Baseline, cmp.Or(t.Bound, DefaultBound)
		var ratios []float64
		for _, round := range rounds {
			for _, base := range round {
				if base.Transport != t.Baseline || base.Mode != r.Mode || base.Size != r.Size {
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
// an even count), which must not be empty; xs is not modified.
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
// msgs/s; pingpong, r p50 ÷ base p50. It is false where the figures to
// divide are missing or zero, and for the out-of-band modes.
func costRatio(base, r Result) (float64, bool) {
	switch {
	case r.Mode == ModeStream && r.MsgsPerSec > 0:
		return base.MsgsPerSec / r.MsgsPerSec, true
	case r.Mode == ModePingpong && base.RTTP50 != nil && r.RTTP50 != nil && *base.RTTP50 > 0:
		return float64(*r.RTTP50) / float64(*base.RTTP50), true
	}
	return 0, false
}

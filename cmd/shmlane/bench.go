package main

// shmlane bench: the command line of the bench package's harness, which
// runs the ring against a pipe and a Go channel (and, with -transports,
// every other transport), each case with its producer and consumer in
// separate processes, all in one run so that the ratios between
// transports hold on a noisy machine even when absolute figures drift.
// This file parses the flags and prints the report.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shmlane/shmlane/bench"
	"github.com/shmlane/shmlane/ring"
)

// The peers of a bench run are copies of this program.
func init() { startupHooks = append(startupHooks, bench.RunPeerIfChild) }

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

// hubMode is the -mode that runs bench.RunHub instead of bench.Run.
const hubMode = "hub"

// benchCommand is a parsed command line: the cases to run, or with -mode
// hub the hub, and whether to print JSON.
type benchCommand struct {
	cfg    *bench.Config
	hub    *bench.HubConfig
	asJSON bool
}

// runBench is the bench command.
func runBench(args []string, stdout, stderr io.Writer) error {
	cmd, err := parseBenchFlags(args, stderr)
	if err != nil {
		return err
	}
	// An interrupt kills the running case's peers, which ends the case
	// with an error; no later case starts.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cmd.hub != nil {
		return runHub(ctx, cmd, stdout)
	}
	cfg, asJSON := cmd.cfg, cmd.asJSON
	cfg.Progress = func(done, total int, r *bench.Result) {
		fmt.Fprintf(stderr, "[%d/%d] %s\n", done, total, progressLine(r))
	}
	results, err := bench.Run(ctx, cfg)
	if err != nil && ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if err != nil {
		return err
	}
	if asJSON {
		// The warnings go to stderr, beside the progress lines; the
		// JSON has rounds_spread.
		printSpreadWarnings(stderr, results)
		return printJSON(stdout, results)
	}
	printTable(stdout, cfg, results)
	return nil
}

// runHub runs the hub and prints its report.
func runHub(ctx context.Context, cmd *benchCommand, stdout io.Writer) error {
	res, err := bench.RunHub(ctx, cmd.hub)
	if err != nil && ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if err != nil {
		return err
	}
	if cmd.asJSON {
		return printJSON(stdout, res)
	}
	printHub(stdout, cmd.hub, res)
	return nil
}

// printJSON prints v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseBenchFlags parses the command line into a prepared configuration
// (see bench.Config.Prepare, whose notes go to stderr), or with -mode hub
// a prepared hub configuration, and -json.
func parseBenchFlags(args []string, stderr io.Writer) (*benchCommand, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def, defHub := bench.DefaultConfig(), bench.DefaultHubConfig()
	sizes := make([]string, len(def.Sizes))
	for i, n := range def.Sizes {
		sizes[i] = strconv.Itoa(n)
	}
	var (
		transportList = fs.String("transports", joinNames(def.Transports, ","), "comma-separated `list` of transports: "+joinNames(bench.Transports(), ", ")+
			"; "+overheadPreset+" stands for "+joinNames(bench.OverheadTransports(), ",")+" and makes -rounds default to "+strconv.Itoa(overheadRounds)+" and -duration to "+overheadDuration.String())
		sizeList  = fs.String("sizes", strings.Join(sizes, ","), "comma-separated message sizes in `bytes` (suffixes k, M: binary multiples)")
		mode      = fs.String("mode", "both", "`stream`, pingpong, both, oob (urgent and flush latency with the data lane full; ring only), or "+hubMode+" (one server process holding -conns mostly idle ring connections, a goroutine each blocked in Recv: its threads and how late a sleeping connection sees a request)")
		duration  = fs.Duration("duration", def.Duration, "how long each case runs (-mode "+hubMode+": how long the clients send)")
		capacity  = fs.String("capacity", bench.FormatSize(def.Capacity), "the ring's data area in `bytes`, a power of two; the channel buffers as many messages as fit in it (the pipe keeps the kernel's buffer); -mode "+hubMode+": each ring of a connection, default "+bench.FormatSize(defHub.Capacity))
		conns     = fs.Int("conns", defHub.Conns, "-mode "+hubMode+": connections the server holds, shared by "+strconv.Itoa(defHub.Clients)+" client processes")
		producers = fs.Int("producers", def.Producers, "producer processes of the mpmc transport; above 1 (or -consumers above 1) the other transports are skipped")
		consumers = fs.Int("consumers", def.Consumers, "consumer processes of the mpmc transport")
		asJSON    = fs.Bool("json", false, "print a JSON array, one object per case (-mode "+hubMode+": one object), instead of the table")
		rounds    = fs.Int("rounds", def.Rounds, "run every case this many `times`, in the same order each round, and report the median round of each case and the median of each round's overhead ratio")
		batch     = fs.Int("batch", def.Batch, "ring, mpmc and conn stream: messages each producer publishes per SendBatch, with one index store and at most one wake (1: one Send per message); the pipe, the channel and the fallbacks always move one message per write or send")
	)
	var spin time.Duration
	fs.Func("spin", "the SpinTime of every ring endpoint on both sides (ring, ringlane, mpmc, conn, and the hub): how long a side busy-waits before it sleeps on the futex, a `duration`; 0 (the default): the ring's default, "+ring.DefaultSpinTime.String()+"; negative (-1 will do): never spin",
		func(v string) (err error) { spin, err = parseSpin(v); return err })
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
message with an eBPF probe. "-mode hub" runs something else: one server
process holding -conns mostly idle ring connections, a goroutine each
blocked in Recv, and reports the server's threads and how late a sleeping
connection sees a request.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if *mode == hubMode {
		hub, err := hubConfig(fs, defHub, *conns, *duration, *capacity, spin)
		return &benchCommand{hub: hub, asJSON: *asJSON}, err
	}
	if flagSet(fs, "conns") {
		return nil, usageErrorf("-conns applies to -mode %s only: mode=%q", hubMode, *mode)
	}

	cfg := &bench.Config{Duration: *duration, Producers: *producers, Consumers: *consumers, Batch: *batch, Rounds: *rounds, SpinTime: spin, Log: stderr}
	preset := false
	for _, name := range strings.Split(*transportList, ",") {
		name = strings.TrimSpace(name)
		list := []*bench.Transport{bench.Lookup(name)}
		if name == overheadPreset {
			list, preset = bench.OverheadTransports(), true
		}
		if list[0] == nil {
			return nil, usageErrorf("unknown transport %q in -transports (known: %s, %s)", name, joinNames(bench.Transports(), ", "), overheadPreset)
		}
		for _, t := range list {
			if !slices.Contains(cfg.Transports, t) {
				cfg.Transports = append(cfg.Transports, t)
			}
		}
	}
	if preset && !flagSet(fs, "rounds") {
		cfg.Rounds = overheadRounds
	}
	if preset && !flagSet(fs, "duration") {
		cfg.Duration = overheadDuration
	}
	for _, s := range strings.Split(*sizeList, ",") {
		n, err := parseBytes(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, usageErrorf("-sizes: each size must be a whole number of bytes, at least 1: %q", s)
		}
		cfg.Sizes = append(cfg.Sizes, n)
	}
	switch *mode {
	case bench.ModeStream, bench.ModePingpong:
		cfg.Modes = []string{*mode}
	case "oob":
		cfg.Modes = []string{bench.ModeUrgent, bench.ModeFlush}
	case "both":
		cfg.Modes = []string{bench.ModeStream, bench.ModePingpong}
	default:
		return nil, usageErrorf("-mode must be stream, pingpong, both, oob or %s: mode=%q", hubMode, *mode)
	}
	var err error
	if cfg.Capacity, err = parseCapacity(*capacity); err != nil {
		return nil, err
	}
	if err := cfg.Prepare(); err != nil {
		return nil, usageErrorf("%v", err)
	}
	return &benchCommand{cfg: cfg, asJSON: *asJSON}, nil
}

// hubConfig makes the prepared hub configuration of the command line fs
// parsed: def with the flags that apply to the hub, the -capacity only
// when set. A flag that does not apply is a usage error.
func hubConfig(fs *flag.FlagSet, def *bench.HubConfig, conns int, duration time.Duration, capacity string, spin time.Duration) (*bench.HubConfig, error) {
	for _, name := range []string{"transports", "sizes", "rounds", "batch", "producers", "consumers"} {
		if flagSet(fs, name) {
			return nil, usageErrorf("-%s does not apply to -mode %s, which runs one server and its clients over rings (flags: -conns, -duration, -capacity, -spin, -json)", name, hubMode)
		}
	}
	cfg := *def
	cfg.Conns, cfg.Duration, cfg.SpinTime = conns, duration, spin
	if flagSet(fs, "capacity") {
		var err error
		if cfg.Capacity, err = parseCapacity(capacity); err != nil {
			return nil, err
		}
	}
	if err := cfg.Prepare(); err != nil {
		return nil, usageErrorf("%v", err)
	}
	return &cfg, nil
}

// parseSpin parses -spin: a duration, or a whole number of nanoseconds
// that is 0 or negative (-1: never spin), which needs no unit.
func parseSpin(s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n <= 0 {
		return time.Duration(n), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("want a duration (50us), 0 for the ring's default or a negative number to never spin: %w", err)
	}
	return d, nil
}

// parseCapacity parses -capacity.
func parseCapacity(s string) (int, error) {
	n, err := parseBytes(s)
	if err != nil {
		return 0, usageErrorf("-capacity must be a power of two in [%d, %d] bytes: capacity=%q", ring.MinCapacity, ring.MaxCapacity, s)
	}
	return n, nil
}

// joinNames returns the names of ts separated by sep.
func joinNames(ts []*bench.Transport, sep string) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Name
	}
	return strings.Join(names, sep)
}

// flagSet reports whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
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

// printOverhead prints, for each row with a baseline that ran, its cost
// over the baseline's and whether that stays within the bound.
func printOverhead(w io.Writer, results []bench.Result) {
	header := false
	for _, r := range results {
		if r.Baseline == "" || r.BaselineRatio == nil {
			continue
		}
		verdict := "within"
		if *r.BaselineRatio > r.BaselineBound {
			verdict = "OVER"
		}
		line := fmt.Sprintf("%.2f×  (bound %.1f×: %s)", *r.BaselineRatio, r.BaselineBound, verdict)
		if len(r.BaselineRatios) > 1 {
			rs := make([]string, len(r.BaselineRatios))
			for k, x := range r.BaselineRatios {
				rs[k] = fmt.Sprintf("%.2f", x)
			}
			line += "  rounds: " + strings.Join(rs, " ")
		}
		if !header {
			header = true
			fmt.Fprint(w, "\noverhead: each transport's cost over the bare mechanism beneath it, in this run (stream: baseline msgs/s ÷ msgs/s; pingpong: p50 RTT ÷ baseline p50 RTT; with -rounds, the median of the rounds' ratios)\n")
		}
		fmt.Fprintf(w, "%-8s %7s  %-8s vs %-8s %s\n", r.Mode, bench.FormatSize(r.Size), r.Transport, r.Baseline, line)
	}
}

// printSpreadWarnings prints a warning line for each row whose rounds
// disagree (see spreadWarning), with a blank line before the first.
func printSpreadWarnings(w io.Writer, results []bench.Result) {
	sep := "\n"
	for _, r := range results {
		if line := bench.SpreadWarning(r); line != "" {
			fmt.Fprint(w, sep+line+"\n")
			sep = ""
		}
	}
}

// spinString describes -spin for the report's header.
func spinString(spin time.Duration) string {
	switch {
	case spin == 0:
		return "spin " + ring.DefaultSpinTime.String() + " (the default)"
	case spin < 0:
		return "no spin (-spin " + spin.String() + ": a side sleeps at once)"
	}
	return "spin " + spin.String()
}

// printHub prints the hub's report: the machine and the configuration,
// the server's threads, the wake latencies and the rate, and what each
// figure means.
func printHub(w io.Writer, cfg *bench.HubConfig, r *bench.HubResult) {
	fmt.Fprintf(w, "machine: %s\n", bench.Machine())
	fmt.Fprintf(w, "hub: %d connections over %d client processes, rings of %s each way, %v, %s\n\n", r.Conns, r.Clients, bench.FormatSize(r.Capacity), cfg.Duration, spinString(r.SpinTime))
	fmt.Fprintf(w, "%-16s idle %d, max %d\n", "server threads", r.ThreadsIdle, r.ThreadsMax)
	fmt.Fprintf(w, "%-16s p50 %s, p99 %s, p99.9 %s, max %s\n", "wake to receive", bench.FormatLatency(r.WakeP50), bench.FormatLatency(r.WakeP99), bench.FormatLatency(r.WakeP999), bench.FormatLatency(r.WakeMax))
	fmt.Fprintf(w, "%-16s %d in %.2fs: %s msgs/s\n\n", "messages", r.Messages, r.Seconds, bench.FormatRate(r.MsgsPerSec))
	fmt.Fprintf(w, "hub: one server process holds every connection, a request ring and a response ring (ring.Create, %s each), with one goroutine a connection blocked in Recv on its request ring; %d client processes share the connections and each, for %v, leaves a random gap (up to %v, slept with time.Sleep), sends one %d-byte request on a connection picked at random, and waits for the server's echo.\n",
		bench.FormatSize(r.Capacity), r.Clients, cfg.Duration, bench.HubMaxGap, bench.HubMessageSize)
	fmt.Fprintf(w, "server threads: \"Threads:\" of the server's /proc/PID/status: idle, once every connection's goroutine has slept in Recv (its ring's ConsumerSleeps) and %v more have passed, before the clients start; max, the most seen, read every %v, while they send. A goroutine asleep in the futex system call holds a thread.\n", bench.HubSettle, bench.HubSample)
	fmt.Fprint(w, "wake to receive: from the client's CLOCK_MONOTONIC stamp in the request, taken just before its Send, to the server goroutine's return from Recv, read on the same clock: the peer's wake and the scheduling of a sleeping connection's goroutine (p50, p99, p99.9, max, from an HdrHistogram). Not a round trip minus the echo.\n")
	fmt.Fprint(w, "messages: the requests echoed, over the longest client's time sending.\n")
}

// progressLine is the line on stderr after a case.
func progressLine(r *bench.Result) string {
	s := fmt.Sprintf("%-8s %7s  %-8s %9s msgs/s %10.1f MB/s", r.Mode, bench.FormatSize(r.Size), r.Transport, bench.FormatRate(r.MsgsPerSec), r.MBPerSec)
	if r.RTTP50 != nil {
		s += fmt.Sprintf("  rtt p50 %s p99 %s", bench.FormatLatency(*r.RTTP50), bench.FormatLatency(*r.RTTP99))
	}
	return s
}

// printTable prints the report: the machine and the configuration, a row
// a case, the overhead lines, and what each figure means.
func printTable(w io.Writer, cfg *bench.Config, results []bench.Result) {
	fmt.Fprintf(w, "machine: %s\n", bench.Machine())
	fmt.Fprintf(w, "ring capacity %s, %v per case, -batch %d, %d producer(s), %d consumer(s), %s", bench.FormatSize(cfg.Capacity), cfg.Duration, cfg.Batch, cfg.Producers, cfg.Consumers, spinString(cfg.SpinTime))
	if cfg.Rounds > 1 {
		fmt.Fprintf(w, ", %d rounds (each row: the median round)", cfg.Rounds)
	}
	fmt.Fprint(w, "\n\n")
	const row = "%-8s %7s  %-8s %9s %9s %9s %9s %9s %9s %8s %7s %9s %9s\n"
	fmt.Fprintf(w, row, "mode", "size", "", "msgs/s", "MB/s", "p50 RTT", "p99 RTT", "p99.9 RTT", "max RTT", "sleep/rt", "ring/x", "sys/msg P", "sys/msg C")
	for i, r := range results {
		if i > 0 && (r.Mode != results[i-1].Mode || r.Size != results[i-1].Size) {
			fmt.Fprintln(w)
		}
		rtts := []string{"-", "-", "-", "-"}
		for k, ns := range []*int64{r.RTTP50, r.RTTP99, r.RTTP999, r.RTTMax} {
			if ns != nil {
				rtts[k] = bench.FormatLatency(*ns)
			}
		}
		ratio := "-"
		if r.RingRatio != nil {
			ratio = fmt.Sprintf("%.2f", *r.RingRatio)
		}
		fmt.Fprintf(w, row, r.Mode, bench.FormatSize(r.Size), r.Transport, bench.FormatRate(r.MsgsPerSec), fmt.Sprintf("%.1f", r.MBPerSec), rtts[0], rtts[1], rtts[2], rtts[3],
			bench.FormatPerMsg(r.SleepsPerRT), ratio, bench.FormatPerMsg(r.SyscallsPerMsg.Producer), bench.FormatPerMsg(r.SyscallsPerMsg.Consumer))
	}
	printOverhead(w, results)
	printSpreadWarnings(w, results)
	fmt.Fprintln(w)
	for _, t := range cfg.Transports {
		if slices.ContainsFunc(results, func(r bench.Result) bool { return r.Transport == t.Name }) {
			fmt.Fprintf(w, "%s: %s\n", t.Name, t.How)
		}
	}
	fmt.Fprint(w, "stream: the clock runs from the consumer's first message to the end of the stream; pingpong: msgs/s are round trips.\n")
	fmt.Fprintf(w, "batching: the ring, mpmc and conn producers publish -batch %d messages per SendBatch, one index store for all of them; a pipe pays a write(2) and a channel a send for every message. Amortising the publication is what the ring can do and they cannot; -batch 1 compares one Send per message.\n", cfg.Batch)
	fmt.Fprint(w, "ring/x: stream, ring msgs/s ÷ this msgs/s; pingpong, this p50 RTT ÷ ring p50 RTT. MB = 10^6 bytes.\n")
	fmt.Fprint(w, "RTT: p50, p99, p99.9 and max of every round trip, from an HdrHistogram (1 ns to 10 s, 3 significant digits). sleep/rt: pingpong's futex sleeps per round trip, both sides of both rings (the segments' ProducerSleeps and ConsumerSleeps) during the timed loop; - where the transport has no such counter; -spin sets how long a side spins first.\n")
	fmt.Fprint(w, "sys/msg P, C: system calls of the producer and consumer processes (every thread; several processes of a side summed) per message, pingpong per round trip, from the start of the steady-state loop to the producer's last send (start-up and close left out), counted by an eBPF probe (- where it cannot run: it needs root or CAP_BPF); chan is one process, its total shown on both sides; the probe's own bpf(2) calls are not counted.\n")
	oob := false
	for _, r := range results {
		event, ok := map[string]string{bench.ModeUrgent: "urgent message", bench.ModeFlush: "flush"}[r.Mode]
		oob = oob || ok
		if ok && r.DrainSeconds != nil && r.RTTP50 != nil {
			fmt.Fprintf(w, "%s %s: with %s queued behind a consumer that drains it in %.1f ms, the %s reached it in %s (p50).\n",
				r.Transport, r.Mode, bench.FormatSize(r.Capacity), *r.DrainSeconds*1e3, event, bench.FormatLatency(*r.RTTP50))
		}
	}
	if oob {
		fmt.Fprint(w, "urgent, flush (-mode oob): the producer fills the data lane (the consumer spends 1 µs on each data message), waits until the consumer is draining it, then times SendUrgent, or Flush followed by one data message, to the consumer's receiving it; msgs/s are events per second, sys/msg counts the filling and the waiting too.\n")
	}
}

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
	"runtime"
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

// runBench is the bench command.
func runBench(args []string, stdout, stderr io.Writer) error {
	cfg, asJSON, err := parseBenchFlags(args, stderr)
	if err != nil {
		return err
	}
	// An interrupt kills the running case's peers, which ends the case
	// with an error; no later case starts.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	printTable(stdout, cfg, results)
	return nil
}

// parseBenchFlags parses the command line into a prepared configuration
// (see bench.Config.Prepare, whose notes go to stderr) and -json.
func parseBenchFlags(args []string, stderr io.Writer) (*bench.Config, bool, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := bench.DefaultConfig()
	sizes := make([]string, len(def.Sizes))
	for i, n := range def.Sizes {
		sizes[i] = strconv.Itoa(n)
	}
	var (
		transportList = fs.String("transports", joinNames(def.Transports, ","), "comma-separated `list` of transports: "+joinNames(bench.Transports(), ", ")+
			"; "+overheadPreset+" stands for "+joinNames(bench.OverheadTransports(), ",")+" and makes -rounds default to "+strconv.Itoa(overheadRounds)+" and -duration to "+overheadDuration.String())
		sizeList  = fs.String("sizes", strings.Join(sizes, ","), "comma-separated message sizes in `bytes` (suffixes k, M: binary multiples)")
		mode      = fs.String("mode", "both", "`stream`, pingpong, both, or oob (urgent and flush latency with the data lane full; ring only)")
		duration  = fs.Duration("duration", def.Duration, "how long each case runs")
		capacity  = fs.String("capacity", sizeString(def.Capacity), "the ring's data area in `bytes`, a power of two; the channel buffers as many messages as fit in it (the pipe keeps the kernel's buffer)")
		producers = fs.Int("producers", def.Producers, "producer processes of the mpmc transport; above 1 (or -consumers above 1) the other transports are skipped")
		consumers = fs.Int("consumers", def.Consumers, "consumer processes of the mpmc transport")
		asJSON    = fs.Bool("json", false, "print a JSON array, one object per case, instead of the table")
		rounds    = fs.Int("rounds", def.Rounds, "run every case this many `times`, in the same order each round, and report the median round of each case and the median of each round's overhead ratio")
		batch     = fs.Int("batch", def.Batch, "ring, mpmc and conn stream: messages each producer publishes per SendBatch, with one index store and at most one wake (1: one Send per message); the pipe, the channel and the fallbacks always move one message per write or send")
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
		return nil, false, err
	}

	cfg := &bench.Config{Duration: *duration, Producers: *producers, Consumers: *consumers, Batch: *batch, Rounds: *rounds, Log: stderr}
	preset := false
	for _, name := range strings.Split(*transportList, ",") {
		name = strings.TrimSpace(name)
		list := []*bench.Transport{bench.Lookup(name)}
		if name == overheadPreset {
			list, preset = bench.OverheadTransports(), true
		}
		if list[0] == nil {
			return nil, false, usageErrorf("unknown transport %q in -transports (known: %s, %s)", name, joinNames(bench.Transports(), ", "), overheadPreset)
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
			return nil, false, usageErrorf("-sizes: each size must be a whole number of bytes, at least 1: %q", s)
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
		return nil, false, usageErrorf("-mode must be stream, pingpong, both or oob: mode=%q", *mode)
	}
	var err error
	if cfg.Capacity, err = parseBytes(*capacity); err != nil {
		return nil, false, usageErrorf("-capacity must be a power of two in [%d, %d] bytes: capacity=%q", ring.MinCapacity, ring.MaxCapacity, *capacity)
	}
	if err := cfg.Prepare(); err != nil {
		return nil, false, usageErrorf("%v", err)
	}
	return cfg, *asJSON, nil
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
		fmt.Fprintf(w, "%-8s %7s  %-8s vs %-8s %s\n", r.Mode, sizeString(r.Size), r.Transport, r.Baseline, line)
	}
}

// progressLine is the line on stderr after a case.
func progressLine(r *bench.Result) string {
	s := fmt.Sprintf("%-8s %7s  %-8s %9s msgs/s %10.1f MB/s", r.Mode, sizeString(r.Size), r.Transport, rateString(r.MsgsPerSec), r.MBPerSec)
	if r.RTTP50 != nil {
		s += fmt.Sprintf("  rtt p50 %s p99 %s", microString(*r.RTTP50), microString(*r.RTTP99))
	}
	return s
}

// printTable prints the report: the machine and the configuration, a row
// a case, the overhead lines, and what each figure means.
func printTable(w io.Writer, cfg *bench.Config, results []bench.Result) {
	fmt.Fprintf(w, "machine: %s\n", machineString())
	fmt.Fprintf(w, "ring capacity %s, %v per case, -batch %d, %d producer(s), %d consumer(s)", sizeString(cfg.Capacity), cfg.Duration, cfg.Batch, cfg.Producers, cfg.Consumers)
	if cfg.Rounds > 1 {
		fmt.Fprintf(w, ", %d rounds (each row: the median round)", cfg.Rounds)
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
	for _, t := range cfg.Transports {
		if slices.ContainsFunc(results, func(r bench.Result) bool { return r.Transport == t.Name }) {
			fmt.Fprintf(w, "%s: %s\n", t.Name, t.How)
		}
	}
	fmt.Fprint(w, "stream: the clock runs from the consumer's first message to the end of the stream; pingpong: msgs/s are round trips.\n")
	fmt.Fprintf(w, "batching: the ring, mpmc and conn producers publish -batch %d messages per SendBatch, one index store for all of them; a pipe pays a write(2) and a channel a send for every message. Amortising the publication is what the ring can do and they cannot; -batch 1 compares one Send per message.\n", cfg.Batch)
	fmt.Fprint(w, "ring/x: stream, ring msgs/s ÷ this msgs/s; pingpong, this p50 RTT ÷ ring p50 RTT. MB = 10^6 bytes.\n")
	fmt.Fprint(w, "sys/msg P, C: system calls of the producer and consumer processes (every thread; several processes of a side summed) per message, pingpong per round trip, from the start of the steady-state loop to the producer's last send (start-up and close left out), counted by an eBPF probe (- where it cannot run: it needs root or CAP_BPF); chan is one process, its total shown on both sides; the probe's own bpf(2) calls are not counted.\n")
	oob := false
	for _, r := range results {
		event, ok := map[string]string{bench.ModeUrgent: "urgent message", bench.ModeFlush: "flush"}[r.Mode]
		oob = oob || ok
		if ok && r.DrainSeconds != nil && r.RTTP50 != nil {
			fmt.Fprintf(w, "%s %s: with %s queued behind a consumer that drains it in %.1f ms, the %s reached it in %s (p50).\n",
				r.Transport, r.Mode, sizeString(r.Capacity), *r.DrainSeconds*1e3, event, microString(*r.RTTP50))
		}
	}
	if oob {
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

// perMsgString formats a syscalls-per-message figure, "-" when unmeasured.
func perMsgString(x *float64) string {
	switch {
	case x == nil:
		return "-"
	case *x == 0:
		return "0"
	case *x < 0.01:
		return fmt.Sprintf("%.1e", *x)
	default:
		return fmt.Sprintf("%.2f", *x)
	}
}

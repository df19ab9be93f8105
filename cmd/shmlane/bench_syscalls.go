package main

import (
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/shmlane/shmlane/tracing"
)

// The eBPF probe that fills syscalls_per_msg: one probe for the whole run,
// started with the first case. Each case's processes are watched once they
// are attached and ready (after their start-up, and after the exec that
// started them), and the counts are read when the case's window opens and
// closes (see window), so start-up and teardown are not counted. Where the
// probe cannot start (not root, no BPF), the figures stay null and one
// line on stderr says why.

func init() { windowObservers = append(windowObservers, observeSyscalls) }

var benchProbe struct {
	once  sync.Once
	probe *tracing.Probe
}

func syscallProbe() *tracing.Probe {
	benchProbe.once.Do(func() {
		p, err := tracing.Start(nil)
		if err != nil {
			fmt.Fprintf(os.Stderr, "syscalls per message not measured: %v\n", err)
			return
		}
		benchProbe.probe = p
	})
	return benchProbe.probe
}

func observeSyscalls(c benchCase, pids sidePIDs) func(msgs uint64) func(*caseResult) {
	p := syscallProbe()
	if p == nil {
		return func(uint64) func(*caseResult) { return nil }
	}
	prods, conss := pids.Producers, pids.Consumers
	if prods == nil {
		prods, conss = []int{pids.Producer}, []int{pids.Consumer}
	}
	var watched []int
	for _, pid := range append(slices.Clone(prods), conss...) {
		if !slices.Contains(watched, pid) {
			watched = append(watched, pid)
		}
	}
	unwatch := func() {
		for _, pid := range watched {
			if pid != os.Getpid() {
				p.Unwatch(pid)
			}
		}
	}
	for _, pid := range watched {
		if err := p.Watch(pid); err != nil {
			fmt.Fprintf(os.Stderr, "syscalls per message not measured for %s %s size=%d: pid %d: %v\n", c.transport.name, c.mode, c.size, pid, err)
			unwatch()
			return func(uint64) func(*caseResult) { return nil }
		}
	}
	before, err := p.Snapshot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "syscalls per message not measured for %s %s size=%d: %v\n", c.transport.name, c.mode, c.size, err)
		unwatch()
		return func(uint64) func(*caseResult) { return nil }
	}
	return func(msgs uint64) func(*caseResult) {
		after, err := p.Snapshot()
		unwatch()
		if err != nil {
			fmt.Fprintf(os.Stderr, "syscalls per message not measured for %s %s size=%d: %v\n", c.transport.name, c.mode, c.size, err)
			return nil
		}
		if msgs == 0 {
			return nil
		}
		d := after.Sub(before)
		// Several processes of a side: their calls together per message.
		prod := float64(sideSyscalls(d, prods)) / float64(msgs)
		cons := float64(sideSyscalls(d, conss)) / float64(msgs)
		return func(r *caseResult) {
			r.SyscallsPerMsg = syscallsPerMsg{Producer: &prod, Consumer: &cons}
		}
	}
}

// sideSyscalls sums the system calls that d counted for pids, less this
// process's bpf(2) calls: those are the probe's own Snapshot reading its
// maps at the two ends of the window, not the case's work.
func sideSyscalls(d tracing.Counts, pids []int) uint64 {
	var n uint64
	for _, pid := range pids {
		n += d.Total(pid)
		if pid == os.Getpid() {
			for nr, k := range d.ByPID[pid].BySyscall {
				if tracing.SyscallName(nr) == "bpf" {
					n -= k
				}
			}
		}
	}
	return n
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

package main

import (
	"fmt"
	"os"
	"sync"

	"github.com/shmlane/shmlane/tracing"
)

// The eBPF probe that fills syscalls_per_msg: one probe for the whole run,
// started with the first case. Each case's processes are watched from the
// moment its window opens, and the counts are read at the window's two
// ends, so process start-up and teardown are not counted. Where the probe
// cannot start (not root, no BPF), the figures stay null and one line on
// stderr says why.

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

func observeSyscalls(c benchCase, pids sidePIDs) func(r *caseResult) {
	p := syscallProbe()
	if p == nil {
		return func(*caseResult) {}
	}
	prods, conss := pids.Producers, pids.Consumers
	if prods == nil {
		prods, conss = []int{pids.Producer}, []int{pids.Consumer}
	}
	watched := append([]int(nil), prods...)
	if pids.Consumer != pids.Producer {
		watched = append(watched, conss...)
	}
	for _, pid := range watched {
		if err := p.Watch(pid); err != nil {
			fmt.Fprintf(os.Stderr, "syscalls per message not measured for pid %d: %v\n", pid, err)
			return func(*caseResult) {}
		}
	}
	before, err := p.Snapshot()
	if err != nil {
		return func(*caseResult) {}
	}
	return func(r *caseResult) {
		after, err := p.Snapshot()
		for _, pid := range watched {
			if pid != os.Getpid() {
				p.Unwatch(pid)
			}
		}
		if err != nil || r.Messages == 0 {
			return
		}
		d := after.Sub(before)
		sum := func(ps []int) (n uint64) {
			for _, p := range ps {
				n += d.Total(p)
			}
			return n
		}
		// Several processes of a side: their calls together per message.
		prod := float64(sum(prods)) / float64(r.Messages)
		cons := float64(sum(conss)) / float64(r.Messages)
		r.SyscallsPerMsg = syscallsPerMsg{Producer: &prod, Consumer: &cons}
	}
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

package bench

// The eBPF probe that fills SyscallsPerMsg: one probe for the whole
// process, started with the first case. Each case's processes are watched
// once they are attached and ready (after their start-up, and after the
// exec that started them), and the counts are read when the case's window
// opens and closes (see window), so start-up and teardown are not
// counted. Where the probe cannot start (not root, no BPF), the figures
// stay null and one note to the run's Log says why.

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/shmlane/shmlane/tracing"
)

// init registers the probe's observer.
func init() { windowObservers = append(windowObservers, observeSyscalls) }

// probe is the process's eBPF probe, started when first needed.
var probe struct {
	once  sync.Once
	p     *tracing.Probe
	err   error
	noted atomic.Bool // the note that it cannot run was written
}

// syscallProbe returns the process's probe, starting it the first time,
// or why it cannot run.
func syscallProbe() (*tracing.Probe, error) {
	probe.once.Do(func() { probe.p, probe.err = tracing.Start(nil) })
	return probe.p, probe.err
}

// observeSyscalls is the window observer that counts the system calls of
// case c's processes in its window. Notes of what went wrong go to c.log.
func observeSyscalls(c *caseSpec, pids sidePIDs) func(msgs uint64) func(*Result) {
	none := func(uint64) func(*Result) { return nil }
	note := func(err error) {
		if c.log != nil {
			fmt.Fprintf(c.log, "syscalls per message not measured for %s %s size=%d: %v\n", c.transport.Name, c.mode, c.size, err)
		}
	}
	p, err := syscallProbe()
	if err != nil {
		if probe.noted.CompareAndSwap(false, true) && c.log != nil {
			fmt.Fprintf(c.log, "syscalls per message not measured: %v\n", err)
		}
		return none
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
			note(fmt.Errorf("pid %d: %w", pid, err))
			unwatch()
			return none
		}
	}
	before, err := p.Snapshot()
	if err != nil {
		note(err)
		unwatch()
		return none
	}
	return func(msgs uint64) func(*Result) {
		after, err := p.Snapshot()
		unwatch()
		if err != nil {
			note(err)
			return nil
		}
		if msgs == 0 {
			return nil
		}
		d := after.Sub(before)
		// Several processes of a side: their calls together per message.
		prod := float64(sideSyscalls(d, prods)) / float64(msgs)
		cons := float64(sideSyscalls(d, conss)) / float64(msgs)
		return func(r *Result) {
			r.SyscallsPerMsg = SyscallsPerMsg{Producer: &prod, Consumer: &cons}
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

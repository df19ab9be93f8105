package tracing

import (
	"cmp"
	"errors"
	"os"
	"slices"

	"github.com/cilium/ebpf/btf"
)

var (
	// ErrNotSupported is returned where the probe cannot work: a platform
	// other than Linux, a kernel without BPF or raw tracepoints (Linux 5.5
	// or later with CONFIG_BPF_SYSCALL is needed), or, for following
	// children, a kernel without BTF (CONFIG_DEBUG_INFO_BTF).
	ErrNotSupported = errors.New("system-call counting not supported: needs Linux 5.5 or later with CONFIG_BPF_SYSCALL (following children also needs kernel BTF, CONFIG_DEBUG_INFO_BTF)")

	// ErrPermission is returned where the kernel refuses to load the probe:
	// the caller is not root and lacks CAP_BPF and CAP_PERFMON, or the
	// kernel is locked down.
	ErrPermission = errors.New("not permitted to load eBPF programs: run as root or grant CAP_BPF and CAP_PERFMON (a kernel in lockdown mode refuses them to everyone)")

	// ErrClosed is returned by the methods of a Probe after Close.
	ErrClosed = os.ErrClosed
)

// Options configure a Probe. A nil *Options, like the zero value, gives the
// defaults.
type Options struct {
	// MaxProcesses is how many processes can be watched at once, children
	// followed by WatchTree included; a process stops counting against it
	// when it exits. A child that finds the table full is not watched and
	// is counted in Counts.LostChildren. Zero means 4096.
	MaxProcesses int

	// MaxCounters is how many distinct (process, system call) pairs are
	// counted between two calls of Reset. System calls that find the table
	// full are counted in Counts.Dropped instead. Zero means 32768; each
	// entry takes about 64 bytes of locked kernel memory.
	MaxCounters int

	// KernelTypes is the kernel's BTF, from which the probe reads the layout
	// of struct task_struct to follow children and to stop watching a
	// process when it exits. Nil means the running kernel's, from
	// /sys/kernel/btf/vmlinux. Without BTF, Watch works but WatchTree
	// returns an error wrapping ErrNotSupported.
	KernelTypes *btf.Spec
}

// WatchOptions choose how Probe.WatchWith watches a process. The zero value
// counts the process alone, from now on, as Probe.Watch does.
type WatchOptions struct {
	// Children also watches every child the process forks from now on,
	// and their children in turn, with the same options, as
	// Probe.WatchTree does. It needs kernel BTF (see
	// Options.KernelTypes); without it, WatchWith returns an error
	// wrapping ErrNotSupported.
	Children bool

	// AfterExec counts nothing until the process next completes an
	// execve: what it runs before, and the execve itself, are left out.
	// It lets a launcher count a command from its first instruction:
	// start a process that waits, watch it with AfterExec, then let it
	// exec the command. Children it forks before then wait for their own
	// execve. A process that os/exec's Cmd.Start has just returned may
	// still be finishing the execve that started it, as the probe sees it:
	// wait for a sign of life from it (a byte on a pipe) before watching.
	AfterExec bool
}

const (
	defaultMaxProcesses = 4096
	defaultMaxCounters  = 32768
)

// Counts is a snapshot of the counters of a Probe.
type Counts struct {
	// ByPID maps the id of each watched process (its thread-group id, the
	// pid that getpid returns) to its counts. A process that made no
	// system call while watched is absent.
	ByPID map[int]ProcessCounts

	// Dropped is the number of system calls made by watched processes that
	// were not counted because Options.MaxCounters pairs were counted
	// already.
	Dropped uint64

	// LostChildren is the number of children of processes watched with
	// WatchTree that were not watched because Options.MaxProcesses
	// processes were watched already.
	LostChildren uint64
}

// ProcessCounts are the counts of one process, or of several summed.
type ProcessCounts struct {
	// Total is the number of system calls, the sum of BySyscall.
	Total uint64

	// BySyscall maps a system call number (see SyscallName) to the number
	// of calls. Numbers that were not called are absent.
	BySyscall map[int]uint64
}

// SyscallCount is one entry of ProcessCounts.Sorted.
type SyscallCount struct {
	Nr    int
	Count uint64
}

// Total returns the number of system calls counted for pid.
func (c Counts) Total(pid int) uint64 {
	return c.ByPID[pid].Total
}

// Syscall returns the number of calls of system call nr counted for pid.
func (c Counts) Syscall(pid, nr int) uint64 {
	return c.ByPID[pid].BySyscall[nr]
}

// Sum returns the counts of all processes added together.
func (c Counts) Sum() ProcessCounts {
	sum := ProcessCounts{BySyscall: make(map[int]uint64)}
	for _, pc := range c.ByPID {
		for nr, n := range pc.BySyscall {
			sum.BySyscall[nr] += n
			sum.Total += n
		}
	}
	return sum
}

// Sub returns the counts made between the snapshots prev and c, which must
// come from the same Probe, prev first. A counter lower in c than in prev
// was zeroed by Reset in between; its value in c is taken as the difference.
// Entries whose difference is zero are left out.
func (c Counts) Sub(prev Counts) Counts {
	d := Counts{
		ByPID:        make(map[int]ProcessCounts),
		Dropped:      delta(c.Dropped, prev.Dropped),
		LostChildren: delta(c.LostChildren, prev.LostChildren),
	}
	for pid, pc := range c.ByPID {
		old := prev.ByPID[pid].BySyscall
		dpc := ProcessCounts{BySyscall: make(map[int]uint64)}
		for nr, n := range pc.BySyscall {
			if dn := delta(n, old[nr]); dn != 0 {
				dpc.BySyscall[nr] = dn
				dpc.Total += dn
			}
		}
		if dpc.Total != 0 {
			d.ByPID[pid] = dpc
		}
	}
	return d
}

// delta is cur-prev for a counter that only grows until it is zeroed.
func delta(cur, prev uint64) uint64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

// Sorted returns the system calls of pc by count, highest first, and by
// number where counts are equal.
func (pc ProcessCounts) Sorted() []SyscallCount {
	s := make([]SyscallCount, 0, len(pc.BySyscall))
	for nr, n := range pc.BySyscall {
		s = append(s, SyscallCount{Nr: nr, Count: n})
	}
	slices.SortFunc(s, func(a, b SyscallCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Nr, b.Nr)
	})
	return s
}

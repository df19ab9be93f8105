package tracing

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// Probe counts the system calls of the processes it watches, from Start
// until Close. It is safe for concurrent use by multiple goroutines; Close
// may be called from any goroutine, and waits for calls in progress.
type Probe struct {
	mu     sync.RWMutex // Snapshot, Reset and Close hold it for writing
	closed bool

	ns *pidNS // the pid namespace ids are taken in; nil: the initial one

	// The maps and programs are kept here, not only in the kernel, so that
	// their file descriptors stay open for as long as the probe lives.
	watched *ebpf.Map
	counts  *ebpf.Map
	stats   *ebpf.Map
	progs   []*ebpf.Program
	links   []link.Link

	// treeErr says why WatchOptions.Children cannot work, execErr why
	// WatchOptions.AfterExec cannot; nil when they can.
	treeErr error
	execErr error
}

// Start loads the probe into the kernel and attaches it. It watches no
// process until Watch, WatchTree or WatchWith is called.
//
// Start returns an error wrapping ErrPermission where the kernel refuses to
// load eBPF programs, and one wrapping ErrNotSupported where it lacks what
// the probe needs.
func Start(opts *Options) (*Probe, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	maxProcs, err := limit("MaxProcesses", o.MaxProcesses, defaultMaxProcesses)
	if err != nil {
		return nil, err
	}
	maxCounters, err := limit("MaxCounters", o.MaxCounters, defaultMaxCounters)
	if err != nil {
		return nil, err
	}

	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK. Where the
	// limit cannot be raised, creating the maps reports the problem.
	_ = rlimit.RemoveMemlock()

	p := &Probe{}
	ok := false
	defer func() {
		if !ok {
			p.release()
		}
	}()

	p.ns = currentPidNS()

	if p.watched, err = newMap("shmlane_watched", ebpf.Hash, 4, 4, maxProcs); err != nil {
		return nil, err
	}
	if p.counts, err = newMap("shmlane_counts", ebpf.Hash, 8, 8, maxCounters); err != nil {
		return nil, err
	}
	if p.stats, err = newMap("shmlane_stats", ebpf.Array, 4, 8, statCount); err != nil {
		return nil, err
	}

	insns := sysEnterProgram(p.ns, p.watched.FD(), p.counts.FD(), p.stats.FD())
	if err := p.attach("shmlane_sysenter", "sys_enter", insns); err != nil {
		return nil, err
	}

	insns = execProgram(p.ns, p.watched.FD())
	if err := p.attach("shmlane_exec", "sched_process_exec", insns); err != nil {
		if errors.Is(err, ErrPermission) {
			return nil, err
		}
		p.execErr = err
	}

	// Following children and noticing exits need the kernel's task_struct
	// layout. Without it, Watch still works.
	if err := p.attachLifecycle(o.KernelTypes); err != nil {
		if errors.Is(err, ErrPermission) {
			return nil, err
		}
		p.treeErr = err
	}

	ok = true
	return p, nil
}

// attachLifecycle loads and attaches the fork and exit programs.
func (p *Probe) attachLifecycle(spec *btf.Spec) error {
	if spec == nil {
		var err error
		if spec, err = btf.LoadKernelSpec(); err != nil {
			return fmt.Errorf("load kernel BTF: %w: %w", ErrNotSupported, err)
		}
	}
	layout, err := findLayout(spec, p.ns)
	if err != nil {
		return fmt.Errorf("kernel BTF: %w: %w", ErrNotSupported, err)
	}
	nprogs, nlinks := len(p.progs), len(p.links)
	err = p.attach("shmlane_fork", "sched_process_fork",
		forkProgram(p.ns, layout, p.watched.FD(), p.stats.FD()))
	if err == nil {
		err = p.attach("shmlane_exit", "sched_process_exit",
			exitProgram(p.ns, layout, p.watched.FD()))
	}
	if err != nil {
		// Detach the fork program if the exit program failed: without
		// it, children would stay watched after they exit.
		for _, l := range p.links[nlinks:] {
			l.Close()
		}
		for _, prog := range p.progs[nprogs:] {
			prog.Close()
		}
		p.links, p.progs = p.links[:nlinks], p.progs[:nprogs]
	}
	return err
}

// attach loads a raw tracepoint program and attaches it to tracepoint.
func (p *Probe) attach(name, tracepoint string, insns asm.Instructions) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         name,
		Type:         ebpf.RawTracepoint,
		Instructions: insns,
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		return classify("load program "+name, err)
	}
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{
		Name:    tracepoint,
		Program: prog,
	})
	if err != nil {
		prog.Close()
		return classify("attach raw tracepoint "+tracepoint, err)
	}
	p.progs = append(p.progs, prog)
	p.links = append(p.links, l)
	return nil
}

func newMap(name string, typ ebpf.MapType, keySize, valueSize, entries uint32) (*ebpf.Map, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       name,
		Type:       typ,
		KeySize:    keySize,
		ValueSize:  valueSize,
		MaxEntries: entries,
	})
	if err != nil {
		return nil, classify("create map "+name, err)
	}
	return m, nil
}

// limit checks a size option and applies its default.
func limit(name string, v, def int) (uint32, error) {
	switch {
	case v == 0:
		return uint32(def), nil
	case v < 0 || v > math.MaxInt32:
		return 0, fmt.Errorf("%s must be between 0 and %d: %s=%d", name, math.MaxInt32, name, v)
	}
	return uint32(v), nil
}

// classify wraps err, from the bpf syscall, with ErrPermission or
// ErrNotSupported where one of them is the cause.
func classify(op string, err error) error {
	switch {
	case errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%s: %w: %w", op, ErrPermission, err)
	case errors.Is(err, ebpf.ErrNotSupported),
		errors.Is(err, syscall.ENOSYS), // no bpf syscall
		errors.Is(err, syscall.ENOENT): // no such tracepoint
		return fmt.Errorf("%s: %w: %w", op, ErrNotSupported, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Watch starts counting the system calls of the process pid, every thread
// of it, until Unwatch or until it exits. Its children are not watched.
// It is WatchWith(pid, nil).
func (p *Probe) Watch(pid int) error {
	return p.WatchWith(pid, nil)
}

// WatchTree is Watch, and also watches every child the process forks from
// now on, and their children in turn. It is WatchWith(pid,
// &WatchOptions{Children: true}).
func (p *Probe) WatchTree(pid int) error {
	return p.WatchWith(pid, &WatchOptions{Children: true})
}

// WatchWith starts watching the process pid as opts say. A nil opts is the
// zero WatchOptions. Watching a process that is watched already replaces
// its options. It returns an error wrapping syscall.ESRCH if there is no
// process pid.
func (p *Probe) WatchWith(pid int, opts *WatchOptions) error {
	var o WatchOptions
	if opts != nil {
		o = *opts
	}
	if err := checkPID(pid); err != nil {
		return err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return fmt.Errorf("watch pid %d: %w", pid, ErrClosed)
	}
	flags := uint32(flagCount)
	if o.Children {
		if p.treeErr != nil {
			return fmt.Errorf("watch pid %d with its children: %w", pid, p.treeErr)
		}
		flags |= flagFollow
	}
	if o.AfterExec {
		if p.execErr != nil {
			return fmt.Errorf("watch pid %d after its execve: %w", pid, p.execErr)
		}
		flags = flags&^flagCount | flagExec
	}
	// A pid that names no process now would count whichever process
	// is given it next.
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("watch pid %d: %w", pid, err)
	}
	if err := p.watched.Put(uint32(pid), flags); err != nil {
		return fmt.Errorf("watch pid %d: %w", pid, err)
	}
	return nil
}

// Unwatch stops counting the system calls of the process pid; what was
// counted stays until Reset. Children that WatchTree found stay watched.
// Unwatch of a process that is not watched does nothing.
func (p *Probe) Unwatch(pid int) error {
	if err := checkPID(pid); err != nil {
		return err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return fmt.Errorf("unwatch pid %d: %w", pid, ErrClosed)
	}
	err := p.watched.Delete(uint32(pid))
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unwatch pid %d: %w", pid, err)
	}
	return nil
}

func checkPID(pid int) error {
	if pid <= 0 || pid > math.MaxInt32 {
		return fmt.Errorf("pid must be positive and fit in 32 bits: pid=%d", pid)
	}
	return nil
}

// Watched returns the pids watched now, in increasing order: children found
// by WatchTree and processes waiting for an execve included, processes that
// have exited left out.
func (p *Probe) Watched() ([]int, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, fmt.Errorf("list watched: %w", ErrClosed)
	}
	var (
		pids  []int
		tgid  uint32
		flags uint32
	)
	iter := p.watched.Iterate()
	for iter.Next(&tgid, &flags) {
		pids = append(pids, int(tgid))
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("list watched: %w", err)
	}
	// An entry deleted during the walk can make it restart and yield
	// entries twice.
	slices.Sort(pids)
	return slices.Compact(pids), nil
}

// Snapshot returns the counts since Start or the last Reset. Counts go on
// while it reads them, so a snapshot taken while watched processes run is
// not one instant.
func (p *Probe) Snapshot() (Counts, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return Counts{}, fmt.Errorf("snapshot: %w", ErrClosed)
	}
	c := Counts{ByPID: make(map[int]ProcessCounts)}
	var (
		key countKey
		n   uint64
	)
	iter := p.counts.Iterate()
	for iter.Next(&key, &n) {
		if n == 0 {
			continue
		}
		pc, ok := c.ByPID[int(key.Tgid)]
		if !ok {
			pc.BySyscall = make(map[int]uint64)
		}
		// The kernel passes the number as a long; -1 and the like
		// arrive truncated to 32 bits.
		pc.BySyscall[int(int32(key.Nr))] = n
		c.ByPID[int(key.Tgid)] = pc
	}
	if err := iter.Err(); err != nil {
		return Counts{}, fmt.Errorf("snapshot: read counts: %w", err)
	}
	for pid, pc := range c.ByPID {
		pc.Total = 0
		for _, n := range pc.BySyscall {
			pc.Total += n
		}
		c.ByPID[pid] = pc
	}
	var err error
	if c.Dropped, err = p.stat(statDropped); err != nil {
		return Counts{}, err
	}
	if c.LostChildren, err = p.stat(statLostChildren); err != nil {
		return Counts{}, err
	}
	return c, nil
}

func (p *Probe) stat(idx uint32) (uint64, error) {
	var v uint64
	if err := p.stats.Lookup(idx, &v); err != nil {
		return 0, fmt.Errorf("snapshot: read stats: %w", err)
	}
	return v, nil
}

// Reset sets every count to zero. The set of watched processes is kept.
func (p *Probe) Reset() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("reset: %w", ErrClosed)
	}
	var (
		key  countKey
		n    uint64
		keys []countKey
	)
	iter := p.counts.Iterate()
	for iter.Next(&key, &n) {
		keys = append(keys, key)
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("reset: read counts: %w", err)
	}
	for _, k := range keys {
		if err := p.counts.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("reset: %w", err)
		}
	}
	for i := uint32(0); i < statCount; i++ {
		if err := p.stats.Put(i, uint64(0)); err != nil {
			return fmt.Errorf("reset: %w", err)
		}
	}
	return nil
}

// Close detaches the probe and frees its kernel resources. Later calls of
// Close return nil; other methods return an error wrapping ErrClosed.
func (p *Probe) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return p.release()
}

// release closes the links first, so that no program runs on a closed map's
// behalf, then the programs and the maps.
func (p *Probe) release() error {
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	for _, prog := range p.progs {
		errs = append(errs, prog.Close())
	}
	for _, m := range []*ebpf.Map{p.watched, p.counts, p.stats} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	p.links, p.progs = nil, nil
	p.watched, p.counts, p.stats = nil, nil, nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close probe: %w", err)
	}
	return nil
}

// initPidNSIno is the inode number of the initial pid namespace
// (PROC_PID_INIT_INO).
const initPidNSIno = 0xEFFFFFFC

// currentPidNS returns the pid namespace of the calling process, or nil if
// it is the initial one.
func currentPidNS() *pidNS {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/pid", &st); err != nil {
		// Without /proc, assume the initial namespace: a process that
		// cannot see its own namespace is rarely in another one.
		return nil
	}
	if st.Ino == initPidNSIno {
		return nil
	}
	// st_dev is in the new_encode_dev form; the helper compares it with
	// the kernel's dev_t, MKDEV(major, minor) = major<<20 | minor.
	dev := uint64(st.Dev)
	major := (dev>>8)&0xfff | (dev>>32)&^0xfff
	minor := dev&0xff | (dev>>12)&^0xff
	return &pidNS{dev: major<<20 | minor, ino: st.Ino}
}

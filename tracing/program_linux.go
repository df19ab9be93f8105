package tracing

import (
	"fmt"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// The probe is four raw tracepoint programs over three maps.
//
//	watched  hash   tgid (u32) -> flags (u32)          written by Watch, Unwatch,
//	                                                   the fork, exec and exit programs
//	counts   hash   {tgid u32, nr u32} -> calls (u64)  written by the sys_enter program
//	stats    array  statDropped, statLostChildren -> u64
//
// sys_enter(regs, nr): if the caller's tgid is in watched with flagCount,
// add one to counts[{tgid, nr}], inserting the entry on the first call; if
// counts is full, add one to stats[statDropped].
//
// sched_process_exec(task, old_pid, bprm): if the caller's tgid is in
// watched with flagExec, replace flagExec with flagCount. The tracepoint
// fires once the new program image is in place and the other threads are
// gone, before the program's first instruction.
//
// sched_process_fork(parent, child): if the parent's tgid is in watched with
// flagFollow and the child is a new process rather than a thread, watch the
// child with the parent's flags. The tracepoint fires before the child is
// first woken, so none of its system calls is missed.
//
// sched_process_exit(task): when the last thread of a watched process exits
// (task->signal->live has dropped to zero), remove it from watched, so that a
// later process given the same pid is not counted. Its counts stay.
//
// Ids are the kernel's global ones unless the probe runs in a pid namespace
// other than the initial one; then they are the ids seen in that namespace,
// and only processes whose own namespace it is are counted.

const (
	flagCount  = 1 << 0 // count the process's system calls
	flagFollow = 1 << 1 // watch its children, with the same flags
	flagExec   = 1 << 2 // set flagCount at the next execve
)

// Indexes into the stats array.
const (
	statDropped      = 0
	statLostChildren = 1
	statCount        = 2
)

// countKey is the key of the counts map, laid out as the programs write it.
type countKey struct {
	Tgid uint32
	Nr   uint32
}

// Flags of bpf_map_update_elem.
const (
	bpfNoExist = 1 // BPF_NOEXIST
)

// eexist is -EEXIST, as a helper returns it.
const eexist = -17

// Stack slots, as offsets from the frame pointer R10.
const (
	slotKey     = -8  // u32 tgid, or a countKey (tgid at -8, nr at -4)
	slotNr      = -4  // countKey.Nr
	slotValue   = -16 // u64 value for a map update
	slotStat    = -24 // u32 index into stats
	slotNSInfo  = -32 // struct bpf_pidns_info {u32 pid; u32 tgid;}
	slotNSTgid  = -28 // bpf_pidns_info.tgid
	slotRead    = -40 // u64 destination of bpf_probe_read_kernel
	slotRead32  = -48 // u32 destination of bpf_probe_read_kernel
	labelReturn = "return"
)

// pidNS identifies the pid namespace the probe counts in, as
// bpf_get_ns_current_pid_tgid takes it. A nil *pidNS means the initial one.
type pidNS struct {
	dev uint64 // device of the nsfs inode, in the kernel's dev_t encoding
	ino uint64 // inode number of the namespace
}

// kernelLayout holds the offsets, read from kernel BTF, that the fork and
// exit programs need. All are byte offsets.
type kernelLayout struct {
	taskTgid      int32 // task_struct.tgid (pid_t)
	taskSignal    int32 // task_struct.signal (struct signal_struct *)
	signalLive    int32 // signal_struct.live.counter (int)
	taskThreadPid int32 // task_struct.thread_pid (struct pid *), pid namespaces only
	pidLevel      int32 // pid.level (unsigned int)
	pidNumbers    int32 // pid.numbers (struct upid[])
	upidSize      int32 // sizeof(struct upid)
	upidNr        int32 // upid.nr (int)
	upidNS        int32 // upid.ns (struct pid_namespace *)
	pidNSInum     int32 // pid_namespace.ns.inum (unsigned int)
}

// findLayout reads the offsets the fork and exit programs need from spec.
// The pid namespace fields are needed only when ns is not nil.
func findLayout(spec *btf.Spec, ns *pidNS) (*kernelLayout, error) {
	type field struct {
		dst  *int32
		size int // -1: any
		st   string
		path []string
	}
	var l kernelLayout
	fields := []field{
		{&l.taskTgid, 4, "task_struct", []string{"tgid"}},
		{&l.taskSignal, 8, "task_struct", []string{"signal"}},
		{&l.signalLive, 4, "signal_struct", []string{"live", "counter"}},
	}
	if ns != nil {
		fields = append(fields,
			field{&l.taskThreadPid, 8, "task_struct", []string{"thread_pid"}},
			field{&l.pidLevel, 4, "pid", []string{"level"}},
			field{&l.pidNumbers, -1, "pid", []string{"numbers"}},
			field{&l.upidNr, 4, "upid", []string{"nr"}},
			field{&l.upidNS, 8, "upid", []string{"ns"}},
			field{&l.pidNSInum, 4, "pid_namespace", []string{"ns", "inum"}},
		)
	}
	for _, f := range fields {
		off, size, err := memberOffset(spec, f.st, f.path...)
		if err != nil {
			return nil, err
		}
		if f.size >= 0 && size != f.size {
			return nil, fmt.Errorf("struct %s member %v has size %d, want %d", f.st, f.path, size, f.size)
		}
		*f.dst = int32(off)
	}
	if ns != nil {
		var upid *btf.Struct
		if err := spec.TypeByName("upid", &upid); err != nil {
			return nil, fmt.Errorf("find struct upid: %w", err)
		}
		l.upidSize = int32(upid.Size)
	}
	return &l, nil
}

// memberOffset returns the byte offset and size of the member reached by path
// in the struct named name, looking into anonymous structs and unions on the
// way.
func memberOffset(spec *btf.Spec, name string, path ...string) (uint32, int, error) {
	var s *btf.Struct
	if err := spec.TypeByName(name, &s); err != nil {
		return 0, 0, fmt.Errorf("find struct %s: %w", name, err)
	}
	var typ btf.Type = s
	var off uint32
	for _, field := range path {
		m, moff, ok := findMember(typ, field)
		if !ok {
			return 0, 0, fmt.Errorf("struct %s has no member %v", name, path)
		}
		if m.BitfieldSize != 0 {
			return 0, 0, fmt.Errorf("struct %s member %v is a bitfield", name, path)
		}
		off += moff
		typ = m.Type
	}
	size, err := btf.Sizeof(typ)
	if err != nil {
		return 0, 0, fmt.Errorf("size of struct %s member %v: %w", name, path, err)
	}
	return off, size, nil
}

// findMember finds the member named name of the struct or union typ,
// descending into anonymous members, and returns it with its byte offset.
func findMember(typ btf.Type, name string) (btf.Member, uint32, bool) {
	var members []btf.Member
	switch t := btf.UnderlyingType(typ).(type) {
	case *btf.Struct:
		members = t.Members
	case *btf.Union:
		members = t.Members
	default:
		return btf.Member{}, 0, false
	}
	for _, m := range members {
		if m.Offset%8 != 0 {
			continue
		}
		if m.Name == name {
			return m, m.Offset.Bytes(), true
		}
		if m.Name == "" {
			if inner, off, ok := findMember(m.Type, name); ok {
				return inner, m.Offset.Bytes() + off, true
			}
		}
	}
	return btf.Member{}, 0, false
}

// loadCurrentTgid leaves the tgid of the current task in R0, or jumps to
// labelReturn if the task is outside the namespace ns. Clobbers R1-R5.
func loadCurrentTgid(ns *pidNS) asm.Instructions {
	if ns == nil {
		return asm.Instructions{
			asm.FnGetCurrentPidTgid.Call(),
			asm.RSh.Imm(asm.R0, 32),
		}
	}
	return asm.Instructions{
		asm.LoadImm(asm.R1, int64(ns.dev), asm.DWord),
		asm.LoadImm(asm.R2, int64(ns.ino), asm.DWord),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, slotNSInfo),
		asm.Mov.Imm(asm.R4, 8),
		asm.FnGetNsCurrentPidTgid.Call(),
		asm.JNE.Imm(asm.R0, 0, labelReturn),
		asm.LoadMem(asm.R0, asm.RFP, slotNSTgid, asm.Word),
	}
}

// probeRead copies size bytes from the kernel address in R3 to the stack
// slot, jumping to labelReturn if the read fails. Clobbers R0-R5.
func probeRead(slot int16, size int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, int32(slot)),
		asm.Mov.Imm(asm.R2, size),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, labelReturn),
	}
}

// incStat adds one to stats[idx]. Clobbers R0-R5.
func incStat(statsFD int, idx int32) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, slotStat, int64(idx), asm.Word),
		asm.LoadMapPtr(asm.R1, statsFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, slotStat),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, labelReturn),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
	}
}

// lookupWatched stores the tgid in R0 at slotKey and looks it up in watched,
// jumping to labelReturn if it is absent. Leaves a pointer to the flags in
// R0. Clobbers R1-R5.
func lookupWatched(watchedFD int) asm.Instructions {
	return asm.Instructions{
		asm.StoreMem(asm.RFP, slotKey, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, watchedFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, slotKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, labelReturn),
	}
}

// returnZero ends a program; it carries labelReturn.
func returnZero() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, 0).WithSymbol(labelReturn),
		asm.Return(),
	}
}

// sysEnterProgram counts the calls of watched processes. Its context is the
// arguments of the raw tracepoint sys_enter: args[0] is the struct pt_regs
// pointer, args[1] the system call number.
func sysEnterProgram(ns *pidNS, watchedFD, countsFD, statsFD int) asm.Instructions {
	var insns asm.Instructions
	insns = append(insns, asm.Mov.Reg(asm.R6, asm.R1)) // R6 = ctx
	insns = append(insns, loadCurrentTgid(ns)...)
	insns = append(insns, lookupWatched(watchedFD)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.And.Imm(asm.R1, flagCount),
		asm.JEq.Imm(asm.R1, 0, labelReturn),
	)

	// countKey{tgid, nr}: the tgid is at slotKey already.
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R6, 8, asm.DWord), // args[1]
		asm.StoreMem(asm.RFP, slotNr, asm.R1, asm.Word),
	)
	lookupCount := asm.Instructions{
		asm.LoadMapPtr(asm.R1, countsFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, slotKey),
		asm.FnMapLookupElem.Call(),
	}
	insns = append(insns, lookupCount...)
	insns = append(insns,
		asm.JEq.Imm(asm.R0, 0, "insert"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Ja.Label(labelReturn),

		// First call of this pair: insert 1, unless another CPU inserted it
		// in between, in which case add to that.
		asm.Mov.Imm(asm.R1, 1).WithSymbol("insert"),
		asm.StoreMem(asm.RFP, slotValue, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, countsFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, slotKey),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, slotValue),
		asm.Mov.Imm(asm.R4, bpfNoExist),
		asm.FnMapUpdateElem.Call(),
		asm.JEq.Imm(asm.R0, 0, labelReturn),
	)
	insns = append(insns, lookupCount...)
	insns = append(insns,
		asm.JEq.Imm(asm.R0, 0, "dropped"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Ja.Label(labelReturn),
	)
	dropped := incStat(statsFD, statDropped)
	dropped[0] = dropped[0].WithSymbol("dropped")
	insns = append(insns, dropped...)
	return append(insns, returnZero()...)
}

// execProgram starts counting for processes that wait for an execve. Its
// context is the arguments of the raw tracepoint sched_process_exec: args[0]
// is the task_struct (the current task).
func execProgram(ns *pidNS, watchedFD int) asm.Instructions {
	var insns asm.Instructions
	insns = append(insns, loadCurrentTgid(ns)...)
	insns = append(insns, lookupWatched(watchedFD)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.And.Imm(asm.R2, flagExec),
		asm.JEq.Imm(asm.R2, 0, labelReturn),
		asm.And.Imm(asm.R1, ^flagExec),
		asm.Or.Imm(asm.R1, flagCount),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.Word),
	)
	return append(insns, returnZero()...)
}

// forkProgram watches the children of processes watched with flagFollow. Its
// context is the arguments of the raw tracepoint sched_process_fork: args[0]
// is the parent task_struct (the current task), args[1] the child.
func forkProgram(ns *pidNS, l *kernelLayout, watchedFD, statsFD int) asm.Instructions {
	var insns asm.Instructions
	insns = append(insns, asm.Mov.Reg(asm.R6, asm.R1)) // R6 = ctx
	insns = append(insns, loadCurrentTgid(ns)...)
	insns = append(insns, lookupWatched(watchedFD)...)
	insns = append(insns,
		asm.LoadMem(asm.R7, asm.R0, 0, asm.Word), // R7 = parent's flags
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.And.Imm(asm.R1, flagFollow),
		asm.JEq.Imm(asm.R1, 0, labelReturn),

		// A thread shares its parent's tgid; only a new process is watched.
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.Mov.Reg(asm.R8, asm.R0), // R8 = parent's global tgid
		asm.LoadMem(asm.R3, asm.R6, 8, asm.DWord),
		asm.Add.Imm(asm.R3, l.taskTgid),
	)
	insns = append(insns, probeRead(slotRead32, 4)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, slotRead32, asm.Word), // child's global tgid
		asm.JEq.Reg(asm.R1, asm.R8, labelReturn),
		asm.StoreMem(asm.RFP, slotKey, asm.R1, asm.Word),
	)
	if ns != nil {
		// The child is the leader of its thread group, so the id of its
		// struct pid at the deepest level, in its own namespace, is its
		// tgid there. Use it if that namespace is ns.
		insns = append(insns,
			asm.LoadMem(asm.R3, asm.R6, 8, asm.DWord),
			asm.Add.Imm(asm.R3, l.taskThreadPid),
		)
		insns = append(insns, probeRead(slotRead, 8)...)
		insns = append(insns,
			asm.LoadMem(asm.R8, asm.RFP, slotRead, asm.DWord), // R8 = child->thread_pid
			asm.JEq.Imm(asm.R8, 0, labelReturn),
			asm.Mov.Reg(asm.R3, asm.R8),
			asm.Add.Imm(asm.R3, l.pidLevel),
		)
		insns = append(insns, probeRead(slotRead32, 4)...)
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, slotRead32, asm.Word), // level
			asm.JGT.Imm(asm.R1, 64, labelReturn),
			asm.Mul.Imm(asm.R1, l.upidSize),
			asm.Add.Imm(asm.R1, l.pidNumbers),
			asm.Add.Reg(asm.R8, asm.R1), // R8 = &pid->numbers[level]
			asm.Mov.Reg(asm.R3, asm.R8),
			asm.Add.Imm(asm.R3, l.upidNS),
		)
		insns = append(insns, probeRead(slotRead, 8)...)
		insns = append(insns,
			asm.LoadMem(asm.R3, asm.RFP, slotRead, asm.DWord), // numbers[level].ns
			asm.JEq.Imm(asm.R3, 0, labelReturn),
			asm.Add.Imm(asm.R3, l.pidNSInum),
		)
		insns = append(insns, probeRead(slotRead32, 4)...)
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, slotRead32, asm.Word),
			asm.LoadImm(asm.R2, int64(ns.ino), asm.DWord),
			asm.JNE.Reg(asm.R1, asm.R2, labelReturn),
			asm.Mov.Reg(asm.R3, asm.R8),
			asm.Add.Imm(asm.R3, l.upidNr),
		)
		insns = append(insns, probeRead(slotKey, 4)...)
	}
	insns = append(insns,
		asm.StoreMem(asm.RFP, slotValue, asm.R7, asm.Word),
		asm.LoadMapPtr(asm.R1, watchedFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, slotKey),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, slotValue),
		asm.Mov.Imm(asm.R4, bpfNoExist),
		asm.FnMapUpdateElem.Call(),
		asm.JEq.Imm(asm.R0, 0, labelReturn),
		asm.JEq.Imm(asm.R0, eexist, labelReturn), // watched already
	)
	insns = append(insns, incStat(statsFD, statLostChildren)...)
	return append(insns, returnZero()...)
}

// exitProgram stops watching a process when its last thread exits. Its
// context is the arguments of the raw tracepoint sched_process_exit: args[0]
// is the exiting task_struct (the current task). do_exit has decremented
// task->signal->live before the tracepoint fires.
func exitProgram(ns *pidNS, l *kernelLayout, watchedFD int) asm.Instructions {
	var insns asm.Instructions
	insns = append(insns, asm.Mov.Reg(asm.R6, asm.R1)) // R6 = ctx
	insns = append(insns, loadCurrentTgid(ns)...)
	insns = append(insns, lookupWatched(watchedFD)...)
	insns = append(insns,
		asm.LoadMem(asm.R3, asm.R6, 0, asm.DWord),
		asm.Add.Imm(asm.R3, l.taskSignal),
	)
	insns = append(insns, probeRead(slotRead, 8)...)
	insns = append(insns,
		asm.LoadMem(asm.R3, asm.RFP, slotRead, asm.DWord),
		asm.JEq.Imm(asm.R3, 0, labelReturn),
		asm.Add.Imm(asm.R3, l.signalLive),
	)
	insns = append(insns, probeRead(slotRead32, 4)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, slotRead32, asm.Word),
		asm.JNE.Imm(asm.R1, 0, labelReturn), // other threads live on
		asm.LoadMapPtr(asm.R1, watchedFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, slotKey),
		asm.FnMapDeleteElem.Call(),
	)
	return append(insns, returnZero()...)
}

// Package bench holds shmlane's go test benchmarks: the ring between two
// processes and within one, and a pipe between two processes for
// comparison, at several message sizes. Run them with
// "go test -bench . ./bench/"; "shmlane bench" compares more transports.
// The fallback package's own BenchmarkTransport and BenchmarkRawSyscall
// compare each fallback transport with the bare system calls beneath it.
//
// Run as root (or with CAP_BPF and CAP_PERFMON), the cross-process
// benchmarks also report system calls per message on each side, counted
// by an eBPF probe over the b.Loop loop (not the draining and closing that
// follow): producer-syscalls/op for this process, the test binary, all of
// its threads, less the probe's own bpf(2) calls; consumer-syscalls/op for
// the child. TestSyscallFree checks the ring's promise of next to none.
package bench

// Package tracing counts the system calls made by chosen processes, with an
// eBPF program on the raw tracepoint sys_enter that is written in Go with
// cilium/ebpf's asm package, so that shmlane's "no system call on the hot
// path" can be measured rather than assumed.
package tracing

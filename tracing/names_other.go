//go:build !amd64 && !arm64

package tracing

// syscallNames is empty on architectures without a table: SyscallName
// gives "syscall_N" for every number.
var syscallNames [0]string

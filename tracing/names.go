package tracing

import "strconv"

//go:generate go run ./internal/mksysnames -arch amd64 -o names_amd64.go
//go:generate go run ./internal/mksysnames -arch arm64 -o names_arm64.go

// SyscallName returns the name of the Linux system call numbered nr on the
// architecture the program was built for ("getppid" for 110 on amd64), or
// "syscall_N" for a number it does not know.
func SyscallName(nr int) string {
	if nr >= 0 && nr < len(syscallNames) && syscallNames[nr] != "" {
		return syscallNames[nr]
	}
	return "syscall_" + strconv.Itoa(nr)
}

package tracing

import (
	"runtime"
	"testing"
)

func TestSyscallName(t *testing.T) {
	known := map[string][]struct {
		nr   int
		want string
	}{
		"amd64": {{0, "read"}, {1, "write"}, {110, "getppid"}, {202, "futex"}, {231, "exit_group"}, {435, "clone3"}},
		"arm64": {{63, "read"}, {64, "write"}, {98, "futex"}, {173, "getppid"}, {94, "exit_group"}, {435, "clone3"}},
	}
	for _, tc := range known[runtime.GOARCH] {
		if got := SyscallName(tc.nr); got != tc.want {
			t.Errorf("SyscallName(%d) = %q, want %q", tc.nr, got, tc.want)
		}
	}
	for _, tc := range []struct {
		nr   int
		want string
	}{
		{-1, "syscall_-1"},
		{100000, "syscall_100000"},
	} {
		if got := SyscallName(tc.nr); got != tc.want {
			t.Errorf("SyscallName(%d) = %q, want %q", tc.nr, got, tc.want)
		}
	}
}

func TestSyscallNamesComplete(t *testing.T) {
	min := map[string]int{"amd64": 370, "arm64": 300}[runtime.GOARCH]
	named := 0
	for _, name := range syscallNames {
		if name != "" {
			named++
		}
	}
	if named < min {
		t.Errorf("%d system calls named on %s, want at least %d", named, runtime.GOARCH, min)
	}
}

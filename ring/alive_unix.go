//go:build unix

package ring

import "golang.org/x/sys/unix"

// alive reports whether process pid exists (kill(pid, 0); EPERM means it
// exists but belongs to someone else). Slow path only.
func alive(pid uint32) bool {
	if pid == 0 {
		return false
	}
	return unix.Kill(int(pid), 0) != unix.ESRCH
}

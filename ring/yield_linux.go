package ring

import "golang.org/x/sys/unix"

// yield gives the CPU to another runnable thread (sched_yield). It is
// called only on the slow path of a wait, after a thousand polls.
func yield() { unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }

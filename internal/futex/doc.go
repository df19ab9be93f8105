// Package futex waits on and wakes 32-bit words that live in memory shared
// between processes (shared futexes, without FUTEX_PRIVATE_FLAG), with
// timeouts and spurious wakeups handled.
package futex

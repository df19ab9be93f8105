//go:build !linux

package futex

import (
	"sync/atomic"
	"time"
)

// Wait is not supported on this platform.
func Wait(word *atomic.Uint32, val uint32, timeout time.Duration) error { return ErrNotSupported }

// Wake is not supported on this platform.
func Wake(word *atomic.Uint32, n int) (int, error) { return 0, ErrNotSupported }

// ThreadWaits has no effect on this platform.
var ThreadWaits int32 = 16

// Parking reports false: there is no io_uring on this platform.
func Parking() bool { return false }

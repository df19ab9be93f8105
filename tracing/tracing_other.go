//go:build !linux

package tracing

import (
	"fmt"
	"runtime"
)

// Probe counts the system calls of the processes it watches. The probe needs
// Linux: on this platform Start always fails.
type Probe struct{}

// Start returns an error wrapping ErrNotSupported: the probe needs Linux.
func Start(opts *Options) (*Probe, error) {
	return nil, fmt.Errorf("start probe on %s: %w", runtime.GOOS, ErrNotSupported)
}

// Watch returns an error wrapping ErrNotSupported.
func (p *Probe) Watch(pid int) error { return errUnsupported() }

// WatchTree returns an error wrapping ErrNotSupported.
func (p *Probe) WatchTree(pid int) error { return errUnsupported() }

// WatchWith returns an error wrapping ErrNotSupported.
func (p *Probe) WatchWith(pid int, opts *WatchOptions) error { return errUnsupported() }

// Unwatch returns an error wrapping ErrNotSupported.
func (p *Probe) Unwatch(pid int) error { return errUnsupported() }

// Watched returns an error wrapping ErrNotSupported.
func (p *Probe) Watched() ([]int, error) { return nil, errUnsupported() }

// Snapshot returns an error wrapping ErrNotSupported.
func (p *Probe) Snapshot() (Counts, error) { return Counts{}, errUnsupported() }

// Reset returns an error wrapping ErrNotSupported.
func (p *Probe) Reset() error { return errUnsupported() }

// Close does nothing.
func (p *Probe) Close() error { return nil }

func errUnsupported() error {
	return fmt.Errorf("system-call probe on %s: %w", runtime.GOOS, ErrNotSupported)
}

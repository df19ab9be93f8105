//go:build !linux

package ring

// WatchPeer is not supported on this platform.
func (e *endpoint) WatchPeer(pid int) error { return ErrNotSupported }

func (e *endpoint) stopWatch() {}

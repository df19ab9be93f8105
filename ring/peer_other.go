//go:build !linux

package ring

import "os"

// WatchPeer is not supported on this platform.
func (e *endpoint) WatchPeer(pid int) error { return ErrNotSupported }

// WatchPeerPidfd is not supported on this platform.
func (e *endpoint) WatchPeerPidfd(pidfd *os.File) error { return ErrNotSupported }

func (e *endpoint) stopWatch() {}

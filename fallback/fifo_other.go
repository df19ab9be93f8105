//go:build !linux

package fallback

import (
	"context"
	"fmt"
	"runtime"
)

// CreateFIFO is not supported on this platform.
func CreateFIFO(path string) error {
	return fmt.Errorf("create fifo: %w: GOOS=%s", ErrNotSupported, runtime.GOOS)
}

// OpenFIFOSender is not supported on this platform: the receiver's
// end-of-file rule relies on Linux's poll(2) semantics for FIFOs.
func OpenFIFOSender(ctx context.Context, path string) (*FIFOSender, error) {
	return nil, fmt.Errorf("open fifo sender: %w: GOOS=%s", ErrNotSupported, runtime.GOOS)
}

// OpenFIFOReceiver is not supported on this platform.
func OpenFIFOReceiver(ctx context.Context, path string) (*FIFOReceiver, error) {
	return nil, fmt.Errorf("open fifo receiver: %w: GOOS=%s", ErrNotSupported, runtime.GOOS)
}

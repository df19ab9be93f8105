//go:build !linux

package fallback

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"
)

// ListenUnix is not supported on this platform: the default transport is
// SOCK_SEQPACKET, which is Linux's.
func ListenUnix(path string, opts *UnixOptions) (*UnixListener, error) {
	return nil, fmt.Errorf("listen unix: %w: GOOS=%s", ErrNotSupported, runtime.GOOS)
}

// Accept is not supported on this platform.
func (l *UnixListener) Accept() (*UnixConn, error) {
	return nil, fmt.Errorf("unix accept: %w: GOOS=%s", ErrNotSupported, runtime.GOOS)
}

// SetDeadline is not supported on this platform.
func (l *UnixListener) SetDeadline(t time.Time) error {
	return fmt.Errorf("unix listener: %w: GOOS=%s", ErrNotSupported, runtime.GOOS)
}

// Close is not supported on this platform.
func (l *UnixListener) Close() error {
	return fmt.Errorf("unix listener: %w: GOOS=%s", ErrNotSupported, runtime.GOOS)
}

// DialUnix is not supported on this platform.
func DialUnix(ctx context.Context, path string, opts *UnixOptions) (*UnixConn, error) {
	return nil, fmt.Errorf("dial unix: %w: GOOS=%s", ErrNotSupported, runtime.GOOS)
}

// NewUnixPair is not supported on this platform.
func NewUnixPair(opts *UnixOptions) (*UnixConn, *UnixConn, error) {
	return nil, nil, fmt.Errorf("new unix pair: %w: GOOS=%s", ErrNotSupported, runtime.GOOS)
}

// NewUnixConn is not supported on this platform.
func NewUnixConn(f *os.File) (*UnixConn, error) {
	return nil, fmt.Errorf("new unix conn: %w: GOOS=%s", ErrNotSupported, runtime.GOOS)
}

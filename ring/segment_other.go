//go:build !linux

package ring

import "os"

// Create is not supported on this platform: it needs memfd and futexes.
func Create(cfg *Config) (*Segment, error) { return nil, ErrNotSupported }

// Open is not supported on this platform.
func Open(f *os.File) (*Segment, error) { return nil, ErrNotSupported }

// OpenFd is not supported on this platform.
func OpenFd(fd int) (*Segment, error) { return nil, ErrNotSupported }

// File is not supported on this platform.
func (s *Segment) File() (*os.File, error) { return nil, ErrNotSupported }

func (s *Segment) unmap() {}

//go:build !linux

package ring

import "os"

// Create is not supported on this platform: it needs memfd and futexes.
func Create(cfg *Config) (*Segment, error) { return create(cfg, 0) }

// Open is not supported on this platform.
func Open(f *os.File) (*Segment, error) { return open(f, 0) }

// OpenFd is not supported on this platform.
func OpenFd(fd int) (*Segment, error) { return nil, ErrNotSupported }

func create(cfg *Config, features uint32) (*Segment, error) { return nil, ErrNotSupported }

func open(f *os.File, mpmc uint32) (*Segment, error) { return nil, ErrNotSupported }

// File is not supported on this platform.
func (s *Segment) File() (*os.File, error) { return nil, ErrNotSupported }

func (s *Segment) unmap() {}

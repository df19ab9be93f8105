//go:build !linux

package shmlane

import (
	"context"
	"errors"
	"testing"
)

func TestNotSupported(t *testing.T) {
	dir := t.TempDir()
	if _, err := Listen("x", &ListenOptions{RuntimeDir: dir}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Listen() = %v, want ErrNotSupported", err)
	}
	if _, err := Dial(context.Background(), "x", &DialOptions{RuntimeDir: dir}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Dial() = %v, want ErrNotSupported", err)
	}
	if _, err := Inspect(context.Background(), "x", &DialOptions{RuntimeDir: dir}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Inspect() = %v, want ErrNotSupported", err)
	}
}

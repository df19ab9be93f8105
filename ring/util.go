package ring

import (
	"errors"
	"fmt"
	"io"
	"os"
)

var (
	errEOF      = io.EOF
	errDeadline = os.ErrDeadlineExceeded
	selfPID     = os.Getpid()
)

func pid() int { return selfPID }

func isDeadline(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

func errShortBuffer(need, have int) error {
	return fmt.Errorf("%w: message is %d bytes, buffer %d", io.ErrShortBuffer, need, have)
}

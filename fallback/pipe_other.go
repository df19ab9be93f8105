//go:build !linux

package fallback

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

// adoptPipe accepts f only if it is already in the runtime's poller: this
// platform has no code to switch an inherited descriptor to non-blocking
// mode.
func adoptPipe(f *os.File, write bool) (*os.File, error) {
	if err := checkPipe(f); err != nil {
		return nil, err
	}
	if f.SetDeadline(time.Time{}) != nil {
		return nil, fmt.Errorf("%w: adopting a blocking pipe descriptor: GOOS=%s", ErrNotSupported, runtime.GOOS)
	}
	return f, nil
}

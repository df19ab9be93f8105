package futex

import "errors"

// ErrNotSupported is returned on platforms without futexes; on Linux it is
// never returned.
var ErrNotSupported = errors.New("futex: not supported on this platform")

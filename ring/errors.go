package ring

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/shmlane/shmlane/internal/layout"
)

// Errors returned by the ring. Match them with errors.Is.
var (
	// ErrCorrupt: a value read from the segment (an index, a record header,
	// a header field) is inconsistent. Shared memory is untrusted input;
	// the endpoint stops at the first such value and keeps returning it.
	ErrCorrupt = layout.ErrCorrupt
	// ErrTooLarge: a message is larger than the ring's MaxMessage. It
	// matches syscall.EMSGSIZE, as the fallbacks' does.
	ErrTooLarge = fmt.Errorf("shmlane: message too large for the ring: %w", syscall.EMSGSIZE)
	// ErrClosed: the endpoint was closed by this process. It matches
	// os.ErrClosed.
	ErrClosed = fmt.Errorf("shmlane: endpoint closed: %w", os.ErrClosed)
	// ErrPeerClosed: the consumer closed its side, so nothing sent now
	// would be read. It matches io.ErrClosedPipe.
	ErrPeerClosed = fmt.Errorf("shmlane: peer closed the ring: %w", io.ErrClosedPipe)
	// ErrPeerGone: the peer process exited (see WatchPeer). A consumer
	// gets it only after everything the peer committed was received.
	ErrPeerGone = errors.New("shmlane: peer process is gone")
	// ErrPending: a Reserve or Peek is outstanding and must be finished
	// (Commit/Abort, Release) before the call.
	ErrPending = errors.New("shmlane: a reservation or peek is outstanding")
	// ErrNoPending: Commit, Abort or Release without a matching Reserve or
	// Peek.
	ErrNoPending = errors.New("shmlane: nothing reserved or peeked")
	// ErrRoleTaken: another process or handle already attached as the
	// producer (or consumer) of the segment.
	ErrRoleTaken = errors.New("shmlane: ring side already attached")
	// ErrNotSupported: the platform has no memfd, mmap or futex.
	ErrNotSupported = errors.New("shmlane: shared-memory rings are not supported on this platform")
)

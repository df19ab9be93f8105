//go:build !linux

package shmlane

// Other platforms lack SOCK_SEQPACKET with SO_PEERCRED, memfds and pidfds:
// Listen, Dial and Inspect fail with an error matching ErrNotSupported.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"time"
)

var selfPID = os.Getpid()

// supported fails: see the file comment.
func supported(op string) error { return notSupported(op) }

var errLocked = errors.New("lock held")

func notSupported(op string) error {
	return fmt.Errorf("%s: %w: GOOS=%s", op, ErrNotSupported, runtime.GOOS)
}

func peerCred(c *net.UnixConn) (Cred, error) { return Cred{}, notSupported("read peer credentials") }

func writePacket(c *net.UnixConn, b []byte, files ...*os.File) error {
	return notSupported("send handshake")
}

func readPacket(c *net.UnixConn, maxFDs int) (hello, string, []*os.File, error) {
	return hello{}, "", nil, notSupported("receive handshake")
}

func listenSocket(path string, mode os.FileMode) (*net.UnixListener, error) {
	return nil, notSupported("listen")
}

func lockName(path string) (*os.File, error) { return nil, notSupported("lock name") }

func reopenReadOnly(f *os.File) (*os.File, error) { return nil, notSupported("reopen segment") }

type pidWatch struct{}

func watchPID(pid int) (*pidWatch, error) { return nil, notSupported("watch pid") }

func peerProcess(c *net.UnixConn, cred Cred) (*pidWatch, error) {
	return nil, notSupported("watch the peer's process")
}

func (w *pidWatch) dup() (*pidWatch, error) { return w, nil }

func (w *pidWatch) watchRing(e interface{ WatchPeerPidfd(*os.File) error }) error {
	return notSupported("watch the peer's process")
}

func (w *pidWatch) exited(wait time.Duration) bool { return true }

func (w *pidWatch) close() {}

func ensureDir(dir string) error { return notSupported("check runtime directory") }

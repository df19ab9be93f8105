package shmlane

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shmlane/shmlane/ring"
)

// DefaultHandshakeTimeout bounds a listener's wait for a dialer's messages
// when ListenOptions.HandshakeTimeout is zero.
const DefaultHandshakeTimeout = 5 * time.Second

// ListenOptions configure a Listener. The zero value (or nil) is the
// default.
type ListenOptions struct {
	// Capacity is the size in bytes of the ring in each direction: a power
	// of two in [ring.MinCapacity, ring.MaxCapacity]. Both directions get
	// the larger of this and the dialer's DialOptions.Capacity. Zero
	// means no preference: ring.DefaultCapacity (1 MiB) if the dialer has
	// none either.
	Capacity int
	// ForceFallback makes every connection use the socket instead of
	// shared memory. Zero (false) uses shared memory whenever it can.
	ForceFallback bool
	// AllowUIDs lists the user ids, besides this process's effective uid,
	// whose processes may connect. A dialer with any other uid is refused
	// (ErrPeerRefused). Nil or empty: only the effective uid.
	AllowUIDs []int
	// SocketMode is the permission of the socket file. Connecting to a
	// unix socket needs write permission on it; the credential check
	// applies whatever the mode. Zero means 0600, or 0666 when AllowUIDs
	// lists another uid. The runtime directory must also be searchable
	// by the peers (the default directories are 0700, see Listen).
	SocketMode os.FileMode
	// SpinTime is passed to ring.Options for this side's ring endpoints:
	// how long a side busy-waits before it sleeps. Zero means
	// ring.DefaultSpinTime; negative never spins.
	SpinTime time.Duration
	// RuntimeDir is the directory of the socket and lock files. Empty
	// means the default described at Listen.
	RuntimeDir string
	// HandshakeTimeout bounds each wait for a dialer's message during the
	// handshake. Zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
}

// DialOptions configure Dial and Inspect. The zero value (or nil) is the
// default.
type DialOptions struct {
	// Capacity is this side's preference for the size in bytes of the
	// ring in each direction (see ListenOptions.Capacity). Zero means no
	// preference.
	Capacity int
	// ForceFallback asks the listener to use the socket instead of shared
	// memory. Zero (false) uses shared memory whenever it can.
	ForceFallback bool
	// AllowUIDs lists the user ids, besides this process's effective uid,
	// that the listener may run as. A listener with any other uid is
	// refused (ErrPeerRefused) before anything is sent to it. Nil or
	// empty: only the effective uid.
	AllowUIDs []int
	// SpinTime is passed to ring.Options for this side's ring endpoints.
	// Zero means ring.DefaultSpinTime; negative never spins.
	SpinTime time.Duration
	// RuntimeDir is the directory where the listener's socket is. Empty
	// means the default described at Listen.
	RuntimeDir string
	// WaitForListener makes Dial retry, every few milliseconds, while
	// nothing listens on the name yet (no socket, or a stale one), until
	// the context ends. False: Dial fails at once with ErrNoListener.
	WaitForListener bool
}

// checkCapacity validates a capacity preference (0: none).
func checkCapacity(c int) error {
	if c == 0 {
		return nil
	}
	if c < ring.MinCapacity || c > ring.MaxCapacity || c&(c-1) != 0 {
		return fmt.Errorf("capacity must be 0 or a power of two in [%d, %d]: capacity=%d", ring.MinCapacity, ring.MaxCapacity, c)
	}
	return nil
}

// negotiate returns the capacity of both rings: the larger preference.
func negotiate(a, b int) int {
	if c := max(a, b); c != 0 {
		return c
	}
	return ring.DefaultCapacity
}

// allowList is the set of uids a side accepts as its peer.
type allowList struct {
	self int
	uids []int
}

func newAllowList(uids []int) (allowList, error) {
	for _, u := range uids {
		if u < 0 || u > 1<<32-2 {
			return allowList{}, fmt.Errorf("allowed uid must be in [0, %d]: uid=%d", uint32(1<<32-2), u)
		}
	}
	return allowList{self: os.Geteuid(), uids: slices.Clone(uids)}, nil
}

func (a allowList) allows(uid int) bool { return uid == a.self || slices.Contains(a.uids, uid) }

// others reports whether the list admits a uid other than this process's.
func (a allowList) others() bool {
	for _, u := range a.uids {
		if u != a.self {
			return true
		}
	}
	return false
}

func (a allowList) String() string {
	s := []string{strconv.Itoa(a.self)}
	for _, u := range a.uids {
		if u != a.self {
			s = append(s, strconv.Itoa(u))
		}
	}
	return "[" + strings.Join(s, " ") + "]"
}

func (o *ListenOptions) spin() *ring.Options { return &ring.Options{SpinTime: o.SpinTime} }
func (o *DialOptions) spin() *ring.Options   { return &ring.Options{SpinTime: o.SpinTime} }

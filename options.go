package shmlane

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shmlane/shmlane/internal/layout"
	"github.com/shmlane/shmlane/ring"
)

// DefaultHandshakeTimeout bounds a handshake when
// ListenOptions.HandshakeTimeout or DialOptions.HandshakeTimeout is zero.
const DefaultHandshakeTimeout = 5 * time.Second

// Listener limits, when the ListenOptions leave them zero. A per-uid limit
// defaults to half the total, so that one user's processes cannot take
// every slot from the others'.
const (
	// DefaultMaxHandshakes bounds the dialers (and inspectors) that a
	// listener has admitted and not yet handed to Accept: each costs a
	// goroutine and a descriptor, and a ring connection waiting for
	// Accept its segments too.
	DefaultMaxHandshakes = 4096
	// DefaultMaxConns bounds a listener's connections, from the start of
	// their handshake to their Close.
	DefaultMaxConns = 16384
	// DefaultMaxCapacity is the largest ring capacity a dialer can obtain
	// from a listener whose MaxCapacity is zero (unless the listener's own
	// Capacity is larger).
	DefaultMaxCapacity = 16 << 20
)

// Out-of-band lane sizes (ListenOptions.OOBCapacity, DialOptions.OOBCapacity).
const (
	// DefaultOOBCapacity is the size in bytes of each direction's
	// out-of-band lane when neither side states one.
	DefaultOOBCapacity = 4096
	// NoOOB, as either side's OOBCapacity, makes a connection without an
	// out-of-band lane: SendUrgent and Flush then fail with an error
	// matching ErrNotSupported (ErrNoLane).
	NoOOB = -1
)

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
	// HandshakeTimeout bounds each dialer's (or inspector's) handshake,
	// from the accepted socket to the completed connection. Zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxCapacity caps the ring capacity a dialer may ask for: the
	// negotiated capacity (the larger preference) is cut to it. Zero
	// means the larger of Capacity and DefaultMaxCapacity (16 MiB). It
	// must not be smaller than Capacity.
	MaxCapacity int
	// MaxHandshakes bounds the sockets admitted and not yet taken by
	// Accept: handshakes in progress, inspectors being answered, and
	// completed connections waiting for Accept. A dialer beyond it is
	// refused at once with ErrListenerBusy. Zero means
	// DefaultMaxHandshakes. MaxHandshakesPerUID bounds those of one uid;
	// zero means MaxHandshakes/2.
	MaxHandshakes, MaxHandshakesPerUID int
	// MaxConns bounds the connections that exist at once, from the start
	// of their handshake until they are closed; a dialer beyond it is
	// refused with ErrListenerBusy. Zero means DefaultMaxConns.
	// MaxConnsPerUID bounds those of one uid; zero means MaxConns/2.
	MaxConns, MaxConnsPerUID int
	// RequireSharedMemory makes a connection that would fall back to the
	// socket fail instead, with an error matching ErrNoSharedMemory that
	// says why, on both sides (Accept reports it). ForceFallback and
	// RequireSharedMemory together are an error.
	RequireSharedMemory bool
	// OOBCapacity is this side's preference for the size in bytes of the
	// out-of-band lane of each direction (Conn.SendUrgent, Conn.Flush): a
	// power of two in [4 KiB, 1 MiB]. Both directions get the
	// larger of this and the dialer's DialOptions.OOBCapacity, or no lane
	// at all if either side says NoOOB. Zero means no preference:
	// DefaultOOBCapacity (4 KiB) if the dialer has none either. In
	// shared-memory mode the lane is a second ring of that size in each
	// segment; in fallback mode it is a socket whose send buffer is set to
	// that size (the kernel counts some overhead per message in it).
	OOBCapacity int
	// FallbackOOBCheckEvery is how often, in fallback mode, this side's
	// receiver looks at the out-of-band channel while data messages are
	// queued: before every Nth data message it delivers (zero means
	// DefaultFallbackOOBCheckEvery, 16). It also looks whenever the data
	// channel is empty, before reporting the end of the stream, and before
	// delivering a data message that the peer sent after an urgent message
	// or a flush that has not been read yet, so that nothing the peer sent
	// after SendUrgent or Flush ever comes before it, whatever N. Each look
	// costs a system call. At 1, urgent messages and flushes take effect
	// as promptly as in shared-memory mode (before the next data message),
	// for a second system call per message; at N, one sent while a backlog
	// is queued takes effect within N-1 data messages of that backlog (a
	// flush may let up to N-1 of the messages it covers through), for one
	// system call per N messages. Shared-memory mode ignores it: there the
	// look is one load that stays in the cache.
	FallbackOOBCheckEvery int
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
	// OOBCapacity is this side's preference for the size in bytes of the
	// out-of-band lanes (see ListenOptions.OOBCapacity): 0 for none,
	// NoOOB for no lane at all, else a power of two in
	// [4 KiB, 1 MiB]. Dial refuses a listener that announces a
	// lane smaller than this, or one when this is NoOOB.
	OOBCapacity int
	// FallbackOOBCheckEvery is how often this side's receiver looks at the
	// out-of-band channel in fallback mode (see
	// ListenOptions.FallbackOOBCheckEvery). Zero means
	// DefaultFallbackOOBCheckEvery.
	FallbackOOBCheckEvery int
	// HandshakeTimeout bounds the handshake once the socket is connected,
	// whatever the context (which may end it sooner). Zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// RequireSharedMemory makes Dial fail with an error matching
	// ErrNoSharedMemory, saying why, instead of falling back to the
	// socket. ForceFallback and RequireSharedMemory together are an
	// error.
	RequireSharedMemory bool
}

// sideOptions are the options that both sides have, for the checks they
// share.
type sideOptions struct {
	capacity, oob, every int
	uids                 []int
	timeout              time.Duration
	force, require       bool
}

func (o *ListenOptions) side() sideOptions {
	return sideOptions{o.Capacity, o.OOBCapacity, o.FallbackOOBCheckEvery, o.AllowUIDs, o.HandshakeTimeout, o.ForceFallback, o.RequireSharedMemory}
}

func (o *DialOptions) side() sideOptions {
	return sideOptions{o.Capacity, o.OOBCapacity, o.FallbackOOBCheckEvery, o.AllowUIDs, o.HandshakeTimeout, o.ForceFallback, o.RequireSharedMemory}
}

// check checks the options both sides have and returns the allow-list;
// the error joins every problem found.
func (s sideOptions) check() (allowList, error) {
	errs := []error{checkCapacity(s.capacity), checkOOBCapacity(s.oob), checkOOBCheckEvery(s.every)}
	if s.timeout < 0 {
		errs = append(errs, fmt.Errorf("handshake timeout must not be negative: %v", s.timeout))
	}
	if s.force && s.require {
		errs = append(errs, fmt.Errorf("ForceFallback and RequireSharedMemory exclude each other"))
	}
	allow, err := newAllowList(s.uids)
	return allow, errors.Join(append(errs, err)...)
}

// fill checks the options that only a listener has and fills in the
// defaults.
func (o *ListenOptions) fill() error {
	var errs []error
	if err := checkCapacity(o.MaxCapacity); err != nil {
		errs = append(errs, fmt.Errorf("max %w", err))
	} else if o.MaxCapacity != 0 && o.MaxCapacity < o.Capacity {
		errs = append(errs, fmt.Errorf("max capacity must not be smaller than capacity: maxcapacity=%d capacity=%d", o.MaxCapacity, o.Capacity))
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"MaxHandshakes", o.MaxHandshakes}, {"MaxHandshakesPerUID", o.MaxHandshakesPerUID}, {"MaxConns", o.MaxConns}, {"MaxConnsPerUID", o.MaxConnsPerUID}} {
		if n.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative: %d", n.name, n.v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.MaxCapacity == 0 {
		o.MaxCapacity = max(o.Capacity, DefaultMaxCapacity)
	}
	if o.MaxHandshakes == 0 {
		o.MaxHandshakes = DefaultMaxHandshakes
	}
	if o.MaxHandshakesPerUID == 0 {
		o.MaxHandshakesPerUID = max(o.MaxHandshakes/2, 1)
	}
	if o.MaxConns == 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.MaxConnsPerUID == 0 {
		o.MaxConnsPerUID = max(o.MaxConns/2, 1)
	}
	return nil
}

// handshakeTimeout is HandshakeTimeout with its default.
func (o *DialOptions) handshakeTimeout() time.Duration {
	if o.HandshakeTimeout == 0 {
		return DefaultHandshakeTimeout
	}
	return o.HandshakeTimeout
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

// checkOOBCapacity validates an out-of-band lane preference (0: none,
// NoOOB: no lane).
func checkOOBCapacity(c int) error {
	if c == 0 || c == NoOOB {
		return nil
	}
	if c < layout.MinOOBCapacity || c > layout.MaxOOBCapacity || c&(c-1) != 0 {
		return fmt.Errorf("out-of-band capacity must be 0, NoOOB (-1) or a power of two in [%d, %d]: oobcapacity=%d", layout.MinOOBCapacity, layout.MaxOOBCapacity, c)
	}
	return nil
}

// checkOOBCheckEvery validates a FallbackOOBCheckEvery.
func checkOOBCheckEvery(n int) error {
	if n < 0 {
		return fmt.Errorf("fallback out-of-band check interval must not be negative: every=%d", n)
	}
	return nil
}

// negotiateOOB returns the size of both out-of-band lanes, 0 for none.
func negotiateOOB(a, b int) int {
	if a == NoOOB || b == NoOOB {
		return 0
	}
	if c := max(a, b); c != 0 {
		return c
	}
	return DefaultOOBCapacity
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

// DefaultFallbackOOBCheckEvery is the default of
// ListenOptions.FallbackOOBCheckEvery and DialOptions.FallbackOOBCheckEvery.
const DefaultFallbackOOBCheckEvery = 16

// checkEvery is the receiver's out-of-band check interval in fallback mode.
func checkEvery(n int) int {
	if n == 0 {
		return DefaultFallbackOOBCheckEvery
	}
	return n
}

package shmlane

import (
	"errors"

	"github.com/shmlane/shmlane/ring"
	"github.com/shmlane/shmlane/transport"
)

// Sender is the sending side of a transport: the message contract that
// the ring's Producer, every fallback transport and Conn share, declared
// in package transport.
type Sender = transport.Sender

// Receiver is the receiving side of a transport (see Sender).
type Receiver = transport.Receiver

// Conn honours the contract; the ring's endpoints and the fallbacks say
// so in their packages.
var _ transport.Conn = (*Conn)(nil)

// Errors returned by this package. Match them with errors.Is. Those that
// the ring defines are the ring's own values, so that an error from a
// ring.Producer or ring.Consumer used directly matches them too; a Conn in
// fallback mode returns errors that match both these and the fallback
// package's corresponding sentinels.
var (
	// ErrBadName: a name breaks the naming rule (1 to MaxNameLen bytes of
	// [A-Za-z0-9._-], no leading dot, no "..").
	ErrBadName = errors.New("shmlane: invalid name")
	// ErrNameInUse: a live listener already holds the name.
	ErrNameInUse = errors.New("shmlane: name in use by a live listener")
	// ErrNoListener: nothing listens on the name: the socket does not
	// exist, or it is left over from a listener that died.
	ErrNoListener = errors.New("shmlane: no listener")
	// ErrPeerRefused: the peer's credentials are not allowed by this side
	// (its uid is not in the allow-list), or the peer refused this
	// process's. The error names the uid.
	ErrPeerRefused = errors.New("shmlane: peer refused")
	// ErrHandshake: the rendezvous failed: the peer spoke another
	// protocol or version, sent something malformed, or hung up. An
	// Accept that returns it (or ErrPeerRefused) leaves the Listener
	// open.
	ErrHandshake = errors.New("shmlane: handshake failed")
	// ErrListenerBusy: the listener refused a connection because one of
	// its limits was reached (ListenOptions.MaxHandshakes, MaxConns, or
	// their per-uid forms); retrying later may succeed. It comes with
	// ErrHandshake.
	ErrListenerBusy = errors.New("shmlane: listener busy")
	// ErrNoSharedMemory: the connection would have fallen back to the
	// socket, and a side requires shared memory (RequireSharedMemory in
	// ListenOptions or DialOptions). The error says why shared memory
	// cannot be used. It comes with ErrHandshake.
	ErrNoSharedMemory = errors.New("shmlane: shared memory required and unavailable")

	// ErrTooLarge: a message is longer than MaxMessage. Nothing was sent.
	ErrTooLarge = ring.ErrTooLarge
	// ErrClosed: the endpoint or listener was closed by this process. It
	// matches os.ErrClosed.
	ErrClosed = ring.ErrClosed
	// ErrPeerClosed: the peer closed its receiving side, so nothing sent
	// now would be read. It matches io.ErrClosedPipe.
	ErrPeerClosed = ring.ErrPeerClosed
	// ErrPeerGone: the peer process exited without closing. A receiver
	// gets it only after everything the peer committed was delivered.
	ErrPeerGone = ring.ErrPeerGone
	// ErrCorrupt: the peer wrote something inconsistent into shared
	// memory or onto the socket.
	ErrCorrupt = ring.ErrCorrupt
	// ErrNotSupported: the platform has no unix sockets with credentials,
	// memfds or futexes, or (ErrNoLane) the connection has no
	// out-of-band lane.
	ErrNotSupported = ring.ErrNotSupported
	// ErrNoLane: SendUrgent or Flush on a connection without an
	// out-of-band lane (one side asked for NoOOB). It matches
	// ErrNotSupported.
	ErrNoLane = ring.ErrNoLane
	// ErrLaneFull: SendUrgent found the out-of-band lane full: the peer
	// has not yet received the urgent messages ahead of it. SendUrgent
	// never waits; the caller may retry.
	ErrLaneFull = ring.ErrLaneFull
)

// transportError is an error of a fallback transport that also matches
// the sentinel of this package it corresponds to, keeping the transport's
// message.
type transportError struct {
	err  error // the transport's error
	kind error // a sentinel of this package
}

func (e *transportError) Error() string   { return e.err.Error() }
func (e *transportError) Unwrap() []error { return []error{e.err, e.kind} }

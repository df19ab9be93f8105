package fallback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shmlane/shmlane/transport"
)

// Every transport honours the message contract.
var (
	_ transport.Sender   = (*PipeSender)(nil)
	_ transport.Receiver = (*PipeReceiver)(nil)
	_ transport.Sender   = (*FIFOSender)(nil)
	_ transport.Receiver = (*FIFOReceiver)(nil)
	_ transport.Conn     = (*UnixConn)(nil)
	_ transport.Conn     = (*TCPConn)(nil)
)

// Errors returned by the transports. Match them with errors.Is.
var (
	// ErrTooLarge: a message is larger than MaxMessage. Nothing was sent.
	// It matches syscall.EMSGSIZE, as the ring's does.
	ErrTooLarge = fmt.Errorf("shmlane: message too large for the transport: %w", syscall.EMSGSIZE)
	// ErrCorrupt: the peer sent a frame header announcing more than
	// MaxMessage, a packet of the wrong form, or closed in the middle of
	// a frame. The receiver stops there and keeps returning the error.
	ErrCorrupt = errors.New("shmlane: corrupt stream")
	// ErrBroken: a deadline or a context cut a message short after part
	// of its frame was written, so the stream cannot carry another
	// message; every later Send returns it. Close the endpoint.
	ErrBroken = errors.New("shmlane: stream broken by a partly written message")
	// ErrClosed: the endpoint was closed by this process. It matches
	// os.ErrClosed.
	ErrClosed = fmt.Errorf("shmlane: endpoint closed: %w", os.ErrClosed)
	// ErrPeerClosed: the peer closed its end (EPIPE on a send, or a
	// connection reset), so nothing sent now would be read. It matches
	// io.ErrClosedPipe.
	ErrPeerClosed = fmt.Errorf("shmlane: peer closed the transport: %w", io.ErrClosedPipe)
	// ErrNotSupported: the transport does not exist on this platform.
	ErrNotSupported = errors.New("shmlane: transport not supported on this platform")
)

// conn is what every transport runs over: *os.File (pipes and FIFOs, in
// the runtime's poller) or a *net.UnixConn or *net.TCPConn.
type conn interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	Close() error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

type side int

const (
	readSide side = iota
	writeSide
)

// longAgo is the deadline that interrupts a blocked call when a context
// is done.
var longAgo = time.Unix(1, 0)

// endpoint holds what both directions of a transport share: the
// descriptor, the closed flag and the deadline.
type endpoint struct {
	c         conn
	transport string
	max       int
	closed    atomic.Bool

	mu       sync.Mutex // guards the fields below
	deadline time.Time  // set by SetDeadline
	gen      [2]uint64  // per side: counts context watches
	watching [2]bool    // per side: a context watch is armed
	cut      [2]bool    // per side: a done context set the deadline to longAgo
}

func (e *endpoint) init(c conn, transport string, max int) {
	e.c, e.transport, e.max = c, transport, max
}

// MaxMessage is the largest message the transport carries.
func (e *endpoint) MaxMessage() int { return e.max }

// Transport names the mechanism: "pipe", "fifo", "unix" or "tcp".
func (e *endpoint) Transport() string { return e.transport }

// SetDeadline sets the time after which a call that has to wait for the
// kernel fails with an error wrapping os.ErrDeadlineExceeded; a message
// already buffered is still delivered. The zero time means no deadline.
// A call already waiting sees the new deadline.
func (e *endpoint) SetDeadline(t time.Time) error {
	if e.closed.Load() {
		return ErrClosed
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.deadline = t
	for s := range e.cut {
		if e.cut[s] {
			continue // a context interrupts this side; unwatch restores t
		}
		if err := e.setSide(side(s), t); err != nil {
			if e.closed.Load() {
				return ErrClosed
			}
			return fmt.Errorf("%s set deadline: %w", e.transport, err)
		}
	}
	return nil
}

func (e *endpoint) setSide(s side, t time.Time) error {
	if s == readSide {
		return e.c.SetReadDeadline(t)
	}
	return e.c.SetWriteDeadline(t)
}

// Close closes the endpoint: a waiting call returns ErrClosed, a receiving
// peer gets io.EOF after what was sent, a sending peer gets ErrPeerClosed.
// Close is idempotent; later calls on the endpoint return ErrClosed.
func (e *endpoint) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	if err := e.c.Close(); err != nil {
		return fmt.Errorf("%s close: %w", e.transport, err)
	}
	return nil
}

// watch arms ctx to interrupt the blocking calls of side s: when ctx is
// done, the side's deadline is set to longAgo, which wakes a call blocked
// in the runtime's poller. The caller holds the side's lock and calls
// unwatch with the returned stop func. A nil stop means ctx can never be
// done. No goroutine runs unless ctx is done.
func (e *endpoint) watch(ctx context.Context, s side) (stop func() bool, err error) {
	if ctx == nil || ctx.Done() == nil {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.gen[s]++
	gen := e.gen[s]
	e.watching[s] = true
	e.mu.Unlock()
	return context.AfterFunc(ctx, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		// A late run after unwatch, or one from an earlier call, finds
		// watching false or a newer gen and does nothing.
		if e.watching[s] && e.gen[s] == gen && !e.cut[s] {
			e.cut[s] = true
			e.setSide(s, longAgo)
		}
	}), nil
}

// unwatch disarms what watch armed, restores the deadline if ctx cut it,
// and turns the deadline error that ctx caused into ctx's error.
func (e *endpoint) unwatch(ctx context.Context, s side, stop func() bool, op string, err error) error {
	if stop == nil {
		return err
	}
	stop()
	e.mu.Lock()
	e.watching[s] = false
	cut := e.cut[s]
	if cut {
		e.cut[s] = false
		e.setSide(s, e.deadline)
	}
	e.mu.Unlock()
	if !cut || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if errors.Is(err, ErrBroken) {
		return fmt.Errorf("%s %s: %w: %w", e.transport, op, ctx.Err(), ErrBroken)
	}
	return fmt.Errorf("%s %s: %w", e.transport, op, ctx.Err())
}

// ioErr describes a failed read or write.
func (e *endpoint) ioErr(op string, err error) error {
	if e.closed.Load() {
		return ErrClosed
	}
	return fmt.Errorf("%s %s: %w", e.transport, op, peerClosed(err))
}

// peerClosed marks the errors that mean the peer closed with ErrPeerClosed.
func peerClosed(err error) error {
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%w: %w", ErrPeerClosed, err)
	}
	return err
}

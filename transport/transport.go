// Package transport declares the message contract that every shmlane
// transport honours: the ring's endpoints (package ring), the pipe, FIFO,
// unix-socket and TCP fallbacks (package fallback) and the connections
// that Listen and Dial make (package shmlane, which calls these types
// shmlane.Sender and shmlane.Receiver). Each of those packages states that
// its types implement the contract (var _ transport.Sender = …), and
// internal/conformance is the test suite they all pass unchanged.
//
// The contract speaks standard errors, so that code written against it
// needs no transport's sentinels: os.ErrClosed after Close, io.EOF once
// the peer closed and everything was delivered, io.ErrClosedPipe when the
// peer closed its receiving side, io.ErrShortBuffer, os.ErrDeadlineExceeded,
// the context's errors, and syscall.EMSGSIZE for a message over MaxMessage.
package transport

import (
	"context"
	"time"
)

// Sender is the sending side of a transport.
type Sender interface {
	// Send sends msg as one message, its boundaries kept, waiting while
	// the transport is full. A message longer than MaxMessage gives an
	// error matching syscall.EMSGSIZE and sends nothing; once the peer
	// has closed its receiving side, Send fails with an error matching
	// io.ErrClosedPipe.
	Send(msg []byte) error
	// SendContext is Send with a context that can cancel the wait; it
	// then returns the context's error.
	SendContext(ctx context.Context, msg []byte) error
	// SetDeadline bounds the waits of later and current calls; the zero
	// time means none. A call past it fails with an error wrapping
	// os.ErrDeadlineExceeded.
	SetDeadline(t time.Time) error
	// MaxMessage is the largest message Send accepts.
	MaxMessage() int
	// Transport names the mechanism underneath: "ring", "unix", "pipe"…
	Transport() string
	// Close is idempotent and unblocks waiting calls; later calls fail
	// with an error matching os.ErrClosed.
	Close() error
}

// Receiver is the receiving side of a transport.
type Receiver interface {
	// Recv waits for the next message and copies it into buf, returning
	// its length. If buf is too short it returns the length needed and an
	// error wrapping io.ErrShortBuffer, and the message stays queued.
	// Once the peer has closed and everything it sent was received, Recv
	// returns io.EOF.
	Recv(buf []byte) (int, error)
	// RecvContext is Recv with a context that can cancel the wait; it
	// then returns the context's error and nothing is lost.
	RecvContext(ctx context.Context, buf []byte) (int, error)
	// SetDeadline bounds the waits of later and current calls, as
	// Sender's does.
	SetDeadline(t time.Time) error
	// MaxMessage is the largest message the peer may send: a buffer this
	// long always suffices.
	MaxMessage() int
	// Transport names the mechanism underneath.
	Transport() string
	// Close is idempotent and unblocks waiting calls; later calls fail
	// with an error matching os.ErrClosed.
	Close() error
}

// Conn is a duplex transport: both sides in one value (a unix socket, a
// TCP connection, a connection made by Listen and Dial).
type Conn interface {
	Sender
	Receiver
}

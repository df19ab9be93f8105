package shmlane

import (
	"context"
	"sync"
	"time"

	"github.com/shmlane/shmlane/ring"
)

// Cred are the credentials of a peer process as the kernel recorded them
// (SO_PEERCRED). PID is 0 when the peer is in a pid namespace this process
// cannot see.
type Cred struct {
	PID, UID, GID int
}

// Conn is one end of a connection made by Listen and Dial: a duplex
// message channel to the peer process. In shared-memory mode it is two
// rings, each in its own sealed memfd segment: this side's Producer on
// the segment it sends through, its Consumer on the one it receives from.
// In fallback mode it is the rendezvous socket itself (SOCK_SEQPACKET, one
// packet per message, see FellBack). Both directions have the same
// MaxMessage.
//
// Each direction also has an out-of-band lane (unless a side asked for
// NoOOB): SendUrgent, Flush and RecvMsg. In shared-memory mode it is a
// second, small ring in each segment, which the receiver checks with one
// load before each data message. In fallback mode it is a second socket,
// which the receiver reads every FallbackOOBCheckEvery data messages
// (default 16), when the data socket is empty, and before a data message
// that the peer sent after an urgent message or flush not yet read, and
// waits on together with the data socket.
//
// Concurrency: one goroutine may send while another receives; calls in the
// same direction are serialised, except that SendUrgent and Flush do not
// wait for a Send in progress. SetDeadline and Close may be called from
// any goroutine; Close unblocks waiting calls.
type Conn struct {
	id     uint64
	peer   Cred
	reason string // why the connection fell back; "" in shared-memory mode
	link   link   // the rings (*ringLink) or the socket (*fbConn)

	closeOnce sync.Once
	onClose   func(*Conn) // set by the Listener that made the connection
}

// link is what a Conn runs over, chosen at the handshake: a pair of rings
// (ringLink, conn_ring.go) or the rendezvous socket (fbConn,
// conn_socket.go). A nil ctx means no context: the call waits only for
// the deadline and Close.
type link interface {
	send(ctx context.Context, msg []byte) error
	sendBatch(ctx context.Context, msgs [][]byte) (int, error)
	sendUrgent(msg []byte) error
	flush() error
	recv(ctx context.Context, buf []byte) (int, error)
	recvMsg(ctx context.Context, buf []byte) (n int, urgent bool, err error)
	recvBatch(ctx context.Context, max int, fn func(msg []byte, urgent bool)) (int, error)
	setDeadline(t time.Time) error
	// limits are the largest data and urgent messages.
	limits() (maxMessage, maxUrgent int)
	transport() string
	// stats fills in the counters of st (all but Transport).
	stats(st *Stats)
	close() error
}

var (
	_ link = (*ringLink)(nil)
	_ link = (*fbConn)(nil)
)

// Send sends msg as one message, waiting while the peer's ring (or socket
// buffer) is full. It fails with an error matching ErrTooLarge if msg is
// longer than MaxMessage, ErrPeerClosed once the peer has closed,
// ErrPeerGone once the peer process has exited, and ErrClosed after Close.
func (c *Conn) Send(msg []byte) error { return c.link.send(nil, msg) }

// SendContext is Send with a context that can cancel the wait; it then
// returns the context's error.
func (c *Conn) SendContext(ctx context.Context, msg []byte) error {
	if ctx == nil {
		ctx = context.Background()
	}
	return c.link.send(ctx, msg)
}

// SendBatch sends msgs in order, each as one message, as Send would one
// after the other, and returns how many were sent: on error, the messages
// before that count were sent and the rest were not. In shared-memory mode
// the messages are published in groups (ring.Producer.SendBatch: one
// index store and at most one wake per group of up to 64 KiB, waiting for
// room between groups), which is cheaper than a Send each; in fallback
// mode each message is one packet, as with Send.
func (c *Conn) SendBatch(msgs [][]byte) (int, error) {
	return c.SendBatchContext(context.Background(), msgs)
}

// SendBatchContext is SendBatch with a context that can cancel the wait;
// it then returns how many messages were sent and the context's error.
func (c *Conn) SendBatchContext(ctx context.Context, msgs [][]byte) (int, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	return c.link.sendBatch(ctx, msgs)
}

// Recv waits for the next message and copies it into buf, returning its
// length. If buf is too short, it returns the message's length and an
// error wrapping io.ErrShortBuffer, and the message stays queued; a buffer
// of MaxMessage bytes always suffices. Once the peer has closed and
// everything it sent was received, Recv returns io.EOF; if the peer
// process died instead, it returns ErrPeerGone after everything the peer
// committed was received.
//
// Recv also delivers the peer's urgent messages (SendUrgent), ahead of the
// data queued before them, without marking them: use RecvMsg to tell them
// apart. Data that a flush of the peer discarded is never delivered.
func (c *Conn) Recv(buf []byte) (int, error) { return c.link.recv(nil, buf) }

// RecvContext is Recv with a context that can cancel the wait; it then
// returns the context's error and nothing is lost.
func (c *Conn) RecvContext(ctx context.Context, buf []byte) (int, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	return c.link.recv(ctx, buf)
}

// SendUrgent sends msg on the connection's out-of-band lane: the peer
// receives it before every data message it has not yet received (RecvMsg
// reports it as urgent; Recv delivers it first too, without saying so).
// Urgent messages keep their order among themselves. SendUrgent never
// waits: if the lane is full (the peer has not received the urgent
// messages ahead), it fails with an error matching ErrLaneFull. A message
// longer than MaxUrgent gives ErrTooLarge; a connection without a lane
// (NoOOB) gives ErrNoLane, which matches ErrNotSupported. It may be called
// while another goroutine is blocked in Send.
func (c *Conn) SendUrgent(msg []byte) error { return c.link.sendUrgent(msg) }

// Flush tells the peer to discard, without delivering them, the data
// messages this side sent before the call that the peer has not yet
// received; data sent after Flush is delivered as usual, and urgent
// messages are never discarded. It may be called while another goroutine
// is blocked in Send, which the space it frees lets go on. A connection
// without a lane gives ErrNoLane (matching ErrNotSupported).
//
// In shared-memory mode Flush never waits. In fallback mode a flush is a
// message on the lane: if the lane is full it waits until the kernel
// reports room (once the peer has received about three quarters of the
// urgent messages queued there), the deadline set with SetDeadline passes
// or Close; the data messages that another goroutine sends meanwhile may
// be discarded too. The peer applies a flush when it next looks at the
// lane (see ListenOptions.FallbackOOBCheckEvery).
func (c *Conn) Flush() error { return c.link.flush() }

// RecvMsg is RecvContext that also reports whether the message came on
// the out-of-band lane (SendUrgent). Urgent messages come before every data
// message not yet received, and a flush from the peer is applied before
// the next data message is delivered (in fallback mode, within
// FallbackOOBCheckEvery messages of a backlog, and always before any data
// message the peer sent after it). If buf is too short for an urgent
// message, RecvMsg returns its length, urgent true and an error wrapping
// io.ErrShortBuffer, and the message stays first in line. A nil ctx means
// context.Background().
func (c *Conn) RecvMsg(ctx context.Context, buf []byte) (n int, urgent bool, err error) {
	if ctx == nil {
		ctx = context.Background()
	}
	return c.link.recvMsg(ctx, buf)
}

// RecvBatch waits for at least one message, then passes up to max of the
// messages already there (max <= 0: all of them) to fn in order, and
// returns how many fn saw. The slice passed to fn is valid only during
// the call, and fn must not call the connection's receive methods. In
// shared-memory mode the batch is freed with one store of the ring's
// consumer index (ring.Consumer.RecvBatch), which is cheaper than a Recv
// each; in fallback mode every batch is one message. Errors are Recv's.
func (c *Conn) RecvBatch(max int, fn func(msg []byte)) (int, error) {
	return c.RecvBatchMsg(context.Background(), max, func(msg []byte, _ bool) { fn(msg) })
}

// RecvBatchMsg is RecvBatch with a context that can cancel the wait (nil
// means context.Background()), whose callback also learns whether the
// message came on the out-of-band lane. An urgent message is passed alone
// (a batch of one), and an urgent message or a flush that arrives during a
// batch ends it before the next data message.
func (c *Conn) RecvBatchMsg(ctx context.Context, max int, fn func(msg []byte, urgent bool)) (int, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	return c.link.recvBatch(ctx, max, fn)
}

// MaxUrgent is the largest message SendUrgent accepts (0 without a lane):
// ring.MaxMessage of the lane's size, and in fallback mode at most what
// the lane socket and MaxMessage allow.
func (c *Conn) MaxUrgent() int {
	_, n := c.link.limits()
	return n
}

// SetDeadline sets the time after which a waiting Send or Recv, in either
// direction, fails with an error wrapping os.ErrDeadlineExceeded. The zero
// time means no deadline. A call already waiting sees the new deadline.
func (c *Conn) SetDeadline(t time.Time) error { return c.link.setDeadline(t) }

// MaxMessage is the largest data message Send accepts and the peer may send:
// ring.MaxMessage of the negotiated capacity in shared-memory mode,
// fallback.MaxPacketMessage-1 in fallback mode.
func (c *Conn) MaxMessage() int {
	n, _ := c.link.limits()
	return n
}

// Transport names the mechanism underneath: "ring" in shared-memory mode,
// the fallback transport's name ("unix") otherwise.
func (c *Conn) Transport() string { return c.link.transport() }

// FellBack reports whether the connection uses the socket instead of
// shared memory; FallbackReason says why.
func (c *Conn) FellBack() bool {
	_, ok := c.link.(*fbConn)
	return ok
}

// FallbackReason says why the connection fell back to the socket (forced
// by an option, namespaces that differ, a memfd the kernel refused, a peer
// that could not map the rings…); it is empty in shared-memory mode.
func (c *Conn) FallbackReason() string { return c.reason }

// PeerPID is the pid of the peer process, as SO_PEERCRED gave it (0 if it
// is in a pid namespace this process cannot see).
func (c *Conn) PeerPID() int { return c.peer.PID }

// PeerCred are the credentials of the peer process.
func (c *Conn) PeerCred() Cred { return c.peer }

// ID is the number the listener gave the connection, the same on both
// sides and in Inspect's report.
func (c *Conn) ID() uint64 { return c.id }

// Stats are a connection's counters.
type Stats struct {
	Transport string
	// This side's data messages and payload bytes (urgent ones apart).
	Sent, SentBytes, Received, ReceivedBytes uint64
	// OOBCapacity is the size of each direction's out-of-band lane, 0 for
	// none. UrgentSent and Flushes count this side's SendUrgent and Flush
	// calls; UrgentReceived the urgent messages it received; Discarded and
	// DiscardedBytes the peer's data messages (and payload bytes) that it
	// dropped because of the peer's flushes.
	OOBCapacity                uint64
	UrgentSent, UrgentReceived uint64
	Flushes                    uint64
	Discarded, DiscardedBytes  uint64
	// The rings, in shared-memory mode: Send is the ring this side
	// produces into, Recv the one it consumes from. Zero in fallback mode.
	Send, Recv ring.Stats
}

// Stats reads the connection's counters. In shared-memory mode they come
// from the segments and may lag an operation in progress.
func (c *Conn) Stats() Stats {
	st := Stats{Transport: c.Transport()}
	c.link.stats(&st)
	return st
}

// Close closes both directions: the peer receives everything sent so far,
// then io.EOF, and its later sends fail with ErrPeerClosed. A waiting call
// on this side returns ErrClosed, as do later calls. Close is idempotent.
//
// In fallback mode Close first queues an end marker on the socket, which is
// how the peer tells a close from a crash. It waits for room for it until
// the deadline set with SetDeadline, or at most one second if none is set,
// and does not send it while a Send is in progress. A peer that finds the
// socket closed without the marker reports io.EOF if this process is still
// alive and ErrPeerGone if it has exited.
func (c *Conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.link.close()
		if c.onClose != nil {
			c.onClose(c)
		}
	})
	return err
}

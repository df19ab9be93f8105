package fallback

import (
	"net"
	"os"
	"sync/atomic"
)

// UnixOptions configure a unix-socket endpoint. The zero value (or nil) is
// the default.
type UnixOptions struct {
	// Stream selects SOCK_STREAM with length-prefixed frames
	// (MaxStreamMessage) instead of the default SOCK_SEQPACKET, where the
	// kernel keeps each message's boundaries (MaxPacketMessage). Both
	// sides must agree: a stream dialer cannot reach a seqpacket listener.
	Stream bool
}

func (o *UnixOptions) stream() bool { return o != nil && o.Stream }

// UnixConn is a connected unix socket carrying messages both ways: one
// packet per message on SOCK_SEQPACKET (one sendmsg and one recvmsg
// each), or frames on SOCK_STREAM.
//
// Concurrency: one goroutine may send while another receives; calls in
// the same direction are serialised. SetDeadline and Close may be called
// from any goroutine; Close unblocks both directions.
type UnixConn struct {
	endpoint
	sendHalf
	recvHalf
	uc *net.UnixConn
}

func newUnixConn(uc *net.UnixConn, stream bool) *UnixConn {
	c := &UnixConn{uc: uc}
	max := MaxPacketMessage
	if stream {
		max = MaxStreamMessage
	}
	c.endpoint.init(uc, "unix", max)
	c.sendHalf.e, c.sendHalf.packet = &c.endpoint, !stream
	c.recvHalf.e, c.recvHalf.packet = &c.endpoint, !stream
	return c
}

// File returns a duplicate of the socket's descriptor, to hand to a child
// process (exec.Cmd.ExtraFiles), which adopts it with NewUnixConn. The
// caller closes it.
func (c *UnixConn) File() (*os.File, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	return c.uc.File()
}

// UnixListener accepts connections on a unix socket file that it created
// with mode 0600 and removes on Close.
//
// Concurrency: Accept may be called from several goroutines; Close from
// any goroutine unblocks them.
type UnixListener struct {
	l      *net.UnixListener
	path   string
	stream bool
	closed atomic.Bool
}

// Path is the socket file's path.
func (l *UnixListener) Path() string { return l.path }

package fallback

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// TCPConn is a TCP connection carrying framed messages both ways, with
// TCP_NODELAY set so that a message leaves when Send returns. MaxMessage
// is MaxStreamMessage; a peer announcing a longer frame gets ErrCorrupt
// before anything is reserved for it.
//
// Closing a connection that has unread incoming data makes the kernel
// reset it, and the peer may lose what it had not yet read.
//
// Concurrency: as UnixConn.
type TCPConn struct {
	endpoint
	sendHalf
	recvHalf
	tc *net.TCPConn
}

func newTCPConn(tc *net.TCPConn) (*TCPConn, error) {
	if err := tc.SetNoDelay(true); err != nil {
		tc.Close()
		return nil, err
	}
	c := &TCPConn{tc: tc}
	c.endpoint.init(tc, "tcp", MaxStreamMessage)
	c.sendHalf.e = &c.endpoint
	c.recvHalf.e = &c.endpoint
	return c, nil
}

// LocalAddr is the connection's local address.
func (c *TCPConn) LocalAddr() net.Addr { return c.tc.LocalAddr() }

// RemoteAddr is the peer's address.
func (c *TCPConn) RemoteAddr() net.Addr { return c.tc.RemoteAddr() }

// TCPListener accepts TCP connections.
//
// Concurrency: as UnixListener.
type TCPListener struct {
	l      *net.TCPListener
	closed atomic.Bool
}

// ListenTCP listens on addr ("127.0.0.1:0" picks a free loopback port).
func ListenTCP(addr string) (*TCPListener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp: %w", err)
	}
	return &TCPListener{l: ln.(*net.TCPListener)}, nil
}

// Addr is the address the listener is bound to.
func (l *TCPListener) Addr() net.Addr { return l.l.Addr() }

// Accept waits for a connection.
func (l *TCPListener) Accept() (*TCPConn, error) {
	tc, err := l.l.AcceptTCP()
	if err != nil {
		if l.closed.Load() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("tcp accept: %w", err)
	}
	c, err := newTCPConn(tc)
	if err != nil {
		return nil, fmt.Errorf("tcp accept: %w", err)
	}
	return c, nil
}

// SetDeadline bounds Accept; the zero time means no deadline.
func (l *TCPListener) SetDeadline(t time.Time) error {
	if l.closed.Load() {
		return ErrClosed
	}
	return l.l.SetDeadline(t)
}

// Close stops listening; connections accepted stay open. Close is
// idempotent.
func (l *TCPListener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	if err := l.l.Close(); err != nil {
		return fmt.Errorf("tcp listener close: %w", err)
	}
	return nil
}

// DialTCP connects to addr.
func DialTCP(ctx context.Context, addr string) (*TCPConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial tcp: %w", err)
	}
	tc, err := newTCPConn(c.(*net.TCPConn))
	if err != nil {
		return nil, fmt.Errorf("dial tcp: %w", err)
	}
	return tc, nil
}

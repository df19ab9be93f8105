package bench

// The sockets: the unix SOCK_SEQPACKET and TCP fallbacks, and the bare
// net.Conn of each that they are measured against. This side listens in
// the case's directory (or on loopback) and accepts the peer, which
// dials the address.

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/shmlane/shmlane/fallback"
)

var (
	unixTransport = &Transport{
		Name: "unix",
		How: "a unix SOCK_SEQPACKET socket (fallback.ListenUnix/DialUnix), one message " +
			"per packet.",
		Baseline: "rawunix",
		modes:    bothModes,
		link:     socketLink{network: "unix"},
	}
	tcpTransport = &Transport{
		Name: "tcp",
		How: "TCP over loopback (fallback.ListenTCP/DialTCP), length-prefixed frames, " +
			"TCP_NODELAY.",
		Baseline: "rawtcp",
		modes:    bothModes,
		link:     socketLink{network: "tcp"},
	}
	rawUnixTransport = &Transport{
		Name: "rawunix",
		How: "Write and Read of one packet per message on a net.UnixConn " +
			"(SOCK_SEQPACKET), no tag byte.",
		modes: bothModes,
		link:  socketLink{network: "unixpacket", raw: true},
	}
	rawTCPTransport = &Transport{
		Name: "rawtcp",
		How: "Write and io.ReadFull of exactly the message on a net.TCPConn over " +
			"loopback (TCP_NODELAY, Go's default), no framing.",
		modes: bothModes,
		link:  socketLink{network: "tcp", raw: true},
	}
)

// socketLink connects the sides with a socket of network: "unix"
// (fallback's SOCK_SEQPACKET) or "tcp" through the fallback package, or,
// if raw, "unixpacket" or "tcp" through the net package, whose
// connection moves bare messages (rawEnd).
type socketLink struct {
	network string
	raw     bool
}

// deadliner is a listening socket whose Accept a deadline bounds.
type deadliner interface{ SetDeadline(t time.Time) error }

// listen listens in dir (unix) or on a free loopback port (tcp);
// accept takes the peer's connection within the context's deadline.
func (sl socketLink) listen(_ *caseSpec, dir string, l *listener) error {
	addr := "127.0.0.1:0"
	if sl.network != "tcp" {
		addr = filepath.Join(dir, "bench.sock")
	}
	var (
		ln     deadliner
		accept func() (*end, error)
	)
	switch {
	case sl.raw:
		nl, err := net.Listen(sl.network, addr)
		if err != nil {
			return err
		}
		ln, _ = nl.(deadliner)
		l.addr = nl.Addr().String()
		l.onClose(nl.Close)
		accept = func() (*end, error) {
			c, err := nl.Accept()
			return sl.rawEnd(c), err
		}
	case sl.network == "unix":
		ul, err := fallback.ListenUnix(addr, nil)
		if err != nil {
			return err
		}
		ln, l.addr = ul, addr
		l.onClose(ul.Close)
		accept = func() (*end, error) { return duplex(ul.Accept()) }
	default:
		tl, err := fallback.ListenTCP(addr)
		if err != nil {
			return err
		}
		ln, l.addr = tl, tl.Addr().String()
		l.onClose(tl.Close)
		accept = func() (*end, error) { return duplex(tl.Accept()) }
	}
	l.accept = func(ctx context.Context) (*end, error) {
		if d, ok := ctx.Deadline(); ok && ln != nil {
			ln.SetDeadline(d)
		}
		return accept()
	}
	return nil
}

// dial connects to the listener's address.
func (sl socketLink) dial(ctx context.Context, spec *peerSpec, files []*os.File) (*end, error) {
	closeFiles(files)
	switch {
	case sl.raw:
		var d net.Dialer
		c, err := d.DialContext(ctx, sl.network, spec.Addr)
		return sl.rawEnd(c), err
	case sl.network == "unix":
		return duplex(fallback.DialUnix(ctx, spec.Addr, nil))
	default:
		return duplex(fallback.DialTCP(ctx, spec.Addr))
	}
}

// rawEnd is the end of a bare connection c, both directions; nil if c is.
func (sl socketLink) rawEnd(c net.Conn) *end {
	if c == nil {
		return nil
	}
	re := &rawEnd{w: c, r: c, packet: sl.network == "unixpacket"}
	return &end{s: re, r: re}
}

// duplex is the end of a connection c that both sends and receives; nil
// with err.
func duplex[C interface {
	sender
	receiver
}](c C, err error) (*end, error) {
	if err != nil {
		return nil, err
	}
	return &end{s: c, r: c}, nil
}

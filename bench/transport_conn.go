package bench

// shmlane's connections: Listen and Dial by name, over the SPSC rings of
// a connection, or forced onto its fallback socket.

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/shmlane/shmlane"
)

var (
	connTransport = &Transport{
		Name: "conn",
		How: "shmlane.Listen and Dial by name, two processes: the SPSC rings of a " +
			"connection. Stream: Conn.SendBatch of -batch messages (Send at -batch 1), Conn.RecvBatch of all that are " +
			"there, as the ring's stream does. Pingpong: Send and Recv.",
		Baseline: "ring",
		Bound:    1.1,
		modes:    bothModes,
		batches:  true,
		link:     connLink{},
	}
	connFallbackTransport = &Transport{
		Name: "connfb",
		How: "shmlane.Listen and Dial with ForceFallback: the connection's " +
			"SOCK_SEQPACKET socket carries the messages.",
		Baseline: "rawunix",
		modes:    bothModes,
		link:     connLink{force: true},
	}
)

// connLink listens on a name in the case's directory (as the runtime
// directory); the peer dials the name. force makes the listener refuse
// shared memory, so that the connection falls back to its socket.
type connLink struct{ force bool }

// listen listens on a name unique to this process in dir. The end it
// accepts counts the futex sleeps of the connection's rings, unless it
// fell back to its socket.
func (cl connLink) listen(c *caseSpec, dir string, l *listener) error {
	name := "bench-" + strconv.Itoa(os.Getpid())
	ln, err := shmlane.Listen(name, &shmlane.ListenOptions{RuntimeDir: dir, ForceFallback: cl.force, SpinTime: c.spin})
	if err != nil {
		return err
	}
	l.addr = dir + "|" + name
	l.onClose(ln.Close)
	l.accept = func(ctx context.Context) (*end, error) {
		conn, err := ln.Accept(ctx)
		e, err := duplex(conn, err)
		if err == nil && !conn.FellBack() {
			e.sleeps = func() uint64 { return connSleeps(conn.Stats()) }
		}
		return e, err
	}
	return nil
}

// connSleeps sums the futex sleeps of both sides of a connection's two
// rings.
func connSleeps(st shmlane.Stats) uint64 {
	return st.Send.ProducerSleeps + st.Send.ConsumerSleeps + st.Recv.ProducerSleeps + st.Recv.ConsumerSleeps
}

// dial dials the name in spec.Addr, "directory|name".
func (cl connLink) dial(ctx context.Context, spec *peerSpec, files []*os.File) (*end, error) {
	closeFiles(files)
	i := strings.LastIndexByte(spec.Addr, '|')
	if i < 0 {
		return nil, fmt.Errorf("address %q, want directory|name", spec.Addr)
	}
	return duplex(shmlane.Dial(ctx, spec.Addr[i+1:], &shmlane.DialOptions{RuntimeDir: spec.Addr[:i], SpinTime: spec.Spin}))
}

package bench

// The transport registry and the interface every transport implements.
// Each transport_*.go file holds one transport, or one family that
// shares its setup (the pipes, the sockets, the FIFOs, the two rings), as
// a link: how the two sides of a case connect. The loops that move and
// check messages over a link are the same for every transport (case.go,
// roles.go); a mode with loops of its own (the MPMC ring's stream of
// several processes a side, the ring's out-of-band modes) is the link's
// modeRunner.

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/shmlane/shmlane"
	"github.com/shmlane/shmlane/ring"
)

// A Transport is one way of moving messages that bench compares. The
// transports are package-level values, listed by Transports; their
// fields are read-only.
type Transport struct {
	// Name is the transport's name in "shmlane bench -transports" and in
	// a Result.
	Name string
	// How describes, for the report's footer, how a case moves messages.
	How string
	// Baseline names the transport whose cost this one is measured
	// against (a fallback against the bare system calls of its
	// mechanism, the connection against the bare ring), and Bound the
	// ratio it should stay within (0: DefaultBound); "" for none.
	Baseline string
	Bound    float64

	// modes are the modes the transport runs.
	modes []string
	// batches: the stream producer publishes Batch messages per
	// SendBatch and the consumer takes what is there with RecvBatch,
	// where the ends can.
	batches bool
	link    link
}

// Modes the transports run.
var (
	bothModes  = []string{ModeStream, ModePingpong}
	streamOnly = []string{ModeStream}
)

// registry lists every transport, in the order of "shmlane bench -h".
var registry = []*Transport{ringTransport, pipeTransport, chanTransport, ringLaneTransport, mpmcTransport,
	connTransport, connFallbackTransport, pipeFallbackTransport, fifoTransport, unixTransport, tcpTransport,
	rawPipeTransport, rawFIFOTransport, rawUnixTransport, rawTCPTransport}

// Transports returns every transport bench knows, in its default order.
func Transports() []*Transport { return slices.Clone(registry) }

// OverheadTransports returns every transport that has a baseline, each
// next to its baseline, in the order that "shmlane bench -transports
// overhead" runs them.
func OverheadTransports() []*Transport {
	return []*Transport{ringTransport, connTransport, pipeTransport, rawPipeTransport, pipeFallbackTransport,
		rawFIFOTransport, fifoTransport, rawUnixTransport, unixTransport, connFallbackTransport, rawTCPTransport, tcpTransport}
}

// Lookup returns the transport called name, or nil.
func Lookup(name string) *Transport {
	for _, t := range registry {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// names returns the names of ts.
func names(ts []*Transport) []string {
	n := make([]string, len(ts))
	for i, t := range ts {
		n[i] = t.Name
	}
	return n
}

// joinNames returns the names of ts separated by commas.
func joinNames(ts []*Transport) string { return strings.Join(names(ts), ",") }

// A link is what every transport implements: how the two sides of a
// stream or pingpong case connect. This process's side is the producer
// (stream) or the requester (pingpong); the peer's side is the consumer
// or the echoer, in a peer process, or in a goroutine of this process
// where the case runs in process or the transport (a channel) cannot
// cross processes.
type link interface {
	// listen makes this process's side of case c before the peer starts,
	// filling l; dir is an empty directory for sockets and FIFOs, removed
	// after the case. The caller releases what l holds (l.close), also
	// when listen fails.
	listen(c *caseSpec, dir string, l *listener) error
	// dial opens the peer's side, in the peer, from what listen gave it:
	// spec.Addr, and files, which dial owns: it closes those that the end
	// it returns does not hold, all of them on failure.
	dial(ctx context.Context, spec *peerSpec, files []*os.File) (*end, error)
}

// checker is a link that cannot run every configuration; check says why
// it cannot run cfg.
type checker interface {
	check(cfg *Config) error
}

// modeRunner is a link that runs some case with loops of its own; it
// returns nil for the cases that the common loops run.
type modeRunner interface {
	runner(c *caseSpec) runner
}

// listener is this process's side of a link, made by listen before the
// peer starts.
type listener struct {
	// addr is what the peer dials: a name, a path or an address.
	addr string
	// files become the peer's descriptors 5 and up; startPeer takes them
	// (close releases those it did not).
	files []*os.File
	// local is this side, when listen could make it before the peer
	// runs; otherwise accept makes it once the peer runs.
	local  *end
	accept func(ctx context.Context) (*end, error)
	// peer is the peer's side, made by listen, for a transport whose
	// peer runs in this process (a channel); nil otherwise. The peer owns
	// it once started.
	peer *end
	// closers release what listen made besides the ends (segments,
	// listening sockets, paths), last first.
	closers []func() error
}

// onClose registers f to run in close.
func (l *listener) onClose(f func() error) { l.closers = append(l.closers, f) }

// close releases this side: its end, then the files the peer did not
// take, then what the closers hold, last first. Errors are dropped: close
// runs at the end of a case, after its figures, or after its failure.
func (l *listener) close() {
	if l.local != nil {
		l.local.close()
	}
	closeFiles(l.files)
	l.files = nil
	for i := len(l.closers) - 1; i >= 0; i-- {
		l.closers[i]()
	}
	l.closers = nil
}

// closeFiles closes every file of fs.
func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// An end is one side of a link, as the common loops drive it: s sends
// (the producer's messages, or the echoer's replies) and r receives. A
// one-way side has one of the two. An end that is both directions of one
// object (a connection) has it in both.
type end struct {
	s sender
	r receiver
	// sleeps, where the link counts them, returns the futex sleeps taken
	// so far on both sides of every ring the end uses (the segments'
	// ProducerSleeps and ConsumerSleeps); nil for a link without such
	// counters.
	sleeps func() uint64
	// closers release what the end holds besides s and r (the peer's
	// ring segments), after them, last first.
	closers []func() error
}

// sender and receiver are what the harness needs of the shmlane
// contract; bare pipes and sockets fit them too (rawEnd).
type (
	sender interface {
		Send(msg []byte) error
		Close() error
	}
	receiver interface {
		Recv(buf []byte) (int, error)
		Close() error
	}
	// batchSender is a sender that publishes several messages at once.
	batchSender interface {
		SendBatch(msgs [][]byte) (int, error)
	}
	// batchReceiver is a receiver that takes what is there at once.
	batchReceiver interface {
		RecvBatch(max int, fn func(msg []byte)) (int, error)
	}
)

// The shmlane contract is a superset; the batching transports batch.
var (
	_ sender        = shmlane.Sender(nil)
	_ receiver      = shmlane.Receiver(nil)
	_ batchSender   = (*ring.Producer)(nil)
	_ batchSender   = (*ring.MPMCProducer)(nil)
	_ batchSender   = (*shmlane.Conn)(nil)
	_ batchReceiver = (*ring.Consumer)(nil)
	_ batchReceiver = (*ring.MPMCConsumer)(nil)
	_ batchReceiver = (*shmlane.Conn)(nil)
)

// asSender returns a constructor's result as a sender: nil with its
// error, never an interface holding a nil pointer, which end.close would
// call.
func asSender[T sender](s T, err error) (sender, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}

// asReceiver is asSender for a receiver.
func asReceiver[T receiver](r T, err error) (receiver, error) {
	if err != nil {
		return nil, err
	}
	return r, nil
}

// errOneWay is the error of a loop that needs a direction its end lacks.
var errOneWay = errors.New("one-way transport")

// close closes s, then r unless it is s, then what the closers hold.
// Closing an end again is harmless: the halves' Close is idempotent, or
// its error, dropped by every caller at teardown, says it was closed.
func (e *end) close() error {
	errs := []error{closePair(e.s, e.r)}
	for i := len(e.closers) - 1; i >= 0; i-- {
		errs = append(errs, e.closers[i]())
	}
	return errors.Join(errs...)
}

// closePair closes a, then b unless it is a; either may be nil. Both
// must hold comparable values (pointers, channels), as every half does.
func closePair(a, b io.Closer) error {
	var errs []error
	if a != nil {
		errs = append(errs, a.Close())
	}
	if b != nil && b != a {
		errs = append(errs, b.Close())
	}
	return errors.Join(errs...)
}

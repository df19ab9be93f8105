package shmlane

// The listener's side of the handshake (the protocol is in wire.go). Each
// admitted socket runs handle in a goroutine of its own.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/shmlane/shmlane/ring"
)

// dialer is what the listener knows of a dialer after its first message.
type dialer struct {
	cred Cred
	proc *pidWatch // its process; nil if it cannot be watched
	h    hello
	text string
}

// handle runs the handshake on an admitted socket: it checks the dialer's
// credentials, reads its first message, answers an inspector, or makes
// the connection and hands it to Accept. Every wait on the dialer ends at
// the handshake timeout, and all of them on Close.
func (l *Listener) handle(uc *net.UnixConn, cred Cred) {
	uc.SetDeadline(time.Now().Add(l.opts.HandshakeTimeout))
	if !l.allow.allows(cred.UID) {
		h := newHello(kindRefuse)
		h.UID = uint32(cred.UID)
		writePacket(uc, h.encode(fmt.Sprintf("uid %d is not in the listener's allow-list", cred.UID)))
		l.drop(uc)
		l.report(fmt.Errorf("%w: dialer pid %d has uid %d, not in the allow-list %s", ErrPeerRefused, cred.PID, cred.UID, l.allow))
		return
	}
	h, text, _, err := readPacket(uc, 0)
	if err != nil {
		// Tell a peer of another version why, as far as it can read.
		writePacket(uc, newHello(kindReject).encode(err.Error()))
		l.drop(uc)
		l.report(fmt.Errorf("dialer pid %d: %w", cred.PID, err))
		return
	}
	switch h.Kind {
	case kindDial:
	case kindInspect:
		l.answerInspect(uc)
		l.drop(uc)
		return
	case kindRefuse:
		l.drop(uc)
		l.report(fmt.Errorf("%w: dialer pid %d (uid %d) does not allow this listener's uid %d", ErrPeerRefused, cred.PID, cred.UID, h.UID))
		return
	default:
		err := fmt.Errorf("%w: dialer pid %d sent %s first, want dial or inspect", ErrHandshake, cred.PID, kindName(h.Kind))
		writePacket(uc, newHello(kindReject).encode(err.Error()))
		l.drop(uc)
		l.report(err)
		return
	}
	if why := l.reserve(cred); why != "" {
		r := newHello(kindReject)
		r.Flags = flagBusy
		writePacket(uc, r.encode(why))
		l.drop(uc)
		l.report(fmt.Errorf("dialer pid %d (uid %d): %w: %w: %s", cred.PID, cred.UID, ErrListenerBusy, ErrHandshake, why))
		return
	}
	proc, err := peerProcess(uc, cred)
	if err != nil {
		l.unreserve(cred)
		writePacket(uc, newHello(kindReject).encode(err.Error()))
		l.drop(uc)
		l.report(fmt.Errorf("%w: dialer pid %d: %w", ErrHandshake, cred.PID, err))
		return
	}
	d := dialer{cred: cred, proc: proc, h: h, text: text}
	c, err := l.handshake(uc, d)
	proc.close() // the Conn keeps its own
	l.untrack(uc)
	if err != nil {
		uc.Close()
		l.unreserve(cred)
		l.report(fmt.Errorf("handshake with pid %d: %w", cred.PID, err))
		return
	}
	select {
	case l.accepted <- c:
	case <-l.done:
		c.Close()
	}
}

// handshake runs the rest of the listener's side after kindDial. It closes
// uc, or hands it to the fallback Conn. On success the Conn holds the
// connection slot.
func (l *Listener) handshake(uc *net.UnixConn, d dialer) (*Conn, error) {
	reject := func(err error) (*Conn, error) {
		err = fmt.Errorf("%w: dialer's %w", ErrHandshake, err)
		writePacket(uc, newHello(kindReject).encode(err.Error()))
		return nil, err
	}
	if err := checkCapacity(int(min(d.h.Capacity, 1<<62))); err != nil {
		return reject(err)
	}
	dialerOOB := int(min(d.h.OOBCapacity, 1<<62))
	if d.h.Flags&flagNoOOB != 0 {
		dialerOOB = NoOOB
	}
	if err := checkOOBCapacity(dialerOOB); err != nil {
		return reject(err)
	}
	capacity := min(negotiate(l.opts.Capacity, int(d.h.Capacity)), l.opts.MaxCapacity)
	oob := negotiateOOB(l.opts.OOBCapacity, dialerOOB)
	id := l.newID()
	reason := l.fallbackReason(d)
	offered := false
	if reason == "" {
		c, why, sent, err := l.offerRings(uc, d, id, capacity, oob)
		if err != nil || c != nil {
			return c, err
		}
		// One side could not use the rings: the socket carries the
		// messages.
		reason, offered = why, sent
	}
	if err := l.mayFallBack(d, reason); err != nil {
		r := newHello(kindReject)
		r.Flags = flagNoShm
		writePacket(uc, r.encode(err.Error()))
		return nil, err
	}
	// The lane goes with kindFallback, which the dialer acknowledges, or
	// after the dialer's kindNoMap, in kindLane.
	kind := kindFallback
	if offered {
		kind = kindLane
	}
	var lane, theirs *os.File
	if oob > 0 {
		var err error
		if lane, theirs, err = newLanePair(oob); err != nil {
			writePacket(uc, newHello(kindReject).encode(err.Error()))
			return nil, err
		}
		defer theirs.Close()
	}
	h := newHello(kind)
	h.ConnID, h.Capacity, h.OOBCapacity = id, uint64(capacity), uint64(oob)
	var files []*os.File
	if theirs != nil {
		files, h.FDs = []*os.File{theirs}, 1
	}
	text := reason
	if kind == kindLane {
		text = ""
	}
	if err := writePacket(uc, h.encode(text), files...); err != nil {
		lane.Close()
		return nil, err
	}
	if kind == kindFallback {
		if err := expect(uc, kindAttached); err != nil {
			lane.Close()
			return nil, err
		}
	}
	proc, err := d.proc.dup()
	if err != nil {
		lane.Close()
		return nil, err
	}
	fb, err := adoptSocket(uc, proc, lane, oob, l.opts.FallbackOOBCheckEvery)
	if err != nil {
		return nil, fmt.Errorf("fall back to the socket: %w", err)
	}
	c := &Conn{id: id, peer: d.cred, reason: reason, link: fb}
	l.register(c)
	return c, nil
}

// mayFallBack returns the error that a fallback for reason is when either
// side requires shared memory, nil otherwise.
func (l *Listener) mayFallBack(d dialer, reason string) error {
	switch {
	case l.opts.RequireSharedMemory:
		return fmt.Errorf("%w: %w: the listener requires shared memory (ListenOptions.RequireSharedMemory), and it cannot be used: %s", ErrHandshake, ErrNoSharedMemory, reason)
	case d.h.Flags&flagRequireShm != 0:
		return fmt.Errorf("%w: %w: the dialer requires shared memory (DialOptions.RequireSharedMemory), and it cannot be used: %s", ErrHandshake, ErrNoSharedMemory, reason)
	}
	return nil
}

// fallbackReason says why a connection cannot use shared memory, from this
// side's point of view and the dialer's; "" if nothing stands in the way.
//
// Namespaces do not: a memfd passed with SCM_RIGHTS, its mapping and a
// futex on that mapping work across IPC namespaces (memfds are not System
// V or POSIX IPC objects), and the peer's process is watched through the
// pidfd that SO_PEERPIDFD gives, whether or not its pid is visible here.
func (l *Listener) fallbackReason(d dialer) string {
	switch {
	case l.opts.ForceFallback:
		return "forced by the listener (ListenOptions.ForceFallback)"
	case d.h.Flags&flagFallback != 0:
		return d.text
	case d.proc == nil:
		return "the dialer's pid is not visible in the listener's pid namespace and this kernel has no SO_PEERPIDFD (Linux 6.5), so its death could not be detected"
	}
	return ""
}

// offerRings creates the two segments, attaches this side, passes them to
// the dialer and waits for its answer. It returns the Conn, or the reason
// for falling back and whether the dialer was offered the rings (false
// when this side could not create them: nothing was sent then), or an
// error.
func (l *Listener) offerRings(uc *net.UnixConn, d dialer, id uint64, capacity, oob int) (*Conn, string, bool, error) {
	spin := l.opts.spin()
	noRings := func(err error) (*Conn, string, bool, error) {
		return nil, fmt.Sprintf("the listener cannot create shared memory: %v", err), false, nil
	}
	send, err := ring.Create(&ring.Config{Capacity: capacity, OOBCapacity: oob, Name: "shmlane:" + l.name + ":to-dialer"})
	if err != nil {
		return noRings(err)
	}
	recv, err := ring.Create(&ring.Config{Capacity: capacity, OOBCapacity: oob, Name: "shmlane:" + l.name + ":to-listener"})
	if err != nil {
		send.Close()
		return noRings(err)
	}
	prod, err := send.Producer(spin)
	if err != nil {
		send.Close()
		recv.Close()
		return noRings(err)
	}
	cons, err := recv.Consumer(spin)
	if err != nil {
		prod.Close()
		send.Close()
		recv.Close()
		return noRings(err)
	}
	c := newRingConn(id, d.cred, prod, cons, send, recv)
	fail := func(err error) (*Conn, string, bool, error) {
		c.Close()
		return nil, "", true, err
	}
	f0, err := send.File()
	if err != nil {
		return fail(err)
	}
	defer f0.Close()
	f1, err := recv.File()
	if err != nil {
		return fail(err)
	}
	defer f1.Close()
	h := newHello(kindRing)
	h.ConnID, h.Capacity, h.FDs, h.OOBCapacity = id, uint64(capacity), 2, uint64(oob)
	if err := writePacket(uc, h.encode(""), f0, f1); err != nil {
		return fail(err)
	}
	r, text, _, err := readPacket(uc, 0)
	if err != nil {
		return fail(err)
	}
	switch r.Kind {
	case kindAttached:
	case kindNoMap:
		c.Close()
		return nil, "the dialer cannot use the rings: " + text, true, nil
	case kindReject:
		return fail(fmt.Errorf("%w: the dialer rejected the rings: %q", ErrHandshake, text))
	default:
		return fail(fmt.Errorf("%w: dialer sent %s, want attached or nomap", ErrHandshake, kindName(r.Kind)))
	}
	if err := errors.Join(d.proc.watchRing(prod), d.proc.watchRing(cons)); err != nil {
		return fail(err)
	}
	uc.Close()
	l.register(c)
	return c, "", true, nil
}

// expect reads a message that must be of kind k.
func expect(uc *net.UnixConn, k uint16) error {
	h, text, _, err := readPacket(uc, 0)
	if err != nil {
		return err
	}
	if h.Kind == kindReject {
		return fmt.Errorf("%w: peer rejected the handshake: %q", ErrHandshake, text)
	}
	if h.Kind != k {
		return fmt.Errorf("%w: peer sent %s, want %s", ErrHandshake, kindName(h.Kind), kindName(k))
	}
	return nil
}

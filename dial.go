package shmlane

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/shmlane/shmlane/ring"
)

// Dial connects to the listener on name and completes the handshake:
// both sides check the other's credentials (SO_PEERCRED; see
// DialOptions.AllowUIDs and ListenOptions.AllowUIDs), then the listener
// passes the two ring segments, which Dial validates (seals, header,
// capacities, out-of-band lanes) and maps, or both agree to fall back to
// the socket, with a second socket for the out-of-band lanes (see
// DialOptions.RequireSharedMemory to refuse that). Dial returns once the
// handshake is complete; the connection then waits in the listener until
// its Accept takes it, and what is sent meanwhile is queued. ctx bounds
// the whole of it, including the wait for a listener with
// DialOptions.WaitForListener; the handshake itself, once connected, also
// ends after DialOptions.HandshakeTimeout (default 5 s).
//
// A listener at one of its limits refuses at once with an error matching
// ErrListenerBusy (and ErrHandshake): the caller may retry later.
func Dial(ctx context.Context, name string, opts *DialOptions) (*Conn, error) {
	return dialLike(ctx, "dial", name, opts, dial)
}

// dialLike runs body, the work of Dial or Inspect (op), with a nil ctx or
// opts replaced by their defaults, after the checks both make; its error
// names op and name.
func dialLike[T any](ctx context.Context, op, name string, opts *DialOptions, body func(context.Context, string, DialOptions, allowList) (T, error)) (T, error) {
	var o DialOptions
	if opts != nil {
		o = *opts
	}
	if ctx == nil {
		ctx = context.Background()
	}
	var v T
	err := supported(op)
	if err == nil {
		var allow allowList
		if allow, err = o.side().check(); err == nil {
			if v, err = body(ctx, name, o, allow); err == nil {
				return v, nil
			}
		}
	}
	var zero T
	return zero, fmt.Errorf("%s %q: %w", op, name, err)
}

func dial(ctx context.Context, name string, o DialOptions, allow allowList) (*Conn, error) {
	uc, cred, err := connect(ctx, name, o, allow)
	if err != nil {
		return nil, err
	}
	timeout := o.handshakeTimeout()
	uc.SetDeadline(time.Now().Add(timeout))
	stop := interruptOn(ctx, uc)
	defer stop()
	c, err := dialHandshake(uc, cred, o)
	if err != nil {
		uc.Close()
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("handshake with pid %d: %w: %w", cred.PID, ctx.Err(), err)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, fmt.Errorf("handshake with pid %d: the listener did not complete it within %v (DialOptions.HandshakeTimeout): %w", cred.PID, timeout, err)
		}
		return nil, fmt.Errorf("handshake with pid %d: %w", cred.PID, err)
	}
	return c, nil
}

// connect connects to the socket of name and checks the listener's
// credentials, refusing (and telling) a listener that allow does not admit.
func connect(ctx context.Context, name string, o DialOptions, allow allowList) (*net.UnixConn, Cred, error) {
	sock, _, err := paths(name, o.RuntimeDir)
	if err != nil {
		return nil, Cred{}, err
	}
	var d net.Dialer
	delay := time.Millisecond
	var uc *net.UnixConn
	for {
		c, err := d.DialContext(ctx, "unixpacket", sock)
		if err == nil {
			var ok bool
			if uc, ok = c.(*net.UnixConn); !ok {
				c.Close()
				return nil, Cred{}, fmt.Errorf("connect: %s is not a unix socket: %T", sock, c)
			}
			break
		}
		if ctx.Err() != nil {
			return nil, Cred{}, fmt.Errorf("connect to %s: %w", sock, ctx.Err())
		}
		// No socket, or one that nobody listens on (a listener that died
		// or has not reclaimed it yet), or a full backlog.
		absent := errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EAGAIN)
		if !absent {
			return nil, Cred{}, fmt.Errorf("connect: %w", err)
		}
		if !o.WaitForListener {
			return nil, Cred{}, fmt.Errorf("%w on %s: %w", ErrNoListener, sock, err)
		}
		delay = min(2*delay, 50*time.Millisecond)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, Cred{}, fmt.Errorf("%w on %s: %w", ErrNoListener, sock, ctx.Err())
		}
	}
	cred, err := peerCred(uc)
	if err != nil {
		uc.Close()
		return nil, Cred{}, err
	}
	if !allow.allows(cred.UID) {
		h := newHello(kindRefuse)
		h.UID = uint32(cred.UID)
		uc.SetDeadline(time.Now().Add(time.Second))
		writePacket(uc, h.encode(fmt.Sprintf("uid %d is not in the dialer's allow-list", cred.UID)))
		uc.Close()
		return nil, Cred{}, fmt.Errorf("%w: listener pid %d has uid %d, not in the allow-list %s", ErrPeerRefused, cred.PID, cred.UID, allow)
	}
	return uc, cred, nil
}

// dialHandshake runs the dialer's side of the handshake. On success it has
// closed uc or handed it to the fallback Conn.
func dialHandshake(uc *net.UnixConn, cred Cred, o DialOptions) (*Conn, error) {
	proc, err := peerProcess(uc, cred)
	if err != nil {
		return nil, err
	}
	defer proc.close() // the Conn keeps its own
	h := newHello(kindDial)
	h.Capacity = uint64(o.Capacity)
	if o.OOBCapacity == NoOOB {
		h.Flags |= flagNoOOB
	} else {
		h.OOBCapacity = uint64(o.OOBCapacity)
	}
	if o.RequireSharedMemory {
		h.Flags |= flagRequireShm
	}
	// Namespaces do not stand in the way: see Listener.fallbackReason.
	reason := ""
	switch {
	case o.ForceFallback:
		reason = "forced by the dialer (DialOptions.ForceFallback)"
	case proc == nil:
		reason = "the listener's pid is not visible in the dialer's pid namespace and this kernel has no SO_PEERPIDFD (Linux 6.5), so its death could not be detected"
	}
	if reason != "" && o.RequireSharedMemory {
		return nil, refuseFallback(uc, reason)
	}
	if reason != "" {
		h.Flags |= flagFallback
	}
	if err := writePacket(uc, h.encode(reason)); err != nil {
		// A listener that refuses this process says so and hangs up
		// without reading: its verdict may be waiting.
		if r, text, files, rerr := readPacket(uc, 0); rerr == nil {
			closeAll(files)
			if verr := verdict(r, text, cred); verr != nil {
				return nil, verr
			}
		}
		return nil, err
	}
	r, text, files, err := readPacket(uc, 2)
	if err != nil {
		return nil, err
	}
	if err := verdict(r, text, cred); err != nil {
		closeAll(files)
		return nil, err
	}
	var lane *os.File
	switch r.Kind {
	case kindRing:
		if err := checkAnnouncedOOB(r.OOBCapacity, o.OOBCapacity); err != nil {
			closeAll(files)
			return nil, err
		}
		c, why := attachRings(files, r, cred, proc, o.spin())
		closeAll(files)
		if c == nil && o.RequireSharedMemory {
			return nil, refuseFallback(uc, "the dialer cannot use the rings: "+why)
		}
		if c != nil {
			if err := writePacket(uc, newHello(kindAttached).encode("")); err != nil {
				c.Close()
				return nil, err
			}
			uc.Close()
			return c, nil
		}
		if err := writePacket(uc, newHello(kindNoMap).encode(why)); err != nil {
			return nil, err
		}
		reason = "the dialer cannot use the rings: " + why
		// The listener answers with the lane for the socket.
		l, ltext, lfiles, err := readPacket(uc, 1)
		if err != nil {
			return nil, err
		}
		if err := verdict(l, ltext, cred); err != nil {
			closeAll(lfiles)
			return nil, err
		}
		if l.Kind != kindLane {
			closeAll(lfiles)
			return nil, fmt.Errorf("%w: listener sent %s after nomap, want lane", ErrHandshake, kindName(l.Kind))
		}
		if lane, err = takeLane(l, lfiles, o.OOBCapacity, cred); err != nil {
			return nil, err
		}
		r.OOBCapacity = l.OOBCapacity
	case kindFallback:
		reason = text
		if o.RequireSharedMemory {
			closeAll(files)
			return nil, refuseFallback(uc, reason)
		}
		if lane, err = takeLane(r, files, o.OOBCapacity, cred); err != nil {
			return nil, err
		}
		if err := writePacket(uc, newHello(kindAttached).encode("")); err != nil {
			lane.Close()
			return nil, err
		}
	default:
		closeAll(files)
		return nil, fmt.Errorf("%w: listener sent %s, want ring, fallback, refuse or reject", ErrHandshake, kindName(r.Kind))
	}
	fbProc, err := proc.dup()
	if err != nil {
		lane.Close()
		return nil, err
	}
	fb, err := adoptSocket(uc, fbProc, lane, int(r.OOBCapacity), o.FallbackOOBCheckEvery)
	if err != nil {
		return nil, fmt.Errorf("fall back to the socket: %w", err)
	}
	return &Conn{id: r.ConnID, peer: cred, reason: reason, link: fb}, nil
}

// checkAnnouncedOOB checks the lane size a listener announced against the
// rule and this side's preference.
func checkAnnouncedOOB(announced uint64, pref int) error {
	a := int(min(announced, 1<<62))
	if a == 0 {
		return nil // the listener asked for none
	}
	if err := checkOOBCapacity(a); err != nil {
		return fmt.Errorf("%w: listener announced an out-of-band lane of %d bytes: %w", ErrHandshake, announced, err)
	}
	switch {
	case pref == NoOOB:
		return fmt.Errorf("%w: listener announced an out-of-band lane of %d bytes, the dialer asked for none (NoOOB)", ErrHandshake, a)
	case a < pref:
		return fmt.Errorf("%w: listener announced an out-of-band lane of %d bytes, smaller than the dialer's %d", ErrHandshake, a, pref)
	}
	return nil
}

// takeLane checks the lane that a kindFallback or kindLane message
// announces and carries, and returns it (nil for none). It closes files
// on error.
func takeLane(h hello, files []*os.File, pref int, cred Cred) (*os.File, error) {
	if err := checkAnnouncedOOB(h.OOBCapacity, pref); err != nil {
		closeAll(files)
		return nil, err
	}
	want := 0
	if h.OOBCapacity != 0 {
		want = 1
	}
	if len(files) != want {
		closeAll(files)
		return nil, fmt.Errorf("%w: listener announced an out-of-band lane of %d bytes with %d descriptors, want %d", ErrHandshake, h.OOBCapacity, len(files), want)
	}
	if want == 0 {
		return nil, nil
	}
	if err := checkLaneSocket(files[0], cred.PID); err != nil {
		files[0].Close()
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	return files[0], nil
}

// refuseFallback tells the listener that this dialer will not fall back
// to the socket, and returns the error for DialOptions.RequireSharedMemory.
func refuseFallback(uc *net.UnixConn, reason string) error {
	err := fmt.Errorf("%w: %w: the dialer requires shared memory (DialOptions.RequireSharedMemory), and it cannot be used: %s", ErrNoSharedMemory, ErrHandshake, reason)
	r := newHello(kindReject)
	r.Flags = flagNoShm
	writePacket(uc, r.encode(err.Error()))
	return err
}

// verdict returns the error that a listener's kindRefuse or kindReject
// means, nil for any other message. The text of a rejection is the
// listener's: it is quoted, so that it cannot pass for more of the error
// or reach a terminal raw.
func verdict(r hello, text string, cred Cred) error {
	switch {
	case r.Kind == kindRefuse:
		return fmt.Errorf("%w: listener pid %d refused this process: uid %d is not in its allow-list", ErrPeerRefused, cred.PID, r.UID)
	case r.Kind != kindReject:
		return nil
	case r.Flags&flagBusy != 0:
		return fmt.Errorf("%w: %w: listener pid %d is at a limit: %q", ErrListenerBusy, ErrHandshake, cred.PID, text)
	case r.Flags&flagNoShm != 0:
		return fmt.Errorf("%w: %w: listener pid %d will not fall back to the socket: %q", ErrNoSharedMemory, ErrHandshake, cred.PID, text)
	}
	return fmt.Errorf("%w: listener pid %d rejected the handshake: %q", ErrHandshake, cred.PID, text)
}

// attachRings maps the segments the listener passed, [listener→dialer,
// dialer→listener], attaches this side and watches the listener's process.
// It returns the Conn, or why the rings cannot be used.
func attachRings(files []*os.File, r hello, cred Cred, proc *pidWatch, spin *ring.Options) (*Conn, string) {
	if len(files) != 2 {
		return nil, fmt.Sprintf("the listener passed %d descriptors, want 2", len(files))
	}
	recv, err := ring.Open(files[0])
	if err != nil {
		return nil, fmt.Sprintf("map the listener→dialer segment: %v", err)
	}
	send, err := ring.Open(files[1])
	if err != nil {
		recv.Close()
		return nil, fmt.Sprintf("map the dialer→listener segment: %v", err)
	}
	if recv.Capacity() != int(r.Capacity) || send.Capacity() != int(r.Capacity) {
		recv.Close()
		send.Close()
		return nil, fmt.Sprintf("segment capacities %d and %d differ from the %d announced", recv.Capacity(), send.Capacity(), r.Capacity)
	}
	if recv.OOBCapacity() != int(r.OOBCapacity) || send.OOBCapacity() != int(r.OOBCapacity) {
		recv.Close()
		send.Close()
		return nil, fmt.Sprintf("segment out-of-band lanes of %d and %d bytes differ from the %d announced", recv.OOBCapacity(), send.OOBCapacity(), r.OOBCapacity)
	}
	cons, err := recv.Consumer(spin)
	if err != nil {
		recv.Close()
		send.Close()
		return nil, fmt.Sprintf("attach the consumer: %v", err)
	}
	prod, err := send.Producer(spin)
	if err != nil {
		cons.Close()
		recv.Close()
		send.Close()
		return nil, fmt.Sprintf("attach the producer: %v", err)
	}
	c := newRingConn(r.ConnID, cred, prod, cons, send, recv)
	if err := errors.Join(proc.watchRing(prod), proc.watchRing(cons)); err != nil {
		c.Close()
		return nil, fmt.Sprintf("watch the listener's process: %v", err)
	}
	return c, ""
}

// interruptOn makes ctx's end interrupt blocking calls on uc; the returned
// func stops that.
func interruptOn(ctx context.Context, uc *net.UnixConn) (stop func()) {
	if ctx.Done() == nil {
		return func() {}
	}
	s := context.AfterFunc(ctx, func() { uc.SetDeadline(time.Unix(1, 0)) })
	return func() { s() }
}

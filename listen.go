package shmlane

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shmlane/shmlane/ring"
)

// Limits of a Listener's background work.
const (
	// maxGreeting bounds the connections whose first message the
	// listener reads at once.
	maxGreeting = 32
	// acceptQueue is how many greeted dialers (and failed attempts) wait
	// for Accept.
	acceptQueue = 16
)

// Listener waits for dialers on a name.
//
// It owns two files in its runtime directory: NAME.sock, the SOCK_SEQPACKET
// socket that dialers connect to, and NAME.lock, on which it holds an flock
// for its lifetime, so that two listeners cannot take the same name and a
// crashed one's leftover socket can be told apart from a live one (the
// kernel drops the lock of a dead process). A goroutine accepts sockets,
// checks each dialer's credentials, reads its first message, answers
// inspectors (see Inspect) and queues dialers for Accept, which completes
// their handshake.
//
// Concurrency: all methods may be called from any goroutine.
type Listener struct {
	name, path, lockPath string
	opts                 ListenOptions
	allow                allowList
	timeout              time.Duration
	ipcNS                uint64

	ln   *net.UnixListener
	lock *os.File

	queue     chan greeted
	done      chan struct{}
	greeting  chan struct{} // semaphore of the goroutines that greet
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu     sync.Mutex
	conns  map[uint64]*Conn           // live connections, for Inspect
	socks  map[*net.UnixConn]struct{} // sockets not yet past the handshake
	nextID uint64
}

// greeted is a dialer whose first message was read, or an attempt that
// failed, for Accept to return.
type greeted struct {
	uc   *net.UnixConn
	cred Cred
	h    hello
	text string
	err  error
}

// Listen starts listening on name.
//
// The socket is RuntimeDir(opts.RuntimeDir)/NAME.sock: by default
// $XDG_RUNTIME_DIR/shmlane when XDG_RUNTIME_DIR is set (a per-user 0700
// directory on systemd hosts), /run/shmlane for root, and
// /tmp/shmlane-UID for other users. Listen creates the directory with mode
// 0700 if it is missing, and refuses one that it does not own or that
// others may write to. The socket file gets mode 0600 (see
// ListenOptions.SocketMode).
//
// A name held by a live listener gives ErrNameInUse. A socket left by a
// listener that died is removed and replaced.
func Listen(name string, opts *ListenOptions) (*Listener, error) {
	var o ListenOptions
	if opts != nil {
		o = *opts
	}
	l, err := listen(name, o)
	if err != nil {
		return nil, fmt.Errorf("listen %q: %w", name, err)
	}
	return l, nil
}

func listen(name string, o ListenOptions) (*Listener, error) {
	if err := supported("listen"); err != nil {
		return nil, err
	}
	if err := checkCapacity(o.Capacity); err != nil {
		return nil, err
	}
	if err := errors.Join(checkOOBCapacity(o.OOBCapacity), checkOOBCheckEvery(o.FallbackOOBCheckEvery)); err != nil {
		return nil, err
	}
	allow, err := newAllowList(o.AllowUIDs)
	if err != nil {
		return nil, err
	}
	if o.HandshakeTimeout < 0 {
		return nil, fmt.Errorf("handshake timeout must not be negative: %v", o.HandshakeTimeout)
	}
	sock, lockPath, err := paths(name, o.RuntimeDir)
	if err != nil {
		return nil, err
	}
	if err := ensureDir(filepath.Dir(sock)); err != nil {
		return nil, err
	}
	lock, err := lockName(lockPath)
	if errors.Is(err, errLocked) {
		holder := ""
		if b, err := os.ReadFile(lockPath); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				holder = fmt.Sprintf(" (pid %d)", pid)
			}
		}
		return nil, fmt.Errorf("%w%s: %s is locked", ErrNameInUse, holder, lockPath)
	}
	if err != nil {
		return nil, fmt.Errorf("lock name: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.Remove(lockPath) // while the lock is held: see lockName
			lock.Close()
		}
	}()
	if err := reclaim(sock); err != nil {
		return nil, err
	}
	mode := o.SocketMode.Perm()
	if mode == 0 {
		mode = 0o600
		if allow.others() {
			mode = 0o666
		}
	}
	ln, err := listenSocket(sock, mode)
	if err != nil {
		return nil, fmt.Errorf("listen on socket: %w", err)
	}
	l := &Listener{
		name: name, path: sock, lockPath: lockPath,
		opts: o, allow: allow, timeout: o.HandshakeTimeout, ipcNS: ipcNamespace(0),
		ln: ln, lock: lock,
		queue:    make(chan greeted, acceptQueue),
		done:     make(chan struct{}),
		greeting: make(chan struct{}, maxGreeting),
		conns:    make(map[uint64]*Conn),
		socks:    make(map[*net.UnixConn]struct{}),
	}
	if l.timeout == 0 {
		l.timeout = DefaultHandshakeTimeout
	}
	l.wg.Add(1)
	go l.serve()
	ok = true
	return l, nil
}

// reclaim removes the socket at path if it is left over from a listener
// that died. The caller holds the name's lock, so no live listener that
// plays by the rules owns it; a socket that still answers belongs to a
// listener that does not, and is left alone.
func reclaim(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket (mode %v): not removing it", path, fi.Mode())
	}
	c, err := net.DialTimeout("unixpacket", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: a listener that does not hold the lock answers on %s", ErrNameInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("check stale socket: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// Name is the name the listener listens on.
func (l *Listener) Name() string { return l.name }

// Addr is the listener's socket address.
func (l *Listener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unixpacket"} }

// Accept waits for a dialer and completes its handshake: in shared-memory
// mode it creates two ring segments, one per direction (a connection is two
// sealed memfds, each with its out-of-band lane), attaches its own producer
// and consumer, passes both memfds to the dialer with SCM_RIGHTS and
// watches the dialer's process; otherwise the connection falls back to the
// socket (see Conn.FellBack), and the listener passes the dialer one end
// of a socketpair that it creates for the out-of-band lane.
// ctx bounds the wait and the handshake.
//
// An error that matches ErrPeerRefused or ErrHandshake concerns one
// attempt only (a dialer that was refused, refused this listener, spoke
// another protocol or gave up): the listener stays open and Accept may be
// called again. Such reports wait in a queue of 16 entries, shared with
// dialers waiting to be accepted, and are dropped while it is full. After
// Close, Accept returns ErrClosed.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	select {
	case <-l.done:
		return nil, fmt.Errorf("accept %q: %w", l.name, ErrClosed)
	default:
	}
	select {
	case g := <-l.queue:
		if g.err != nil {
			return nil, g.err
		}
		c, err := l.complete(ctx, g)
		l.untrack(g.uc)
		if err != nil {
			return nil, fmt.Errorf("accept %q: %w", l.name, err)
		}
		return c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("accept %q: %w", l.name, ctx.Err())
	case <-l.done:
		return nil, fmt.Errorf("accept %q: %w", l.name, ErrClosed)
	}
}

// Close stops listening, removes the socket and lock files and releases
// the name. Connections already accepted stay open; dialers not yet
// accepted see the socket close. Close is idempotent.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.ln.Close() // removes the socket file
		l.mu.Lock()
		for uc := range l.socks {
			uc.Close()
		}
		l.mu.Unlock()
		l.wg.Wait() // nothing adds to the queue any more
		for len(l.queue) > 0 {
			if g := <-l.queue; g.uc != nil {
				g.uc.Close()
			}
		}
		// Removed while the lock is held: see lockName.
		os.Remove(l.lockPath)
		l.lock.Close()
	})
	if err != nil {
		return fmt.Errorf("close listener %q: %w", l.name, err)
	}
	return nil
}

// serve accepts sockets until the listener closes.
func (l *Listener) serve() {
	defer l.wg.Done()
	backoff := time.Duration(0)
	for {
		uc, err := l.ln.AcceptUnix()
		if err != nil {
			if l.closing() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or memory: report it and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case l.queue <- greeted{err: fmt.Errorf("accept %q: %w", l.name, err)}:
			default:
			}
			select {
			case <-time.After(backoff):
				continue
			case <-l.done:
				return
			}
		}
		backoff = 0
		select {
		case l.greeting <- struct{}{}:
		case <-l.done:
			uc.Close()
			return
		}
		if !l.track(uc) {
			<-l.greeting
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer func() { <-l.greeting }()
			l.greet(uc)
		}()
	}
}

func (l *Listener) closing() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// track records a socket in handshake, so that Close can close it. It
// reports false, having closed uc, if the listener is closing.
func (l *Listener) track(uc *net.UnixConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing() {
		uc.Close()
		return false
	}
	l.socks[uc] = struct{}{}
	return true
}

func (l *Listener) untrack(uc *net.UnixConn) {
	l.mu.Lock()
	delete(l.socks, uc)
	l.mu.Unlock()
}

// drop closes a socket in handshake.
func (l *Listener) drop(uc *net.UnixConn) {
	l.untrack(uc)
	uc.Close()
}

// report queues a failed attempt for Accept. While the queue is full the
// report is dropped: peers that fail on purpose must not be able to stop
// the listener from serving others.
func (l *Listener) report(err error) {
	select {
	case l.queue <- greeted{err: fmt.Errorf("accept %q: %w", l.name, err)}:
	default:
	}
}

// greet checks a new socket's peer and reads its first message: an
// inspector is answered here, a dialer is queued for Accept.
func (l *Listener) greet(uc *net.UnixConn) {
	cred, err := peerCred(uc)
	if err != nil {
		l.drop(uc)
		l.report(fmt.Errorf("%w: %w", ErrHandshake, err))
		return
	}
	uc.SetDeadline(time.Now().Add(l.timeout))
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
		uc.SetDeadline(time.Time{})
		select {
		case l.queue <- greeted{uc: uc, cred: cred, h: h, text: text}:
		case <-l.done:
			l.drop(uc)
		}
	case kindInspect:
		l.answerInspect(uc)
		l.drop(uc)
	case kindRefuse:
		l.drop(uc)
		l.report(fmt.Errorf("%w: dialer pid %d (uid %d) does not allow this listener's uid %d", ErrPeerRefused, cred.PID, cred.UID, h.UID))
	default:
		err := fmt.Errorf("%w: dialer pid %d sent %s first, want dial or inspect", ErrHandshake, cred.PID, kindName(h.Kind))
		writePacket(uc, newHello(kindReject).encode(err.Error()))
		l.drop(uc)
		l.report(err)
	}
}

// complete runs the listener's side of the handshake after kindDial.
// It closes g.uc, or hands it to the fallback Conn.
func (l *Listener) complete(ctx context.Context, g greeted) (*Conn, error) {
	uc := g.uc
	stop := interruptOn(ctx, uc)
	defer stop()
	uc.SetDeadline(time.Now().Add(l.timeout))
	c, err := l.handshake(uc, g)
	if err != nil {
		uc.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("handshake with pid %d: %w: %w", g.cred.PID, ctx.Err(), err)
		}
		return nil, fmt.Errorf("handshake with pid %d: %w", g.cred.PID, err)
	}
	return c, nil
}

func (l *Listener) handshake(uc *net.UnixConn, g greeted) (*Conn, error) {
	reject := func(err error) (*Conn, error) {
		err = fmt.Errorf("%w: dialer's %w", ErrHandshake, err)
		writePacket(uc, newHello(kindReject).encode(err.Error()))
		return nil, err
	}
	if err := checkCapacity(int(min(g.h.Capacity, 1<<62))); err != nil {
		return reject(err)
	}
	dialerOOB := int(min(g.h.OOBCapacity, 1<<62))
	if g.h.Flags&flagNoOOB != 0 {
		dialerOOB = NoOOB
	}
	if err := checkOOBCapacity(dialerOOB); err != nil {
		return reject(err)
	}
	capacity := negotiate(l.opts.Capacity, int(g.h.Capacity))
	oob := negotiateOOB(l.opts.OOBCapacity, dialerOOB)
	id := l.newID()
	reason := l.fallbackReason(g)
	offered := false
	if reason == "" {
		c, why, sent, err := l.offerRings(uc, g, id, capacity, oob)
		if err != nil || c != nil {
			return c, err
		}
		// One side could not use the rings: the socket carries the
		// messages.
		reason, offered = why, sent
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
	fb, err := adoptSocket(uc, g.cred.PID, lane, oob, l.opts.FallbackOOBCheckEvery)
	if err != nil {
		return nil, fmt.Errorf("fall back to the socket: %w", err)
	}
	c := &Conn{id: id, peer: g.cred, reason: reason, fb: fb}
	l.register(c)
	return c, nil
}

// fallbackReason says why a connection cannot use shared memory, from this
// side's point of view and the dialer's; "" if nothing stands in the way.
func (l *Listener) fallbackReason(g greeted) string {
	switch {
	case l.opts.ForceFallback:
		return "forced by the listener (ListenOptions.ForceFallback)"
	case g.h.Flags&flagFallback != 0:
		return g.text
	case g.cred.PID == 0:
		return "the dialer's pid is not visible in the listener's pid namespace, so its death could not be detected"
	}
	peer := ipcNamespace(g.cred.PID)
	if peer == 0 {
		peer = g.h.IPCNS // not readable here: take the dialer's word
	}
	if peer != 0 && l.ipcNS != 0 && peer != l.ipcNS {
		return fmt.Sprintf("the peers are in different IPC namespaces: listener ipc:[%d], dialer ipc:[%d]", l.ipcNS, peer)
	}
	return ""
}

// offerRings creates the two segments, attaches this side, passes them to
// the dialer and waits for its answer. It returns the Conn, or the reason
// for falling back and whether the dialer was offered the rings (false
// when this side could not create them: nothing was sent then), or an
// error.
func (l *Listener) offerRings(uc *net.UnixConn, g greeted, id uint64, capacity, oob int) (*Conn, string, bool, error) {
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
	c := newRingConn(id, g.cred, prod, cons, send, recv)
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
	h.ConnID, h.Capacity, h.FDs, h.IPCNS, h.OOBCapacity = id, uint64(capacity), 2, l.ipcNS, uint64(oob)
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
	default:
		return fail(fmt.Errorf("%w: dialer sent %s, want attached or nomap", ErrHandshake, kindName(r.Kind)))
	}
	if err := errors.Join(prod.WatchPeer(g.cred.PID), cons.WatchPeer(g.cred.PID)); err != nil {
		return fail(err)
	}
	uc.Close()
	l.register(c)
	return c, "", true, nil
}

func (l *Listener) newID() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextID++
	return l.nextID
}

// register records a live connection for Inspect until it closes.
func (l *Listener) register(c *Conn) {
	c.onClose = func(c *Conn) {
		l.mu.Lock()
		delete(l.conns, c.id)
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.conns[c.id] = c
	l.mu.Unlock()
}

// expect reads a message that must be of kind k.
func expect(uc *net.UnixConn, k uint16) error {
	h, _, _, err := readPacket(uc, 0)
	if err != nil {
		return err
	}
	if h.Kind != k {
		return fmt.Errorf("%w: peer sent %s, want %s", ErrHandshake, kindName(h.Kind), kindName(k))
	}
	return nil
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

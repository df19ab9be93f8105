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
)

// Listener waits for dialers on a name.
//
// It owns two files in its runtime directory: NAME.sock, the SOCK_SEQPACKET
// socket that dialers connect to, and NAME.lock, on which it holds an flock
// for its lifetime, so that two listeners cannot take the same name and a
// crashed one's leftover socket can be told apart from a live one (the
// kernel drops the lock of a dead process).
//
// A goroutine accepts sockets and admits each one within the listener's
// limits (ListenOptions.MaxHandshakes, MaxConns and their per-uid forms;
// the excess is refused at once with ErrListenerBusy). Every admitted
// socket gets a goroutine of its own that checks the dialer's credentials
// and runs the whole handshake, or answers an inspector (see Inspect), so
// that a slow, silent or hostile dialer costs only that goroutine and its
// descriptor, for at most ListenOptions.HandshakeTimeout, and never delays
// another dialer. Accept returns the completed connections.
//
// Concurrency: all methods may be called from any goroutine.
type Listener struct {
	name, path, lockPath string
	opts                 ListenOptions // with the defaults filled in
	allow                allowList

	ln   *net.UnixListener
	lock *os.File

	accepted  chan *Conn // completed handshakes, handed over by their goroutines
	reports   chan error // failed attempts, for Accept; dropped while full
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu        sync.Mutex
	conns     map[uint64]*Conn           // live connections, for Inspect
	socks     map[*net.UnixConn]struct{} // sockets not yet past the handshake
	nextID    uint64
	pending   count // sockets admitted and not yet accepted or failed
	connCount count // connections live or in the making
}

// reportQueue is how many failed attempts wait for Accept.
const reportQueue = 16

// count is a number of things in total and per uid.
type count struct {
	total int
	byUID map[int]int
}

// take adds one for uid unless that would pass max in total or perUID; it
// returns what stood in the way ("" if nothing did). what names the
// things counted ("handshakes in progress"), opt the option of the limit.
func (c *count) take(uid, max, perUID int, what, opt string) string {
	switch {
	case c.total >= max:
		return fmt.Sprintf("%d %s, the listener's limit (ListenOptions.%s)", c.total, what, opt)
	case c.byUID[uid] >= perUID:
		return fmt.Sprintf("uid %d has %d %s, the listener's limit per uid (ListenOptions.%sPerUID)", uid, c.byUID[uid], what, opt)
	}
	if c.byUID == nil {
		c.byUID = make(map[int]int)
	}
	c.total++
	c.byUID[uid]++
	return ""
}

func (c *count) put(uid int) {
	c.total--
	if c.byUID[uid]--; c.byUID[uid] <= 0 {
		delete(c.byUID, uid)
	}
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
	allow, err := o.side().check()
	if err == nil {
		err = o.fill()
	}
	if err != nil {
		return nil, err
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
		opts: o, allow: allow,
		ln: ln, lock: lock,
		accepted: make(chan *Conn),
		reports:  make(chan error, reportQueue),
		done:     make(chan struct{}),
		conns:    make(map[uint64]*Conn),
		socks:    make(map[*net.UnixConn]struct{}),
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

// Accept waits for the next connection whose handshake has completed
// and returns it. The handshakes run without it, concurrently, one
// goroutine each (see Listener): in shared-memory mode the listener
// creates two ring segments, one per direction (a connection is two
// sealed memfds, each with its out-of-band lane), attaches its own
// producer and consumer, passes both memfds to the dialer with SCM_RIGHTS
// and watches the dialer's process; otherwise the connection falls back to
// the socket (see Conn.FellBack), and the listener passes the dialer one
// end of a socketpair that it creates for the out-of-band lane. A
// completed connection waits for Accept, holding its handshake slot
// (ListenOptions.MaxHandshakes) meanwhile; the dialer may already send.
// ctx bounds the wait.
//
// An error that matches ErrPeerRefused or ErrHandshake (ErrListenerBusy
// and ErrNoSharedMemory match ErrHandshake too) concerns one attempt only
// (a dialer that was refused, refused this listener, spoke another
// protocol, gave up, or came while the listener was at a limit): the
// listener stays open and Accept may be called again. Such reports wait
// in a queue of 16 entries and are dropped while it is full. After Close,
// Accept returns ErrClosed.
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
	case c := <-l.accepted:
		return c, nil
	case err := <-l.reports:
		return nil, err
	case <-ctx.Done():
		return nil, fmt.Errorf("accept %q: %w", l.name, ctx.Err())
	case <-l.done:
		return nil, fmt.Errorf("accept %q: %w", l.name, ErrClosed)
	}
}

// Close stops listening, removes the socket and lock files and releases
// the name. Connections already accepted stay open; handshakes in
// progress are cut off and connections not yet accepted are closed, which
// their dialers see as the end of the stream. Close is idempotent.
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
		l.wg.Wait()
		// Removed while the lock is held: see lockName.
		os.Remove(l.lockPath)
		l.lock.Close()
	})
	if err != nil {
		return fmt.Errorf("close listener %q: %w", l.name, err)
	}
	return nil
}

// serve accepts sockets until the listener closes, and starts a
// handshake goroutine for each one that the limits admit.
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
			l.report(err)
			select {
			case <-time.After(backoff):
				continue
			case <-l.done:
				return
			}
		}
		backoff = 0
		cred, err := peerCred(uc)
		if err != nil {
			uc.Close()
			l.report(fmt.Errorf("%w: %w", ErrHandshake, err))
			continue
		}
		l.mu.Lock()
		why := l.pending.take(cred.UID, l.opts.MaxHandshakes, l.opts.MaxHandshakesPerUID, "handshakes in progress", "MaxHandshakes")
		l.mu.Unlock()
		if why != "" {
			l.refuseBusy(uc, cred, why)
			continue
		}
		if !l.track(uc) {
			l.release(cred)
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer l.release(cred)
			l.handle(uc, cred)
		}()
	}
}

// release gives back the handshake slot of a dialer with cred.
func (l *Listener) release(cred Cred) {
	l.mu.Lock()
	l.pending.put(cred.UID)
	l.mu.Unlock()
}

// refuseBusy tells a dialer that a limit was reached, and closes its
// socket. The socket is new, so the answer fits its buffer: the write
// does not wait.
func (l *Listener) refuseBusy(uc *net.UnixConn, cred Cred, why string) {
	err := fmt.Errorf("%w: %w: %s", ErrListenerBusy, ErrHandshake, why)
	h := newHello(kindReject)
	h.Flags = flagBusy
	uc.SetDeadline(time.Now().Add(busyWriteTimeout))
	writePacket(uc, h.encode(why))
	uc.Close()
	l.report(fmt.Errorf("dialer pid %d (uid %d): %w", cred.PID, cred.UID, err))
}

// busyWriteTimeout bounds the write of a refusal.
const busyWriteTimeout = 10 * time.Millisecond

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
	case l.reports <- fmt.Errorf("accept %q: %w", l.name, err):
	default:
	}
}

func (l *Listener) newID() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextID++
	return l.nextID
}

// reserve takes a connection slot for a dialer with cred, or says which
// limit stands in the way. register or unreserve gives it back.
func (l *Listener) reserve(cred Cred) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.connCount.take(cred.UID, l.opts.MaxConns, l.opts.MaxConnsPerUID, "connections open", "MaxConns")
}

func (l *Listener) unreserve(cred Cred) {
	l.mu.Lock()
	l.connCount.put(cred.UID)
	l.mu.Unlock()
}

// register records a live connection for Inspect until it closes, and
// hands its connection slot to it.
func (l *Listener) register(c *Conn) {
	c.onClose = func(c *Conn) {
		l.mu.Lock()
		delete(l.conns, c.id)
		l.connCount.put(c.peer.UID)
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.conns[c.id] = c
	l.mu.Unlock()
}

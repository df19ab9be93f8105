package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/shmlane/shmlane"
	"github.com/shmlane/shmlane/fallback"
)

// Message transports with the Sender/Receiver contract, measured across
// two processes: this one sends (and times round trips), the peer
// receives (or echoes). The peer opens its side by name or address.

// msgEnd is one side of a message transport.
type msgEnd interface {
	Send(msg []byte) error
	Recv(buf []byte) (int, error)
	Close() error
}

// batchSender is a msgEnd that can publish several messages at once
// (shmlane.Conn).
type batchSender interface {
	SendBatch(msgs [][]byte) (int, error)
}

// batchReceiver is a msgEnd that can take several messages at once
// (shmlane.Conn).
type batchReceiver interface {
	RecvBatch(max int, fn func(msg []byte)) (int, error)
}

// sendOnly adapts a Sender for msgEnd (a FIFO carries one direction).
type sendOnly struct{ shmlane.Sender }

func (sendOnly) Recv([]byte) (int, error) { return 0, errors.New("one-way transport") }

type recvOnly struct{ shmlane.Receiver }

func (recvOnly) Send([]byte) error { return errors.New("one-way transport") }

// msgKind opens the two ends of a message transport.
type msgKind struct {
	// listen prepares this process's side of a one-way (stream) or
	// two-way (pingpong) case.
	listen func(dir string, duplex bool) (msgListener, error)
	// dial opens the peer's side from the listener's address and the
	// descriptors it passed.
	dial func(ctx context.Context, addr string, files []*os.File) (msgEnd, error)
}

// msgListener is this process's side of a message transport, prepared
// before the peer starts.
type msgListener struct {
	// addr is what the peer opens: a name, a path or an address.
	addr string
	// files are passed to the peer as its descriptors (startPeer closes
	// them here).
	files []*os.File
	// accept completes this side once the peer has started.
	accept func(ctx context.Context) (msgEnd, error)
	// cleanup releases what listen made; nil if nothing.
	cleanup func()
}

var msgKinds = map[string]msgKind{
	"conn":    connKind(false),
	"connfb":  connKind(true),
	"pipefb":  pipeFallbackKind,
	"rawpipe": rawPipeKind,
	"rawfifo": rawFIFOKind,
	"rawunix": rawSocketKind("unixpacket"),
	"rawtcp":  rawSocketKind("tcp"),
	"unix": {
		listen: func(dir string, _ bool) (msgListener, error) {
			path := filepath.Join(dir, "bench.sock")
			l, err := fallback.ListenUnix(path, nil)
			if err != nil {
				return msgListener{}, err
			}
			accept := func(ctx context.Context) (msgEnd, error) {
				if d, ok := ctx.Deadline(); ok {
					l.SetDeadline(d)
				}
				return l.Accept()
			}
			return msgListener{addr: path, accept: accept, cleanup: func() { l.Close() }}, nil
		},
		dial: func(ctx context.Context, addr string, _ []*os.File) (msgEnd, error) {
			return fallback.DialUnix(ctx, addr, nil)
		},
	},
	"tcp": {
		listen: func(string, bool) (msgListener, error) {
			l, err := fallback.ListenTCP("127.0.0.1:0")
			if err != nil {
				return msgListener{}, err
			}
			accept := func(ctx context.Context) (msgEnd, error) {
				if d, ok := ctx.Deadline(); ok {
					l.SetDeadline(d)
				}
				return l.Accept()
			}
			return msgListener{addr: l.Addr().String(), accept: accept, cleanup: func() { l.Close() }}, nil
		},
		dial: func(ctx context.Context, addr string, _ []*os.File) (msgEnd, error) {
			return fallback.DialTCP(ctx, addr)
		},
	},
	"fifo": {
		listen: func(dir string, _ bool) (msgListener, error) {
			path := filepath.Join(dir, "bench.fifo")
			if err := fallback.CreateFIFO(path); err != nil {
				return msgListener{}, err
			}
			accept := func(ctx context.Context) (msgEnd, error) {
				s, err := fallback.OpenFIFOSender(ctx, path)
				if err != nil {
					return nil, err
				}
				return sendOnly{s}, nil
			}
			return msgListener{addr: path, accept: accept, cleanup: func() { os.Remove(path) }}, nil
		},
		dial: func(ctx context.Context, addr string, _ []*os.File) (msgEnd, error) {
			r, err := fallback.OpenFIFOReceiver(ctx, addr)
			if err != nil {
				return nil, err
			}
			return recvOnly{r}, nil
		},
	},
}

func connKind(force bool) msgKind {
	return msgKind{
		listen: func(dir string, _ bool) (msgListener, error) {
			name := "bench-" + strconv.Itoa(os.Getpid())
			l, err := shmlane.Listen(name, &shmlane.ListenOptions{RuntimeDir: dir, ForceFallback: force})
			if err != nil {
				return msgListener{}, err
			}
			accept := func(ctx context.Context) (msgEnd, error) { return l.Accept(ctx) }
			return msgListener{addr: dir + "|" + name, accept: accept, cleanup: func() { l.Close() }}, nil
		},
		dial: func(ctx context.Context, addr string, _ []*os.File) (msgEnd, error) {
			i := len(addr) - 1
			for i >= 0 && addr[i] != '|' {
				i--
			}
			return shmlane.Dial(ctx, addr[i+1:], &shmlane.DialOptions{RuntimeDir: addr[:i]})
		},
	}
}

func newMsgTransport(name, how string, streamOnly bool) *transport {
	return &transport{
		name:       name,
		how:        how,
		check:      func(*benchConfig) error { return nil },
		newCase:    func(c benchCase) caseRunner { return &msgCase{peerCase: peerCase{c: c}, kind: name} },
		streamOnly: streamOnly,
	}
}

var (
	connTransport = newMsgTransport("conn", "shmlane.Listen and Dial by name, two processes: the SPSC rings of a "+
		"connection. Stream: Conn.SendBatch of -batch messages (Send at -batch 1), Conn.RecvBatch of all that are "+
		"there, as the ring's stream does. Pingpong: Send and Recv.", false)
	connFallbackTransport = newMsgTransport("connfb", "shmlane.Listen and Dial with ForceFallback: the connection's "+
		"SOCK_SEQPACKET socket carries the messages.", false)
	fifoTransport = newMsgTransport("fifo", "a named pipe (fallback.CreateFIFO), length-prefixed frames, one write per "+
		"message; stream only (one direction).", true)
	unixTransport = newMsgTransport("unix", "a unix SOCK_SEQPACKET socket (fallback.ListenUnix/DialUnix), one message "+
		"per packet.", false)
	tcpTransport = newMsgTransport("tcp", "TCP over loopback (fallback.ListenTCP/DialTCP), length-prefixed frames, "+
		"TCP_NODELAY.", false)
)

// msgCase: this process sends (and, for pingpong, receives the echo).
type msgCase struct {
	peerCase
	kind string
	dir  string
	end  msgEnd
}

func (m *msgCase) setup() error {
	dir, err := os.MkdirTemp("", "shmlane-bench-")
	if err != nil {
		return err
	}
	m.dir = dir
	m.onClose(func() error { return os.RemoveAll(dir) })
	k := msgKinds[m.kind]
	duplex := m.c.mode == modePingpong
	l, err := k.listen(dir, duplex)
	if err != nil {
		return err
	}
	if l.cleanup != nil {
		m.onClose(func() error { l.cleanup(); return nil })
	}
	role := "msg-stream"
	if duplex {
		role = "msg-echo"
	}
	spec := peerSpec{Role: role, Size: m.c.size, Kind: m.kind, Addr: l.addr}
	if m.c.transport.batches {
		spec.Batch = m.c.batch // the consumer takes what is there with RecvBatch, as the ring's does
	}
	if m.peer, err = startPeer(spec, m.c.limit(), l.files); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if m.end, err = l.accept(ctx); err != nil {
		return m.peer.explain(fmt.Errorf("accept the peer: %w", err))
	}
	m.onClose(m.end.Close)
	return m.peer.awaitReady()
}

func (m *msgCase) run(w *window) (measurement, error) {
	msg := payload(m.c.size)
	if m.c.mode == modeStream {
		bs, batched := m.end.(batchSender)
		var batch [][]byte
		if batched = batched && m.c.transport.batches && m.c.batch > 1; batched {
			batch = newBatch(m.c.batch, m.c.size)
		}
		every := uint64(64)
		if batched {
			every = uint64(max(64/len(batch), 1) * len(batch))
		}
		w.open()
		end := time.Now().Add(m.c.duration)
		var seq uint64
		for {
			if batched {
				stampBatch(batch, seq, 0)
				n, err := bs.SendBatch(batch)
				seq += uint64(n)
				if err != nil {
					return measurement{}, m.peer.explain(fmt.Errorf("send message %d: %w", seq, err))
				}
			} else {
				stamp(msg, seq)
				if err := m.end.Send(msg); err != nil {
					return measurement{}, m.peer.explain(fmt.Errorf("send message %d: %w", seq, err))
				}
				seq++
			}
			if seq%every == 0 && !time.Now().Before(end) {
				break
			}
		}
		w.close(seq)
		m.end.Close()
		return m.streamEnd(seq)
	}
	pm, err := m.pingpong(w, m.end.Send, m.end.Recv)
	if err != nil {
		return pm, err
	}
	m.end.Close()
	return m.pingpongEnd(pm)
}

func dialPeer(spec peerSpec, files []*os.File) (msgEnd, error) {
	k, ok := msgKinds[spec.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown transport %q", spec.Kind)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return k.dial(ctx, spec.Addr, files)
}

func msgStreamPeer(spec peerSpec, files []*os.File, ready func() error) (peerReport, error) {
	e, err := dialPeer(spec, files)
	if err != nil {
		return peerReport{}, err
	}
	defer e.Close()
	if err := ready(); err != nil {
		return peerReport{}, err
	}
	s := newStreamCounter(spec.Size)
	if br, ok := e.(batchReceiver); ok && spec.Batch > 0 {
		for {
			if _, err := br.RecvBatch(0, s.take); errors.Is(err, io.EOF) {
				return s.report(time.Now()), nil
			} else if err != nil {
				return s.report(time.Now()), fmt.Errorf("receive message %d: %w", s.n, err)
			}
		}
	}
	for {
		n, err := e.Recv(s.buf)
		if errors.Is(err, io.EOF) {
			return s.report(time.Now()), nil
		}
		if err != nil {
			return s.report(time.Now()), fmt.Errorf("receive message %d: %w", s.n, err)
		}
		s.check(n)
	}
}

func msgEchoPeer(spec peerSpec, files []*os.File, ready func() error) (peerReport, error) {
	e, err := dialPeer(spec, files)
	if err != nil {
		return peerReport{}, err
	}
	defer e.Close()
	if err := ready(); err != nil {
		return peerReport{}, err
	}
	buf := make([]byte, spec.Size)
	var rep peerReport
	for {
		n, err := e.Recv(buf)
		if errors.Is(err, io.EOF) {
			return rep, nil
		}
		if err != nil {
			return rep, fmt.Errorf("receive request %d: %w", rep.Received, err)
		}
		if err := e.Send(buf[:n]); err != nil {
			return rep, fmt.Errorf("echo request %d: %w", rep.Received, err)
		}
		rep.Received++
	}
}

package shmlane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmlane/shmlane/fallback"
)

// A fallback connection is the rendezvous socket, adopted by the fallback
// package's unix transport (one SOCK_SEQPACKET packet per message). Each
// packet's first byte is a tag:
//
//	tagData: the rest is one message
//	tagEnd:  the sender closed cleanly; nothing follows
//
// The kernel reports a peer's close and its death alike (end of file, or
// ECONNRESET once if the peer left data of ours unread), so Close queues a
// tagEnd first. A receiver that reaches the end of the socket without one
// asks the peer's pidfd whether the process has exited: ErrPeerGone if so,
// io.EOF if it is alive (it closed while a send was in progress or while
// its socket buffer stayed full).
const (
	tagData byte = 0
	tagEnd  byte = 1

	// fbMaxMessage is a fallback connection's MaxMessage: the unix
	// transport's packet limit less the tag.
	fbMaxMessage = fallback.MaxPacketMessage - 1

	// exitGrace is how long a side that saw the socket close waits for
	// the peer's pidfd to report an exit.
	exitGrace = 250 * time.Millisecond
	// closeWait bounds Close's wait for room for tagEnd when no deadline
	// is set.
	closeWait = time.Second
)

// fbConn is the fallback mode of a Conn.
type fbConn struct {
	uc   *fallback.UnixConn
	peer *pidWatch // nil when the peer's pid is unknown
	max  int

	closed   atomic.Bool
	deadline atomic.Int64 // unix nanoseconds of the last SetDeadline, 0 for none

	smu     sync.Mutex // serialises senders; guards the fields below
	sbuf    []byte
	sendErr error // sticky: the peer closed or is gone

	rmu  sync.Mutex // serialises receivers; guards the fields below
	rbuf []byte
	rn   int   // a received packet waiting in rbuf[:rn] (0: none)
	rerr error // sticky: the end of the stream (io.EOF, ErrPeerGone, ErrCorrupt)

	sent, sentBytes, received, receivedBytes atomic.Uint64
}

func newFbConn(uc *fallback.UnixConn, peer *pidWatch) *fbConn {
	return &fbConn{uc: uc, peer: peer, max: min(fbMaxMessage, uc.MaxMessage()-1)}
}

func (f *fbConn) send(ctx context.Context, msg []byte) error {
	if f.closed.Load() {
		return ErrClosed
	}
	if len(msg) > f.max {
		return &transportError{
			err:  fmt.Errorf("%s send: %w: message is %d bytes, MaxMessage is %d", f.uc.Transport(), fallback.ErrTooLarge, len(msg), f.max),
			kind: ErrTooLarge,
		}
	}
	f.smu.Lock()
	defer f.smu.Unlock()
	if f.sendErr != nil {
		return f.sendErr
	}
	if f.sbuf == nil {
		f.sbuf = make([]byte, 1+f.max)
	}
	b := f.sbuf[:1+len(msg)]
	b[0] = tagData
	copy(b[1:], msg)
	var err error
	if ctx == nil {
		err = f.uc.Send(b)
	} else {
		err = f.uc.SendContext(ctx, b)
	}
	if err != nil {
		return f.sendFailed(err)
	}
	f.sent.Add(1)
	f.sentBytes.Add(uint64(len(msg)))
	return nil
}

// sendFailed maps the transport's error to this package's sentinels.
func (f *fbConn) sendFailed(err error) error {
	switch {
	case f.closed.Load() || errors.Is(err, fallback.ErrClosed):
		return ErrClosed
	case errors.Is(err, fallback.ErrPeerClosed):
		kind := ErrPeerClosed
		if f.peerExited() {
			kind = ErrPeerGone
		}
		f.sendErr = &transportError{err: err, kind: kind}
		return f.sendErr
	case errors.Is(err, fallback.ErrTooLarge):
		return &transportError{err: err, kind: ErrTooLarge}
	}
	return err
}

func (f *fbConn) recv(ctx context.Context, buf []byte) (int, error) {
	if f.closed.Load() {
		return 0, ErrClosed
	}
	f.rmu.Lock()
	defer f.rmu.Unlock()
	if f.rbuf == nil {
		f.rbuf = make([]byte, 1+f.max)
	}
	resets := 0
	for {
		if f.rn > 0 {
			n := f.rn - 1
			if n > len(buf) {
				return n, fmt.Errorf("%s recv: %w: message is %d bytes, buffer %d", f.uc.Transport(), io.ErrShortBuffer, n, len(buf))
			}
			copy(buf, f.rbuf[1:f.rn])
			f.rn = 0
			f.received.Add(1)
			f.receivedBytes.Add(uint64(n))
			return n, nil
		}
		if f.rerr != nil {
			return 0, f.rerr
		}
		var n int
		var err error
		if ctx == nil {
			n, err = f.uc.Recv(f.rbuf)
		} else {
			n, err = f.uc.RecvContext(ctx, f.rbuf)
		}
		switch {
		case err == nil && n == 0:
			f.rerr = &transportError{err: fmt.Errorf("%s recv: %w: packet without a tag", f.uc.Transport(), fallback.ErrCorrupt), kind: ErrCorrupt}
		case err == nil && f.rbuf[0] == tagData:
			f.rn = n
		case err == nil && f.rbuf[0] == tagEnd && n == 1:
			f.rerr = io.EOF
		case err == nil:
			f.rerr = &transportError{err: fmt.Errorf("%s recv: %w: packet of %d bytes with tag %#x", f.uc.Transport(), fallback.ErrCorrupt, n, f.rbuf[0]), kind: ErrCorrupt}
		case f.closed.Load() || errors.Is(err, fallback.ErrClosed):
			return 0, ErrClosed
		case err == io.EOF:
			f.rerr = io.EOF
			if f.peerExited() {
				f.rerr = ErrPeerGone
			}
		case errors.Is(err, fallback.ErrPeerClosed) && resets < 2:
			// ECONNRESET: the peer closed with data of ours unread. The
			// kernel reports it once, ahead of what the peer sent
			// before: read on.
			resets++
		case errors.Is(err, fallback.ErrPeerClosed):
			f.rerr = &transportError{err: err, kind: ErrPeerGone}
		case errors.Is(err, fallback.ErrCorrupt):
			f.rerr = &transportError{err: err, kind: ErrCorrupt}
		default:
			return 0, err // a deadline or the context: nothing is lost
		}
	}
}

// peerExited reports whether the peer process has exited (or cannot be
// watched), giving it exitGrace to finish exiting.
func (f *fbConn) peerExited() bool {
	return f.peer == nil || f.peer.exited(exitGrace)
}

func (f *fbConn) setDeadline(t time.Time) error {
	if f.closed.Load() {
		return ErrClosed
	}
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	f.deadline.Store(ns)
	if err := f.uc.SetDeadline(t); err != nil {
		if errors.Is(err, fallback.ErrClosed) {
			return ErrClosed
		}
		return err
	}
	return nil
}

// close queues tagEnd unless a Send is in progress or the peer is known
// to be closed, then closes the socket.
func (f *fbConn) close() error {
	f.closed.Store(true)
	if f.smu.TryLock() {
		if f.sendErr == nil {
			d := time.Now().Add(closeWait)
			if ns := f.deadline.Load(); ns != 0 {
				d = time.Unix(0, ns)
			}
			ctx, cancel := context.WithDeadline(context.Background(), d)
			f.uc.SendContext(ctx, []byte{tagEnd})
			cancel()
		}
		f.smu.Unlock()
	}
	err := f.uc.Close()
	f.peer.close()
	return err
}

// adoptSocket turns the rendezvous socket into a fallback connection to
// the process pid (0: unknown). It closes uc; the transport keeps a
// duplicate.
func adoptSocket(uc *net.UnixConn, pid int) (*fbConn, error) {
	uc.SetDeadline(time.Time{})
	f, err := uc.File()
	uc.Close()
	if err != nil {
		return nil, err
	}
	tc, err := fallback.NewUnixConn(f)
	if err != nil {
		return nil, err
	}
	var w *pidWatch
	if pid > 0 {
		if w, err = watchPID(pid); err != nil {
			tc.Close()
			return nil, err
		}
	}
	return newFbConn(tc, w), nil
}

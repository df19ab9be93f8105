package shmlane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shmlane/shmlane/fallback"
	"github.com/shmlane/shmlane/ring"
)

// A fallback connection is two sockets: the rendezvous socket, which
// carries the data, and the out-of-band lane, one end of a SOCK_SEQPACKET
// socketpair that the listener made for the connection and passed to the
// dialer during the handshake (none if the peers negotiated no lane).
//
// Data: the fallback package's unix transport sends each message as one
// packet, its packet tag (fbPacketData) and then ours:
//
//	tagData: 4 bytes, native order: the number of lane packets (urgent
//	         messages and flushes) the sender had sent when it sent this
//	         message, modulo 2^32; then the message
//	tagEnd:  the sender closed cleanly; nothing follows
//
// The kernel reports a peer's close and its death alike (end of file, or
// ECONNRESET once if the peer left data of ours unread), so Close queues a
// tagEnd first. A receiver that reaches the end of the socket without one
// asks the peer's pidfd whether the process has exited: ErrPeerGone if so,
// io.EOF if it is alive (it closed while a send was in progress or while
// its socket buffer stayed full).
//
// Lane: one packet per event, written by this package directly:
//
//	tagUrgent: the rest is one urgent message
//	tagFlush:  8 bytes, native order: the number of data messages the
//	           sender had sent when it flushed
//
// SOCK_SEQPACKET keeps each channel in order, so the receiver numbers the
// data messages itself, from 0, and drops those numbered below the count
// of the latest flush it has read. A sender counts a message once its
// send has returned, and writes a flush after reading that count, so the
// messages a flush covers are always queued (or received) by the time the
// flush can be read: a receiver that finds fewer has a corrupt peer. The
// same holds the other way round: a sender counts a lane packet once its
// write has returned, before a data message can read the count, so the
// lane packets a data message counts are queued on the lane by the time
// the message can be read.
//
// Polling rule: the receiver reads the lane (one non-blocking read, a
// system call) before it delivers a data message that counts more lane
// packets than it has read (causality: what the peer sent after an urgent
// message or a flush never comes before it), every FallbackOOBCheckEvery
// data messages (default 16; 1 is before every one), when the data
// channel is empty, and before it reports the end of the stream. It does
// not look while it drops messages that a flush covers. The trade-off is
// the lecture's: the shared-memory lane is looked at before every message
// for the price of a load, while here each look is a system call, doubling
// the cost of a message at 1; at N, an urgent message or a flush sent while
// a backlog is queued takes effect within N-1 data messages of the backlog
// (a flush may let up to N-1 of the messages it covers through), and the
// lane costs one system call per N messages. A receiver with nothing to
// read waits on both sockets at once (see fbIO), so an urgent message wakes
// it.
const (
	tagData byte = 0
	tagEnd  byte = 1

	tagUrgent byte = 2
	tagFlush  byte = 3

	// fbPacketData is the first byte of every packet that the fallback
	// package's unix transport sends (fallback/stream.go, packetData);
	// TestFallbackPacketTag pins it.
	fbPacketData byte = 0x01
	// fbHeader is the bytes before a data packet's payload: the two tags
	// and the lane count.
	fbHeader = 6
	// fbEndSize is a tagEnd packet's length.
	fbEndSize = 2
	// flushSize is a tagFlush packet's length.
	flushSize = 9

	// fbMaxMessage is a fallback connection's MaxMessage: the unix
	// transport's packet limit less our header.
	fbMaxMessage = fallback.MaxPacketMessage - (fbHeader - 1)

	// exitGrace is how long a side that saw the socket close waits for
	// the peer's pidfd to report an exit.
	exitGrace = 250 * time.Millisecond
	// closeWait bounds Close's wait for room for tagEnd when no deadline
	// is set.
	closeWait = time.Second
)

// longAgo is the deadline that interrupts a waiting receive when its
// context is done.
var longAgo = time.Unix(1, 0)

// fbConn is the fallback mode of a Conn.
type fbConn struct {
	uc   *fallback.UnixConn // sends data packets; io reads them
	io   *fbIO
	peer *pidWatch // nil when the peer's pid is unknown
	max  int

	oobCap    int // the lanes' negotiated size, 0 without a lane
	maxUrgent int
	every     int // the receiver's lane check interval, >= 1

	closed   atomic.Bool
	deadline atomic.Int64 // unix nanoseconds of the last SetDeadline, 0 for none

	// lanePackets counts the lane packets this side has written (urgent
	// messages and flushes), each once its write returned; a data message
	// carries the count.
	lanePackets atomic.Uint32

	smu     sync.Mutex // serialises data senders; guards the fields below
	sbuf    []byte
	sendErr error // sticky: the peer closed or is gone

	// umu serialises lane writes (SendUrgent, Flush), so that flush counts
	// go out in increasing order. It is never held while waiting.
	umu  sync.Mutex
	ubuf []byte

	rmu sync.Mutex // serialises receivers; guards the fields below
	// rn > 0: data message number pend waits in io.rbuf[:rn]; it counts
	// plane lane packets before it.
	rn    int
	pend  uint64
	plane uint32
	// laneRead counts the lane packets read (modulo 2^32).
	laneRead uint32
	// un > 0: an urgent message waits in io.lbuf[:un].
	un int
	// next numbers the data messages taken off the socket; those below
	// drop (the latest flush's count) are discarded.
	next, drop uint64
	since      int  // data messages delivered since the last lane check
	laneHot    bool // the last check stopped at an urgent message: look again
	laneDone   bool // no lane, or it reached its end
	resets     int  // ECONNRESETs skipped by the current call
	rerr       error
	// The wait's callback, made once (a closure per wait would allocate),
	// and its argument and results.
	waitFn         func(uintptr) bool
	wbuf           []byte
	wn             int
	wurgent, wdone bool
	werr           error

	// bmu serialises batch receivers (RecvBatch); bbuf is their buffer,
	// made on first use. Taken before rmu.
	bmu  sync.Mutex
	bbuf []byte

	dmu      sync.Mutex // guards the receive deadline's state below
	rdl      time.Time  // the deadline set with SetDeadline
	watchGen uint64     // counts context watches
	watching bool       // a context watch is armed
	cut      bool       // a done context set the receive deadline to longAgo

	sent, sentBytes, received, receivedBytes atomic.Uint64
	urgentSent, urgentReceived, flushes      atomic.Uint64
	discarded, discardedBytes                atomic.Uint64
}

func newFbConn(uc *fallback.UnixConn, fio *fbIO, peer *pidWatch, oobCap, every int) *fbConn {
	f := &fbConn{uc: uc, io: fio, peer: peer, max: min(fbMaxMessage, uc.MaxMessage()-(fbHeader-1)), every: checkEvery(every)}
	if fio.lane != nil {
		f.oobCap = oobCap
		f.maxUrgent = min(ring.MaxMessage(oobCap), fbMaxMessage, fio.laneRoom-1)
	}
	f.laneDone = fio.lane == nil
	f.since = f.every // look at the lane before the first message
	fio.rbuf = make([]byte, fbHeader+f.max+1)
	fio.lbuf = make([]byte, 1+f.maxUrgent+1)
	f.waitFn = func(uintptr) bool {
		f.wn, f.wurgent, f.wdone, f.werr = f.step(f.wbuf)
		return f.wdone
	}
	return f
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
		f.sbuf = make([]byte, fbHeader-1+f.max)
	}
	b := f.sbuf[:fbHeader-1+len(msg)]
	b[0] = tagData
	binary.NativeEndian.PutUint32(b[1:], f.lanePackets.Load())
	copy(b[fbHeader-1:], msg)
	var err error
	if ctx == nil {
		err = f.uc.Send(b)
	} else {
		err = f.uc.SendContext(ctx, b)
	}
	if err != nil {
		return f.sendFailed(err)
	}
	// Counted once sent: a flush that reads the count covers it.
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
		f.sendErr = f.peerClosed(err)
		return f.sendErr
	case errors.Is(err, fallback.ErrTooLarge):
		return &transportError{err: err, kind: ErrTooLarge}
	}
	return err
}

// peerClosed is the error for a send that found the peer closed: it
// matches ErrPeerGone if the peer process has exited, else ErrPeerClosed.
func (f *fbConn) peerClosed(err error) error {
	kind := ErrPeerClosed
	if f.peerExited() {
		kind = ErrPeerGone
	}
	return &transportError{err: err, kind: kind}
}

// sendUrgent writes msg to the lane without waiting.
func (f *fbConn) sendUrgent(msg []byte) error {
	if f.closed.Load() {
		return ErrClosed
	}
	if f.io.lane == nil {
		return errNoLane("send urgent")
	}
	if len(msg) > f.maxUrgent {
		return &transportError{
			err:  fmt.Errorf("%s send urgent: %w: message is %d bytes, MaxUrgent is %d", f.uc.Transport(), fallback.ErrTooLarge, len(msg), f.maxUrgent),
			kind: ErrTooLarge,
		}
	}
	f.umu.Lock()
	defer f.umu.Unlock()
	if f.ubuf == nil {
		f.ubuf = make([]byte, 1+f.maxUrgent)
	}
	p := f.ubuf[:1+len(msg)]
	p[0] = tagUrgent
	copy(p[1:], msg)
	if err := f.io.sendLane(p); err != nil {
		return f.laneFailed("send urgent", err)
	}
	f.lanePackets.Add(1)
	f.urgentSent.Add(1)
	return nil
}

// flush writes a flush carrying the number of data messages sent so far,
// waiting (until the deadline, or Close) while the lane is full. The
// kernel reports a unix socket writable once its queued packets take at
// most a quarter of its send buffer, so the wait ends when the peer has
// drained most of the lane, not at its first read.
func (f *fbConn) flush() error {
	if f.closed.Load() {
		return ErrClosed
	}
	if f.io.lane == nil {
		return errNoLane("flush")
	}
	var err error
	try := func() bool {
		f.umu.Lock()
		defer f.umu.Unlock()
		var p [flushSize]byte
		p[0] = tagFlush
		binary.NativeEndian.PutUint64(p[1:], f.sent.Load())
		err = f.io.sendLane(p[:])
		if err == nil {
			f.lanePackets.Add(1)
		}
		return !errors.Is(err, syscall.EAGAIN)
	}
	if !try() {
		// The peer has not read the urgent messages and flushes ahead
		// of this one: wait for room.
		if werr := f.io.waitLane(try); werr != nil {
			switch {
			case f.closed.Load():
				return ErrClosed
			case errors.Is(werr, os.ErrDeadlineExceeded):
				return fmt.Errorf("%s flush: the lane stayed full: %w", f.uc.Transport(), werr)
			}
			return fmt.Errorf("%s flush: wait for room on the lane: %w", f.uc.Transport(), werr)
		}
	}
	if err != nil {
		return f.laneFailed("flush", err)
	}
	f.flushes.Add(1)
	return nil
}

// laneFailed maps the error of a lane write.
func (f *fbConn) laneFailed(op string, err error) error {
	switch {
	case f.closed.Load() || errors.Is(err, os.ErrClosed):
		return ErrClosed
	case errors.Is(err, syscall.EAGAIN):
		return fmt.Errorf("%s %s: %w: the peer has not received the urgent messages ahead (lane of %d bytes)", f.uc.Transport(), op, ErrLaneFull, f.oobCap)
	case errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET):
		return f.peerClosed(fmt.Errorf("%s %s: %w: %w", f.uc.Transport(), op, fallback.ErrPeerClosed, err))
	}
	return fmt.Errorf("%s %s: %w", f.uc.Transport(), op, err)
}

// errNoLane is the error of SendUrgent and Flush on a connection without
// an out-of-band lane.
func errNoLane(op string) error {
	return fmt.Errorf("%s: %w: one side asked for none (OOBCapacity NoOOB)", op, ErrNoLane)
}

func (f *fbConn) recv(ctx context.Context, buf []byte) (int, error) {
	n, _, err := f.recvMsg(ctx, buf)
	return n, err
}

// recvMsg waits on both sockets until step finds something. A message
// already queued is delivered even past the deadline or the context's end.
func (f *fbConn) recvMsg(ctx context.Context, buf []byte) (int, bool, error) {
	if f.closed.Load() {
		return 0, false, ErrClosed
	}
	f.rmu.Lock()
	defer f.rmu.Unlock()
	f.resets = 0
	var n int
	var urgent, done bool
	var err error
	if (ctx != nil && ctx.Err() != nil) || f.pastDeadline() {
		// The wait would fail at once: deliver what is there first.
		if n, urgent, done, err = f.step(buf); done {
			return n, urgent, err
		}
	}
	stop, err := f.watch(ctx)
	if err != nil {
		return 0, false, err
	}
	f.wbuf = buf
	werr := f.io.wait(f.waitFn)
	f.wbuf = nil
	cut := f.unwatch(stop)
	switch {
	case werr == nil:
		return f.wn, f.wurgent, f.werr
	case f.closed.Load() || errors.Is(werr, os.ErrClosed):
		return 0, false, ErrClosed
	case cut:
		return 0, false, fmt.Errorf("%s recv: %w", f.uc.Transport(), ctx.Err())
	}
	return 0, false, fmt.Errorf("%s recv: %w", f.uc.Transport(), werr)
}

// recvBatch receives one message into the batch buffer and passes it to
// fn: in fallback mode every batch is one message (the kernel hands over
// one packet per call anyway), whatever the batch limit. fn sees the
// buffer only during the call.
func (f *fbConn) recvBatch(ctx context.Context, _ int, fn func(msg []byte, urgent bool)) (int, error) {
	f.bmu.Lock()
	defer f.bmu.Unlock()
	if f.bbuf == nil {
		f.bbuf = make([]byte, max(f.max, f.maxUrgent))
	}
	n, urgent, err := f.recvMsg(ctx, f.bbuf)
	if err != nil {
		return 0, err
	}
	fn(f.bbuf[:n], urgent)
	return 1, nil
}

// pastDeadline reports whether the deadline set with SetDeadline has
// passed.
func (f *fbConn) pastDeadline() bool {
	ns := f.deadline.Load()
	return ns != 0 && time.Now().UnixNano() >= ns
}

// step does what a receive can do without waiting. done reports that the
// call is over, with a message or an error; otherwise both channels are
// empty.
func (f *fbConn) step(buf []byte) (n int, urgent, done bool, err error) {
	for {
		if f.un > 0 {
			return f.deliverUrgent(buf)
		}
		empty := false
		if f.rn == 0 && f.rerr == nil {
			var again bool
			if empty, again, err = f.readData(); err != nil {
				return 0, false, true, err
			}
			if again {
				continue // a message that a flush covers: dropped
			}
		}
		behind := f.rn > 0 && int32(f.plane-f.laneRead) > 0 // lane packets sent before the pending message are unread
		due := f.laneHot || empty || f.rerr != nil || behind || (f.rn > 0 && f.since >= f.every-1)
		if due && !f.laneDone && f.checkLane() {
			continue // an urgent message, or a flush that dropped the pending one
		}
		if f.rn > 0 && int32(f.plane-f.laneRead) > 0 {
			f.corrupt("data message %d follows %d lane packets, the lane had %d", f.pend, f.plane, f.laneRead)
			continue
		}
		switch {
		case f.rn > 0:
			return f.deliverData(buf)
		case f.rerr != nil:
			return 0, false, true, f.rerr
		}
		return 0, false, false, nil
	}
}

// readData reads one packet off the data socket. empty: there is none;
// again: it was a message that a flush covers, dropped. err is an error
// to return as it is (Close).
func (f *fbConn) readData() (empty, again bool, err error) {
	n, rerr := f.io.readData()
	p := f.io.rbuf[:max(n, 0)]
	switch {
	case rerr == nil && n == 0:
		if f.next < f.drop {
			f.corrupt("the peer closed after %d data messages, its flush counted %d", f.next, f.drop)
			return false, false, nil
		}
		f.rerr = io.EOF
		if f.peerExited() {
			f.rerr = ErrPeerGone
		}
	case rerr == nil && n == len(f.io.rbuf):
		f.corrupt("packet carries at least %d bytes, MaxMessage is %d", n-fbHeader, f.max)
	case rerr == nil && p[0] != fbPacketData:
		f.corrupt("packet of %d bytes starts with %#x, want %#x", n, p[0], fbPacketData)
	case rerr == nil && n >= fbHeader && p[1] == tagData:
		seq := f.next
		f.next++
		if seq < f.drop {
			f.discarded.Add(1)
			f.discardedBytes.Add(uint64(n - fbHeader))
			return false, true, nil
		}
		f.rn, f.pend, f.plane = n, seq, binary.NativeEndian.Uint32(p[2:])
	case rerr == nil && n == fbEndSize && p[1] == tagEnd:
		if f.next < f.drop {
			f.corrupt("the peer closed after %d data messages, its flush counted %d", f.next, f.drop)
			return false, false, nil
		}
		f.rerr = io.EOF
	case rerr == nil:
		f.corrupt("packet of %d bytes with tag %#x", n, p[min(1, n-1)])
	case errors.Is(rerr, syscall.EAGAIN):
		if f.next < f.drop {
			f.corrupt("a flush counted %d data messages, only %d arrived", f.drop, f.next)
			return false, false, nil
		}
		return true, false, nil
	case f.closed.Load() || errors.Is(rerr, os.ErrClosed):
		return false, false, ErrClosed
	case errors.Is(rerr, syscall.ECONNRESET) && f.resets < 2:
		// The peer closed with data of ours unread. The kernel says so
		// once, ahead of what the peer sent before: read on.
		f.resets++
		return false, true, nil
	case errors.Is(rerr, syscall.ECONNRESET):
		f.rerr = &transportError{err: fmt.Errorf("%s recv: %w: %w", f.uc.Transport(), fallback.ErrPeerClosed, rerr), kind: ErrPeerGone}
	default:
		return false, false, fmt.Errorf("%s recv: %w", f.uc.Transport(), rerr)
	}
	return false, false, nil
}

// checkLane reads the lane until it is empty or yields an urgent message,
// applying the flushes on the way. It reports whether it found something:
// an urgent message (in lbuf[:un]), a flush that dropped the pending data
// message, or an error.
func (f *fbConn) checkLane() (found bool) {
	f.since = 0
	for resets := 0; ; {
		n, err := f.io.readLane()
		p := f.io.lbuf[:max(n, 0)]
		switch {
		case errors.Is(err, syscall.EAGAIN):
			f.laneHot = false
			return found
		case errors.Is(err, syscall.ECONNRESET) && resets < 2:
			resets++ // the peer closed with urgent messages of ours unread
			continue
		case err != nil || n == 0:
			// The peer closed it (or this side did): the data socket
			// says how the connection ended.
			f.laneDone, f.laneHot = true, false
			f.io.dropLane()
			return found
		case n == len(f.io.lbuf):
			f.corrupt("lane packet carries at least %d bytes, MaxUrgent is %d", n-1, f.maxUrgent)
			return true
		case p[0] == tagUrgent:
			f.un, f.laneHot = n, true
			f.laneRead++
			return true
		case p[0] == tagFlush && n == flushSize:
			f.laneRead++
			count := binary.NativeEndian.Uint64(p[1:])
			if count < f.drop {
				f.corrupt("flush counts %d data messages, an earlier one %d", count, f.drop)
				return true
			}
			f.drop = count
			if f.rn > 0 && f.pend < count {
				f.discarded.Add(1)
				f.discardedBytes.Add(uint64(f.rn - fbHeader))
				f.rn, found = 0, true
			}
		default:
			f.corrupt("lane packet of %d bytes with tag %#x", n, p[0])
			return true
		}
	}
}

func (f *fbConn) deliverData(buf []byte) (int, bool, bool, error) {
	n := f.rn - fbHeader
	if n > len(buf) {
		return n, false, true, fmt.Errorf("%s recv: %w: message is %d bytes, buffer %d", f.uc.Transport(), io.ErrShortBuffer, n, len(buf))
	}
	copy(buf, f.io.rbuf[fbHeader:f.rn])
	f.rn = 0
	f.since++
	f.received.Add(1)
	f.receivedBytes.Add(uint64(n))
	return n, false, true, nil
}

func (f *fbConn) deliverUrgent(buf []byte) (int, bool, bool, error) {
	n := f.un - 1
	if n > len(buf) {
		return n, true, true, fmt.Errorf("%s recv: %w: urgent message is %d bytes, buffer %d", f.uc.Transport(), io.ErrShortBuffer, n, len(buf))
	}
	copy(buf, f.io.lbuf[1:f.un])
	f.un = 0
	f.urgentReceived.Add(1)
	return n, true, true, nil
}

// corrupt makes the receive side's failure sticky; nothing waiting is
// delivered after it.
func (f *fbConn) corrupt(format string, args ...any) {
	f.rerr = &transportError{
		err:  fmt.Errorf("%s recv: %w: "+format, append([]any{f.uc.Transport(), fallback.ErrCorrupt}, args...)...),
		kind: ErrCorrupt,
	}
	f.rn, f.un, f.laneDone, f.laneHot = 0, 0, true, false
}

// watch arms ctx to interrupt the receive wait: when ctx is done, the
// receive deadline is set to longAgo. No goroutine runs unless ctx is
// done.
func (f *fbConn) watch(ctx context.Context) (stop func() bool, err error) {
	if ctx == nil || ctx.Done() == nil {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s recv: %w", f.uc.Transport(), err)
	}
	f.dmu.Lock()
	f.watchGen++
	gen := f.watchGen
	f.watching = true
	f.dmu.Unlock()
	return context.AfterFunc(ctx, func() {
		f.dmu.Lock()
		defer f.dmu.Unlock()
		// A late run, after unwatch or for an earlier call, does nothing.
		if f.watching && f.watchGen == gen && !f.cut {
			f.cut = true
			f.io.setReadDeadline(longAgo)
		}
	}), nil
}

// unwatch disarms what watch armed and restores the deadline if ctx cut
// it, which it reports.
func (f *fbConn) unwatch(stop func() bool) (cut bool) {
	if stop == nil {
		return false
	}
	stop()
	f.dmu.Lock()
	defer f.dmu.Unlock()
	f.watching = false
	cut = f.cut
	if cut {
		f.cut = false
		f.io.setReadDeadline(f.rdl)
	}
	return cut
}

// peerExited reports whether the peer process has exited (or cannot be
// watched), giving it exitGrace to finish exiting.
func (f *fbConn) peerExited() bool {
	return f.peer == nil || f.peer.exited(exitGrace)
}

func (f *fbConn) sendBatch(ctx context.Context, msgs [][]byte) (int, error) {
	for i, msg := range msgs {
		if err := f.send(ctx, msg); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

func (f *fbConn) limits() (int, int) { return f.max, f.maxUrgent }

func (f *fbConn) transport() string { return f.uc.Transport() }

// stats reads the counters this side keeps.
func (f *fbConn) stats(st *Stats) {
	st.Sent, st.SentBytes = f.sent.Load(), f.sentBytes.Load()
	st.Received, st.ReceivedBytes = f.received.Load(), f.receivedBytes.Load()
	st.OOBCapacity = uint64(f.oobCap)
	st.UrgentSent, st.UrgentReceived = f.urgentSent.Load(), f.urgentReceived.Load()
	st.Flushes = f.flushes.Load()
	st.Discarded, st.DiscardedBytes = f.discarded.Load(), f.discardedBytes.Load()
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
	f.dmu.Lock()
	f.rdl = t
	var err error
	if !f.cut {
		err = f.io.setReadDeadline(t)
	}
	f.dmu.Unlock()
	if err == nil {
		err = f.io.setLaneDeadline(t)
	}
	if err != nil {
		if f.closed.Load() {
			return ErrClosed
		}
		return fmt.Errorf("%s set deadline: %w", f.uc.Transport(), err)
	}
	return nil
}

// close queues tagEnd unless a Send is in progress or the peer is known
// to be closed, then closes the sockets.
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
	f.io.close()
	f.peer.close()
	return err
}

// adoptSocket turns the rendezvous socket into a fallback connection to
// the process that proc watches (nil: it cannot be watched), with lane as
// its out-of-band lane (nil: none) of oobCap bytes. It closes uc and
// takes proc and lane; the transport and the receive path keep duplicates
// of uc.
func adoptSocket(uc *net.UnixConn, proc *pidWatch, lane *os.File, oobCap, every int) (*fbConn, error) {
	uc.SetDeadline(time.Time{})
	sf, err := uc.File()
	if err != nil {
		uc.Close()
		lane.Close()
		proc.close()
		return nil, err
	}
	rf, err := uc.File()
	uc.Close()
	if err != nil {
		sf.Close()
		lane.Close()
		proc.close()
		return nil, err
	}
	fio, err := newFbIO(rf, lane)
	if err != nil {
		sf.Close()
		proc.close()
		return nil, fmt.Errorf("set up the receive path: %w", err)
	}
	tc, err := fallback.NewUnixConn(sf)
	if err != nil {
		fio.close()
		proc.close()
		return nil, err
	}
	return newFbConn(tc, fio, proc, oobCap, every), nil
}

package fallback

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// Message limits.
const (
	// MaxStreamMessage is the largest message on the byte-stream
	// transports (pipe, fifo, unix with Stream, tcp): 16 MiB - 1, the
	// ring's own limit. A receiver's buffer grows to the largest frame it
	// has received.
	MaxStreamMessage = 1<<24 - 1
	// MaxPacketMessage is the largest message on a SOCK_SEQPACKET unix
	// socket: 64 KiB - 1, so that a packet (one tag byte more) fits well
	// inside the default socket send buffer (net.core.wmem_default,
	// 208 KiB on Linux) and each side needs one 64 KiB buffer.
	MaxPacketMessage = 1<<16 - 1
)

// Wire formats.
//
// Byte-stream transports carry each message as a frame:
//
//	+-----------------------------+----------------------+
//	| length: uint32 little-endian | payload: length bytes |
//	+-----------------------------+----------------------+
//
// A receiver checks length against MaxMessage before it reserves room for
// the payload, so a peer announcing 4 GiB gets ErrCorrupt, not a 4 GiB
// buffer. A SOCK_SEQPACKET socket keeps boundaries itself, so a message is
// one packet: the tag byte packetData, then the payload. The tag makes an
// empty message a one-byte packet, so that a zero-length read can only
// mean that the peer closed (a foreign peer's empty packet reads as a
// close).
const (
	frameHeader  = 4
	packetHeader = 1
	packetData   = 0x01
	// ioBufSize is the sender's frame buffer and the receiver's initial
	// read buffer: one read can deliver many small frames.
	ioBufSize = 64 << 10
)

// sendHalf sends messages over its endpoint: a frame per message built in
// a reused buffer and written with one write system call (two for a frame
// larger than the buffer), or one packet per message.
type sendHalf struct {
	e      *endpoint
	packet bool

	mu     sync.Mutex // serialises senders; guards the fields below
	buf    []byte
	broken error // sticky: wraps ErrBroken
}

// Send sends one message, waiting while the kernel's buffer is full. It
// fails with ErrTooLarge, sending nothing, if msg is longer than
// MaxMessage, and with ErrPeerClosed once the receiver has closed.
//
// If a deadline or context interrupts a frame after part of it was
// written, the stream is broken: Send returns an error wrapping both the
// cause and ErrBroken, and so does every later Send. Pipe and FIFO frames
// of up to 4 KiB (PIPE_BUF) and unix packets are written atomically and
// are never cut.
func (s *sendHalf) Send(msg []byte) error { return s.send(nil, msg) }

// SendContext is Send with a context that can cancel the wait; it then
// returns ctx's error.
func (s *sendHalf) SendContext(ctx context.Context, msg []byte) error { return s.send(ctx, msg) }

func (s *sendHalf) send(ctx context.Context, msg []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.e
	if e.closed.Load() {
		return ErrClosed
	}
	if s.broken != nil {
		return s.broken
	}
	if len(msg) > e.max {
		return fmt.Errorf("%s send: %w: message is %d bytes, MaxMessage is %d", e.transport, ErrTooLarge, len(msg), e.max)
	}
	stop, err := e.watch(ctx, writeSide)
	if err != nil {
		return fmt.Errorf("%s send: %w", e.transport, err)
	}
	n, total, err := s.write(msg)
	if err != nil {
		if n > 0 && n < total && !e.closed.Load() {
			s.broken = fmt.Errorf("%s send: %w: %d of %d bytes of a frame were written", e.transport, ErrBroken, n, total)
			err = fmt.Errorf("%w: %w", s.broken, peerClosed(err))
		} else {
			err = e.ioErr("send", err)
		}
	}
	return e.unwatch(ctx, writeSide, stop, "send", err)
}

// write writes msg's frame or packet; n of its total bytes were written.
func (s *sendHalf) write(msg []byte) (n, total int, err error) {
	c := s.e.c
	if s.packet {
		if s.buf == nil {
			s.buf = make([]byte, packetHeader+MaxPacketMessage)
		}
		b := s.buf[:packetHeader+len(msg)]
		b[0] = packetData
		copy(b[packetHeader:], msg)
		n, err = c.Write(b)
		return n, len(b), err
	}
	if s.buf == nil {
		s.buf = make([]byte, ioBufSize)
	}
	total = frameHeader + len(msg)
	b := s.buf[:min(total, len(s.buf))]
	binary.LittleEndian.PutUint32(b, uint32(len(msg)))
	k := copy(b[frameHeader:], msg)
	n, err = c.Write(b)
	if err == nil && k < len(msg) {
		// A frame larger than the buffer: the kernel splits a write this
		// large anyway, so a second write costs little and saves a copy.
		var m int
		m, err = c.Write(msg[k:])
		n += m
	}
	return n, total, err
}

// recvHalf receives messages from its endpoint through a reused buffer:
// frames are parsed from buf[r:w], which one read may fill with many of
// them; a packet is read whole into buf[:w] and stays there until it is
// delivered.
type recvHalf struct {
	e      *endpoint
	packet bool

	mu    sync.Mutex // serialises receivers; guards the fields below
	v     *vecReader // packets: nil means read into buf and copy
	vinit bool
	buf   []byte
	r, w  int
	eof   bool  // the peer closed: nothing more will be read
	err   error // sticky: wraps ErrCorrupt
}

// Recv receives one message into buf and returns its length, waiting
// until one arrives. If buf is too short, Recv returns the message's
// length and an error wrapping io.ErrShortBuffer, and the message stays
// queued for the next call; buf may then hold part of it. Once the peer has closed and every message
// was received, Recv returns io.EOF; a frame cut short by the close is
// reported as ErrCorrupt.
func (r *recvHalf) Recv(buf []byte) (int, error) { return r.recv(nil, buf) }

// RecvContext is Recv with a context that can cancel the wait; it then
// returns ctx's error and nothing is lost. A message already buffered is
// delivered without looking at ctx.
func (r *recvHalf) RecvContext(ctx context.Context, buf []byte) (int, error) {
	return r.recv(ctx, buf)
}

func (r *recvHalf) recv(ctx context.Context, p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.e
	if e.closed.Load() {
		return 0, ErrClosed
	}
	if r.err != nil {
		return 0, r.err
	}
	if r.buf == nil {
		if r.packet {
			// One byte over the largest packet, so that a longer one
			// shows as a full buffer instead of being truncated unseen.
			r.buf = make([]byte, packetHeader+MaxPacketMessage+1)
		} else {
			r.buf = make([]byte, ioBufSize)
		}
	}
	var stop func() bool
	armed := false
	for {
		n, done, err := r.next(p)
		if done {
			if armed {
				err = e.unwatch(ctx, readSide, stop, "recv", err)
			}
			return n, err
		}
		if !armed {
			armed = true
			if stop, err = e.watch(ctx, readSide); err != nil {
				return 0, fmt.Errorf("%s recv: %w", e.transport, err)
			}
		}
		if r.packet && r.w == 0 && !r.eof {
			if !r.vinit {
				r.vinit = true
				r.v = newVecReader(e.c)
			}
			if r.v != nil {
				n, done, err := r.readInto(p)
				if !done {
					continue // buffered, or the peer closed: next says which
				}
				if err != nil && r.err == nil {
					err = e.ioErr("recv", err)
				}
				if armed {
					err = e.unwatch(ctx, readSide, stop, "recv", err)
				}
				return n, err
			}
		}
		if err := r.fill(); err != nil {
			if r.err == nil {
				err = e.ioErr("recv", err)
			}
			return 0, e.unwatch(ctx, readSide, stop, "recv", err)
		}
	}
}

// next delivers the buffered message, if a whole one is there; done
// reports that the call is over, with a message or an error.
func (r *recvHalf) next(p []byte) (n int, done bool, err error) {
	if r.packet {
		if r.w == 0 {
			if r.eof {
				return 0, true, io.EOF
			}
			return 0, false, nil
		}
		n = r.w - packetHeader
	} else {
		avail := r.w - r.r
		if avail < frameHeader {
			if !r.eof {
				return 0, false, nil
			}
			if avail == 0 {
				return 0, true, io.EOF
			}
			return 0, true, r.corrupt("peer closed after %d bytes of a %d-byte frame header", avail, frameHeader)
		}
		length := binary.LittleEndian.Uint32(r.buf[r.r:])
		if length > uint32(r.e.max) {
			return 0, true, r.corrupt("frame header announces %d bytes, MaxMessage is %d", length, r.e.max)
		}
		n = int(length)
		if avail-frameHeader < n {
			if r.eof {
				return 0, true, r.corrupt("peer closed after %d bytes of a %d-byte message", avail-frameHeader, n)
			}
			if n <= len(p) {
				return 0, false, nil
			}
		}
	}
	if n > len(p) {
		return n, true, fmt.Errorf("%s recv: %w: message is %d bytes, buffer %d", r.e.transport, io.ErrShortBuffer, n, len(p))
	}
	if r.packet {
		copy(p, r.buf[packetHeader:r.w])
		r.w = 0
		return n, true, nil
	}
	start := r.r + frameHeader
	copy(p, r.buf[start:start+n])
	r.r = start + n
	if r.r == r.w {
		r.r, r.w = 0, 0
	}
	return n, true, nil
}

// readInto reads one packet straight into p: its tag byte into buf[0],
// the message into p, and whatever does not fit in p into the rest of
// buf. A message that fits is delivered with no copy. A longer one is
// assembled in buf (p's part copied back) and stays queued for next to
// report, and p's contents are then undefined. done reports a delivered
// message or an error; otherwise the packet is buffered or the peer
// closed.
func (r *recvHalf) readInto(p []byte) (n int, done bool, err error) {
	k := min(len(p), len(r.buf)-packetHeader)
	m, err := r.v.read(r.buf[:packetHeader], p[:k], r.buf[packetHeader+k:])
	switch {
	case err != nil:
		return 0, true, err
	case m == 0:
		r.eof = true
		return 0, false, nil
	case m == len(r.buf):
		return 0, true, r.corrupt("packet carries at least %d bytes, MaxMessage is %d", m-packetHeader, r.e.max)
	case r.buf[0] != packetData:
		return 0, true, r.corrupt("packet of %d bytes starts with tag %#x, want %#x", m, r.buf[0], packetData)
	case m-packetHeader <= k:
		return m - packetHeader, true, nil
	}
	copy(r.buf[packetHeader:], p[:k])
	r.w = m
	return 0, false, nil
}

// fill reads once from the endpoint: a whole packet, or as many stream
// bytes as fit after making room for the frame at r.
func (r *recvHalf) fill() error {
	var m int
	var err error
	if r.packet {
		m, err = r.e.c.Read(r.buf)
		switch {
		case err == io.EOF:
			r.eof = true
			return nil
		case err != nil:
			return err
		case m == len(r.buf):
			return r.corrupt("packet carries at least %d bytes, MaxMessage is %d", m-packetHeader, r.e.max)
		case r.buf[0] != packetData:
			return r.corrupt("packet of %d bytes starts with tag %#x, want %#x", m, r.buf[0], packetData)
		}
		r.w = m
		return nil
	}
	need := frameHeader
	if r.w-r.r >= frameHeader {
		need += int(binary.LittleEndian.Uint32(r.buf[r.r:])) // checked by next
	}
	switch {
	case need > len(r.buf):
		b := make([]byte, need)
		r.w = copy(b, r.buf[r.r:r.w])
		r.r, r.buf = 0, b
	case r.r+need > len(r.buf):
		r.w = copy(r.buf, r.buf[r.r:r.w])
		r.r = 0
	}
	m, err = r.e.c.Read(r.buf[r.w:])
	r.w += m
	if err == io.EOF {
		r.eof = true
		return nil
	}
	return err
}

// corrupt makes the stream's failure sticky.
func (r *recvHalf) corrupt(format string, args ...any) error {
	r.err = fmt.Errorf("%s recv: %w: "+format, append([]any{r.e.transport, ErrCorrupt}, args...)...)
	return r.err
}

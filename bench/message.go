package bench

// Messages of the benchmark: every one carries its sequence number in its
// first bytes, so that a consumer sees a lost, repeated, reordered or
// truncated message at once, and every consumer copies each message out of
// the transport, as a real one would.

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// payload returns a message buffer of n bytes filled with a pattern.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 1)
	}
	return b
}

// newBatch returns n message buffers of size bytes, filled with the
// pattern: a producer's batch, allocated once and stamped again for every
// SendBatch.
func newBatch(n, size int) [][]byte {
	b := make([][]byte, max(n, 1))
	for i := range b {
		b[i] = payload(size)
	}
	return b
}

// stampBatch stamps msgs with the sequence numbers seq, seq+1, … each
// or'ed with tag (an mpmc producer's index in the top byte; 0 otherwise).
func stampBatch(msgs [][]byte, seq, tag uint64) {
	for i, m := range msgs {
		stamp(m, tag|(seq+uint64(i)))
	}
}

// seqMask is the part of a sequence number a message of size bytes holds:
// all of it from 8 bytes up, its low size bytes below.
func seqMask(size int) uint64 {
	if size >= 8 {
		return math.MaxUint64
	}
	return 1<<(8*size) - 1
}

// stamp writes seq into the first bytes of msg (little-endian, as many as
// fit in 8).
func stamp(msg []byte, seq uint64) {
	if len(msg) >= 8 {
		binary.LittleEndian.PutUint64(msg, seq)
		return
	}
	for i := range msg {
		msg[i] = byte(seq >> (8 * i))
	}
}

// seqOf reads the sequence number stamp wrote.
func seqOf(msg []byte) uint64 {
	if len(msg) >= 8 {
		return binary.LittleEndian.Uint64(msg)
	}
	var seq uint64
	for i, b := range msg {
		seq |= uint64(b) << (8 * i)
	}
	return seq
}

// streamCounter is a stream consumer's bookkeeping: it checks each
// message's size and sequence number, counts messages and times the window
// from the first arrival.
type streamCounter struct {
	buf   []byte // the consumer's copy of the current message
	mask  uint64
	n     uint64 // messages seen
	first time.Time
	err   error // the first bad message
}

// newStreamCounter returns the bookkeeping of a consumer of messages of
// size bytes.
func newStreamCounter(size int) *streamCounter {
	return &streamCounter{buf: make([]byte, size), mask: seqMask(size)}
}

// take copies msg out of the transport and checks it.
func (s *streamCounter) take(msg []byte) {
	copy(s.buf, msg)
	s.check(len(msg))
}

// check checks the message of n bytes the consumer has in buf.
func (s *streamCounter) check(n int) {
	if s.n == 0 {
		s.first = time.Now()
	}
	if (n != len(s.buf) || seqOf(s.buf) != s.n&s.mask) && s.err == nil {
		s.err = fmt.Errorf("message %d: got %d bytes with sequence number %d, want %d bytes with %d", s.n, n, seqOf(s.buf[:min(n, len(s.buf))]), len(s.buf), s.n&s.mask)
	}
	s.n++
}

// report is the consumer's report at the end of the stream, seen at end.
func (s *streamCounter) report(end time.Time) peerReport {
	r := peerReport{Received: s.n}
	if s.err != nil {
		r.Error = s.err.Error()
	}
	if s.n > 0 {
		r.Timed = s.n - 1
		r.Seconds = end.Sub(s.first).Seconds()
	}
	return r
}

// checkEcho checks that a pingpong reply of n bytes in buf is the echo of
// request seq.
func checkEcho(buf []byte, n, size int, seq uint64) error {
	if n != size || seqOf(buf[:n]) != seq&seqMask(size) {
		return fmt.Errorf("round trip %d: reply of %d bytes with sequence number %d, want %d bytes with %d", seq, n, seqOf(buf[:min(n, len(buf))]), size, seq&seqMask(size))
	}
	return nil
}

// countError is the error of a side that got a count of messages other
// than the producer sent.
func countError(what string, got, sent uint64) error {
	return fmt.Errorf("%s %d messages, the producer sent %d", what, got, sent)
}

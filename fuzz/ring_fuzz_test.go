package fuzz

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/shmlane/shmlane/internal/layout"
	"github.com/shmlane/shmlane/ring"
)

// Operations of FuzzRingModel. The input is a sequence of 3-byte steps:
// an op byte (op % numOps) and a little-endian uint16 argument; some ops
// read further arguments. Missing bytes read as 0.
const (
	opSend = iota
	opReserve
	opCommit
	opAbort
	opRecv
	opPeek
	opRelease
	opSendBatch
	opRecvBatch
	numOps
)

const (
	modelCapacity = 4096
	maxSteps      = 4096
	maxBatch      = 8
)

// decoder reads the fuzz input.
type decoder struct{ b []byte }

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) u16() uint16 { return uint16(d.byte()) | uint16(d.byte())<<8 }

// length turns an argument into a message length: with the top bit set a
// small one (0..63), otherwise 0..2047, which covers MaxMessage(4096) = 2032
// and a few lengths over it.
func length(arg uint16) int {
	if arg&0x8000 != 0 {
		return int(arg & 0x3f)
	}
	return int(arg & 0x7ff)
}

// step encodes one step for the seed corpus, and arg a further argument.
func step(op int, a uint16) []byte { return append([]byte{byte(op)}, arg(a)...) }
func arg(a uint16) []byte          { return []byte{byte(a), byte(a >> 8)} }

// model is the plain-Go reference: the queue of committed messages, and
// the byte accounting of the data area the format implies. A record of n
// bytes takes layout.RecordSize(n) at an 8-aligned position; if it would
// cross the end of the area, padding fills the rest first; and the
// producer keeps the header word after its last record free (cleared), so
// a record fits iff everything from tail to the end of that word lies
// within head+capacity. That is ring.Producer.need and room.
type model struct {
	capacity, maxMsg int
	queue            []entry
	head, tail       uint64 // consumer and producer positions
	sent, sentBytes  uint64 // committed
	recv, recvBytes  uint64 // released
	seq              byte   // varies the payload bytes

	reserved  bool
	resvStart uint64 // tail before the reservation
	resvMsg   []byte
	resvBuf   []byte // the ring's slice, written at Reserve
	peeked    []byte // the ring's slice from Peek, nil if none
}

type entry struct {
	msg []byte
	end uint64 // position after the record: the consumer's head once released
}

// fit reports whether an n-byte message fits at tail, and where its
// record starts (after padding, if any) and ends.
func (m *model) fit(n int) (ok bool, start, end uint64) {
	c := uint64(m.capacity)
	size := layout.RecordSize(n)
	start = m.tail
	if off := m.tail & (c - 1); off+size > c {
		start += c - off
	}
	end = start + size
	return end+layout.RecordHeaderSize-m.head <= c, start, end
}

// push appends a committed message ending at end.
func (m *model) push(msg []byte, end uint64) {
	m.queue = append(m.queue, entry{msg, end})
	m.tail = end
	m.sent++
	m.sentBytes += uint64(len(msg))
}

// pop releases the first k messages.
func (m *model) pop(k int) {
	for _, e := range m.queue[:k] {
		m.recv++
		m.recvBytes += uint64(len(e.msg))
		m.head = e.end
	}
	m.queue = m.queue[k:]
}

// message returns a fresh n-byte message whose bytes differ from the
// previous ones'.
func (m *model) message(n int) []byte {
	m.seq++
	b := make([]byte, n)
	for i := range b {
		b[i] = m.seq + byte(i)*31
	}
	return b
}

// FuzzRingModel drives an in-process SPSC ring with a random sequence of
// operations and checks every result against the model. Producer and
// consumer run in the same goroutine with a deadline in the past, so a full
// or empty ring answers os.ErrDeadlineExceeded at once; the model says
// exactly when the ring is full or empty. After each step the segment's
// statistics must match the model, and at the end everything committed is
// received, in order, once.
func FuzzRingModel(f *testing.F) {
	var seeds [][]byte
	cat := func(steps ...[]byte) []byte { return bytes.Join(steps, nil) }
	rep := func(n int, steps ...[]byte) []byte {
		var b []byte
		for range n {
			b = append(b, cat(steps...)...)
		}
		return b
	}
	// Medium messages, sent and received one at a time: many laps.
	seeds = append(seeds, rep(40, step(opSend, 700), step(opRecv, 0)))
	// Fill until full, then drain, so each lap wraps at a different offset.
	seeds = append(seeds, rep(12, step(opSend, 1000), step(opSend, 1000), step(opSend, 1000), step(opSend, 1000), step(opRecv, 0), step(opRecv, 0), step(opRecv, 0), step(opRecv, 0)))
	// Zero-copy on both sides across the wrap, with the largest message.
	seeds = append(seeds, rep(10, step(opReserve, 900), step(opCommit, 0), step(opPeek, 0), step(opSend, 2032), step(opRelease, 0), step(opPeek, 0), step(opRelease, 0)))
	// A reservation that needs padding, aborted, then a smaller send at the
	// same place, and a reservation held while the consumer finds nothing.
	seeds = append(seeds, cat(step(opSend, 1500), step(opSend, 1500), step(opRecv, 0), step(opRecv, 0),
		step(opReserve, 1500), step(opRecv, 0), step(opAbort, 0), step(opRecv, 0), step(opSend, 200), step(opRecv, 0),
		step(opReserve, 2000), step(opCommit, 0), step(opRecv, 0)))
	// Batches across the wrap, with a too-large message inside one.
	seeds = append(seeds, rep(8,
		step(opSendBatch, 5), arg(300), arg(0x8000|20), arg(600), arg(800), arg(900),
		step(opRecvBatch, 2), step(opRecvBatch, 0),
		step(opSendBatch, 3), arg(100), arg(2040), arg(100), step(opRecvBatch, 0)))
	// A batch larger than the ring: it stops where the ring is full.
	seeds = append(seeds, rep(3, step(opSendBatch, 6), arg(900), arg(900), arg(900), arg(900), arg(900), arg(900),
		step(opRecvBatch, 1), step(opRecvBatch, 0)))
	// Misuse: commit, abort and release with nothing pending; send and
	// receive while something is pending; too large; short buffers.
	seeds = append(seeds, cat(step(opCommit, 0), step(opAbort, 0), step(opRelease, 0),
		step(opReserve, 10), step(opSend, 10), step(opReserve, 10), step(opSendBatch, 1), arg(1), step(opCommit, 0),
		step(opPeek, 0), step(opRecv, 0), step(opRecvBatch, 0), step(opPeek, 0), step(opRelease, 0),
		step(opSend, 2033), step(opReserve, 2047), step(opSend, 64), step(opRecv, 0x8000|3), step(opRecv, 0x8000|64)))
	for i, s := range seeds {
		// The first byte picks the wait strategy (see below).
		f.Add(append([]byte{byte(i)}, s...))
	}

	// Skip where the platform has no shared-memory rings.
	if seg, err := ring.Create(&ring.Config{Capacity: modelCapacity}); errors.Is(err, ring.ErrNotSupported) {
		f.Skipf("skipping: %v", err)
	} else if err != nil {
		f.Fatalf("Create: %v", err)
	} else {
		seg.Close()
	}

	f.Fuzz(func(t *testing.T, input []byte) {
		seg, err := ring.Create(&ring.Config{Capacity: modelCapacity})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		defer seg.Close()
		// The first byte picks the wait strategy: spinning first, or
		// sleeping at once. Either must give up at once past the deadline.
		d := &decoder{input}
		opts := &ring.Options{}
		if d.byte()&1 != 0 {
			opts.SpinTime = -1
		}
		p, err := seg.Producer(opts)
		if err != nil {
			t.Fatalf("Producer: %v", err)
		}
		defer p.Close()
		c, err := seg.Consumer(opts)
		if err != nil {
			t.Fatalf("Consumer: %v", err)
		}
		defer c.Close()
		past := time.Unix(1, 0)
		if err := p.SetDeadline(past); err != nil {
			t.Fatal(err)
		}
		if err := c.SetDeadline(past); err != nil {
			t.Fatal(err)
		}

		m := &model{capacity: modelCapacity, maxMsg: layout.MaxMessage(modelCapacity)}
		if got := p.MaxMessage(); got != m.maxMsg {
			t.Fatalf("MaxMessage() = %d, want %d", got, m.maxMsg)
		}
		for i := 0; i < maxSteps && len(d.b) > 0; i++ {
			op := int(d.byte()) % numOps
			arg := d.u16()
			runStep(t, i, op, arg, d, m, p, c)
			checkStats(t, i, m, seg.Stats())
		}

		// Finish: drop what is pending, then everything committed must
		// come out, in order, exactly once, and the ring be empty.
		if m.reserved {
			if err := p.Abort(); err != nil {
				t.Fatalf("final Abort() = %v, want nil", err)
			}
			m.reserved, m.tail = false, m.resvStart
		}
		if m.peeked != nil {
			if err := c.Release(); err != nil {
				t.Fatalf("final Release() = %v, want nil", err)
			}
			m.pop(1)
			m.peeked = nil
		}
		buf := make([]byte, m.maxMsg)
		for len(m.queue) > 0 {
			n, err := c.Recv(buf)
			if err != nil {
				t.Fatalf("final Recv() = %v with %d messages queued, want %q", err, len(m.queue), m.queue[0].msg)
			}
			if !bytes.Equal(buf[:n], m.queue[0].msg) {
				t.Fatalf("final Recv() = %q, want %q", buf[:n], m.queue[0].msg)
			}
			m.pop(1)
		}
		if n, err := c.Recv(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Recv() on a drained ring = %d, %v, want os.ErrDeadlineExceeded", n, err)
		}
		checkStats(t, -1, m, seg.Stats())
	})
}

// runStep performs one operation on the ring and on the model.
func runStep(t *testing.T, i, op int, arg uint16, d *decoder, m *model, p *ring.Producer, c *ring.Consumer) {
	t.Helper()
	isDeadline := func(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
	switch op {
	case opSend:
		n := length(arg)
		msg := m.message(n)
		err := p.Send(msg)
		ok, _, end := m.fit(n)
		switch {
		case m.reserved:
			if !errors.Is(err, ring.ErrPending) {
				t.Fatalf("step %d: Send(%d bytes) during a reservation = %v, want ErrPending", i, n, err)
			}
		case n > m.maxMsg:
			if !errors.Is(err, ring.ErrTooLarge) {
				t.Fatalf("step %d: Send(%d bytes) = %v, want ErrTooLarge (max %d)", i, n, err, m.maxMsg)
			}
		case !ok:
			if !isDeadline(err) {
				t.Fatalf("step %d: Send(%d bytes) with %d of %d bytes used = %v, want os.ErrDeadlineExceeded (full)", i, n, m.tail-m.head, m.capacity, err)
			}
		default:
			if err != nil {
				t.Fatalf("step %d: Send(%d bytes) with %d of %d bytes used = %v, want nil", i, n, m.tail-m.head, m.capacity, err)
			}
			m.push(msg, end)
		}

	case opReserve:
		n := length(arg)
		buf, err := p.Reserve(n)
		ok, _, end := m.fit(n)
		switch {
		case m.reserved:
			if !errors.Is(err, ring.ErrPending) || buf != nil {
				t.Fatalf("step %d: second Reserve(%d) = %d bytes, %v, want nil, ErrPending", i, n, len(buf), err)
			}
		case n > m.maxMsg:
			if !errors.Is(err, ring.ErrTooLarge) || buf != nil {
				t.Fatalf("step %d: Reserve(%d) = %d bytes, %v, want nil, ErrTooLarge", i, n, len(buf), err)
			}
		case !ok:
			if !isDeadline(err) || buf != nil {
				t.Fatalf("step %d: Reserve(%d) with %d of %d bytes used = %d bytes, %v, want nil, os.ErrDeadlineExceeded", i, n, m.tail-m.head, m.capacity, len(buf), err)
			}
		default:
			if err != nil || len(buf) != n || cap(buf) != n {
				t.Fatalf("step %d: Reserve(%d) = len %d cap %d, %v, want len and cap %d, nil", i, n, len(buf), cap(buf), err, n)
			}
			msg := m.message(n)
			copy(buf, msg)
			m.reserved, m.resvStart, m.resvMsg, m.resvBuf = true, m.tail, msg, buf
			m.tail = end
		}

	case opCommit:
		err := p.Commit()
		if !m.reserved {
			if !errors.Is(err, ring.ErrNoPending) {
				t.Fatalf("step %d: Commit() without Reserve = %v, want ErrNoPending", i, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("step %d: Commit() = %v, want nil", i, err)
		}
		m.reserved = false
		end := m.tail
		m.tail = m.resvStart
		m.push(m.resvMsg, end)

	case opAbort:
		err := p.Abort()
		if !m.reserved {
			if !errors.Is(err, ring.ErrNoPending) {
				t.Fatalf("step %d: Abort() without Reserve = %v, want ErrNoPending", i, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("step %d: Abort() = %v, want nil", i, err)
		}
		m.reserved = false
		m.tail = m.resvStart

	case opRecv:
		size := m.maxMsg
		if arg&0x8000 != 0 {
			size = int(arg & 0x7ff)
		}
		buf := make([]byte, size)
		n, err := c.Recv(buf)
		switch {
		case m.peeked != nil:
			if !errors.Is(err, ring.ErrPending) {
				t.Fatalf("step %d: Recv() during a Peek = %d, %v, want ErrPending", i, n, err)
			}
		case len(m.queue) == 0:
			if !isDeadline(err) {
				t.Fatalf("step %d: Recv() on an empty ring = %q, %v, want os.ErrDeadlineExceeded", i, buf[:min(n, len(buf))], err)
			}
		case len(m.queue[0].msg) > size:
			if !errors.Is(err, io.ErrShortBuffer) || n != len(m.queue[0].msg) {
				t.Fatalf("step %d: Recv(%d-byte buffer) = %d, %v, want %d, io.ErrShortBuffer", i, size, n, err, len(m.queue[0].msg))
			}
		default:
			if err != nil {
				t.Fatalf("step %d: Recv() = %v, want %q", i, err, m.queue[0].msg)
			}
			if !bytes.Equal(buf[:n], m.queue[0].msg) {
				t.Fatalf("step %d: Recv() = %q, want %q", i, buf[:n], m.queue[0].msg)
			}
			m.pop(1)
		}

	case opPeek:
		msg, err := c.Peek()
		if len(m.queue) == 0 {
			if !isDeadline(err) || msg != nil {
				t.Fatalf("step %d: Peek() on an empty ring = %q, %v, want nil, os.ErrDeadlineExceeded", i, msg, err)
			}
			return
		}
		if err != nil || !bytes.Equal(msg, m.queue[0].msg) {
			t.Fatalf("step %d: Peek() = %q, %v, want %q", i, msg, err, m.queue[0].msg)
		}
		m.peeked = msg

	case opRelease:
		if m.peeked != nil && !bytes.Equal(m.peeked, m.queue[0].msg) {
			// The producer must not have written over a peeked record.
			t.Fatalf("step %d: peeked message changed before Release: %q, want %q", i, m.peeked, m.queue[0].msg)
		}
		err := c.Release()
		if m.peeked == nil {
			if !errors.Is(err, ring.ErrNoPending) {
				t.Fatalf("step %d: Release() without Peek = %v, want ErrNoPending", i, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("step %d: Release() = %v, want nil", i, err)
		}
		m.peeked = nil
		m.pop(1)

	case opSendBatch:
		k := int(arg) % (maxBatch + 1)
		msgs := make([][]byte, k)
		for j := range msgs {
			msgs[j] = m.message(length(d.u16()))
		}
		n, err := p.SendBatch(msgs)
		if m.reserved {
			if n != 0 || !errors.Is(err, ring.ErrPending) {
				t.Fatalf("step %d: SendBatch(%d) during a reservation = %d, %v, want 0, ErrPending", i, k, n, err)
			}
			return
		}
		// The model sends the longest prefix that fits; the first message
		// that does not says which error ends the batch.
		want, wantErr := k, error(nil)
		for j, msg := range msgs {
			if len(msg) > m.maxMsg {
				want, wantErr = j, ring.ErrTooLarge
				break
			}
			ok, _, end := m.fit(len(msg))
			if !ok {
				want, wantErr = j, os.ErrDeadlineExceeded
				break
			}
			m.push(msg, end)
		}
		if n != want || (wantErr == nil) != (err == nil) || (wantErr != nil && !errors.Is(err, wantErr)) {
			t.Fatalf("step %d: SendBatch(%d messages) = %d, %v, want %d, %v", i, k, n, err, want, wantErr)
		}

	case opRecvBatch:
		limit := int(arg%6) - 1 // -1 and 0: all available
		var got [][]byte
		n, err := c.RecvBatch(limit, func(msg []byte) { got = append(got, bytes.Clone(msg)) })
		switch {
		case m.peeked != nil:
			if n != 0 || !errors.Is(err, ring.ErrPending) || got != nil {
				t.Fatalf("step %d: RecvBatch() during a Peek = %d, %v, want 0, ErrPending", i, n, err)
			}
		case len(m.queue) == 0:
			if n != 0 || !isDeadline(err) || got != nil {
				t.Fatalf("step %d: RecvBatch() on an empty ring = %d, %v, want 0, os.ErrDeadlineExceeded", i, n, err)
			}
		default:
			want := len(m.queue)
			if limit > 0 {
				want = min(want, limit)
			}
			if err != nil || n != want || len(got) != want {
				t.Fatalf("step %d: RecvBatch(%d) = %d (fn saw %d), %v, want %d, nil", i, limit, n, len(got), err, want)
			}
			for j, msg := range got {
				if !bytes.Equal(msg, m.queue[j].msg) {
					t.Fatalf("step %d: RecvBatch(%d) message %d = %q, want %q", i, limit, j, msg, m.queue[j].msg)
				}
			}
			m.pop(want)
		}
	}
}

// checkStats compares the segment's shared counters and indices with the
// model. The producer publishes its tail and counters with each commit, so
// an outstanding reservation does not show.
func checkStats(t *testing.T, i int, m *model, st ring.Stats) {
	t.Helper()
	tail := m.tail
	if m.reserved {
		tail = m.resvStart
	}
	want := ring.Stats{
		Capacity:      uint64(m.capacity),
		Head:          m.head,
		Tail:          tail,
		Sent:          m.sent,
		SentBytes:     m.sentBytes,
		Received:      m.recv,
		ReceivedBytes: m.recvBytes,
	}
	got := ring.Stats{
		Capacity:      st.Capacity,
		Head:          st.Head,
		Tail:          st.Tail,
		Sent:          st.Sent,
		SentBytes:     st.SentBytes,
		Received:      st.Received,
		ReceivedBytes: st.ReceivedBytes,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("after step %d: Stats() mismatch (-want +got):\n%s", i, diff)
	}
	if st.Used() > uint64(m.capacity) {
		t.Fatalf("after step %d: Stats().Used() = %d, more than the capacity %d", i, st.Used(), m.capacity)
	}
	if st.ProducerClosed || st.ConsumerClosed {
		t.Fatalf("after step %d: Stats() says closed (producer %v, consumer %v), want both open", i, st.ProducerClosed, st.ConsumerClosed)
	}
}

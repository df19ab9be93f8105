//go:build linux

package shmlane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmlane/shmlane/fallback"
)

// oobModes are the modes of the out-of-band suite: the ring large enough
// to queue 1000 small messages.
var oobModes = []mode{
	{name: "ring", listen: ListenOptions{Capacity: 64 << 10}, transport: "ring"},
	strictFallback,
}

// strictFallback is the fallback mode with both receivers looking at the
// lane before every data message, as the shared-memory lane does: the
// suite's exact expectations hold for it.
var strictFallback = func() mode {
	m := modes[1]
	m.listen.FallbackOOBCheckEvery, m.dial.FallbackOOBCheckEvery = 1, 1
	return m
}()

// dataPacket is a fallback data packet as a peer writes it: the packet
// tags, the count of lane packets sent before it, the message.
func dataPacket(laneCount uint32, msg []byte) []byte {
	p := make([]byte, fbHeader, fbHeader+len(msg))
	p[0], p[1] = fbPacketData, tagData
	binary.NativeEndian.PutUint32(p[2:], laneCount)
	return append(p, msg...)
}

// seqBytes is a message of n bytes (at least 8) carrying seq.
func seqBytes(seq uint64, n int) []byte {
	b := make([]byte, max(n, 8))
	binary.LittleEndian.PutUint64(b, seq)
	for i := 8; i < len(b); i++ {
		b[i] = byte(seq + uint64(i))
	}
	return b
}

// recvSeq receives one message and returns its sequence number and flag.
func recvSeq(t testing.TB, c *Conn) (uint64, bool) {
	t.Helper()
	buf := make([]byte, c.MaxMessage())
	n, urgent, err := c.RecvMsg(context.Background(), buf)
	if err != nil || n < 8 {
		t.Fatalf("RecvMsg() = %d bytes, %v", n, err)
	}
	return binary.LittleEndian.Uint64(buf), urgent
}

// expectSeq receives one message and checks its sequence number and flag.
func expectSeq(t testing.TB, c *Conn, want uint64, wantUrgent bool, what string) {
	t.Helper()
	if seq, urgent := recvSeq(t, c); seq != want || urgent != wantUrgent {
		t.Fatalf("%s: RecvMsg() = %d (urgent %v), want %d (urgent %v)", what, seq, urgent, want, wantUrgent)
	}
}

// expectNothing checks that nothing more arrives within a short while.
func expectNothing(t testing.TB, c *Conn) {
	t.Helper()
	must(t, c.SetDeadline(time.Now().Add(30*time.Millisecond)))
	buf := make([]byte, c.MaxMessage())
	n, urgent, err := c.RecvMsg(context.Background(), buf)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("RecvMsg() = %d bytes (%x…, urgent %v), %v; want nothing more (a deadline error)", n, buf[:min(n, 8)], urgent, err)
	}
	must(t, c.SetDeadline(time.Time{}))
}

// queue sends data messages seq 0, 1, … of size bytes until n are sent or
// the connection is full, and returns how many were sent.
func queue(t testing.TB, c *Conn, n, size int) int {
	t.Helper()
	for i := 0; i < n; i++ {
		must(t, c.SetDeadline(time.Now().Add(50*time.Millisecond)))
		if err := c.Send(seqBytes(uint64(i), size)); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Send() #%d = %v", i, err)
			}
			must(t, c.SetDeadline(time.Time{}))
			return i
		}
	}
	must(t, c.SetDeadline(time.Time{}))
	return n
}

type direction struct {
	name     string
	from, to *Conn
}

func directions(server, client *Conn) []direction {
	return []direction{{"dialer→listener", client, server}, {"listener→dialer", server, client}}
}

// TestOutOfBand runs the out-of-band checks over shared memory and the
// forced fallback, in both directions.
func TestOutOfBand(t *testing.T) {
	for _, m := range oobModes {
		t.Run(m.name, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				fn   func(t *testing.T, m mode, d direction)
			}{
				{"overtake", testUrgentOvertakes},
				{"flush", testFlushExact},
				{"wake", testUrgentWakes},
				{"urgent-while-send-blocked", testUrgentWhileSendBlocked},
				{"flush-unblocks-send", testFlushUnblocksSend},
				{"short-buffer", testUrgentShortBuffer},
				{"lane-full", testLaneFull},
				{"flush-full-lane", testFlushFullLane},
				{"close", testOOBClose},
			} {
				t.Run(tc.name, func(t *testing.T) {
					for i := range 2 {
						server, client := newPair(t, m)
						d := directions(server, client)[i]
						t.Run(d.name, func(t *testing.T) { tc.fn(t, m, d) })
					}
				})
			}
		})
	}
}

// testUrgentOvertakes: urgent messages sent after 1000 queued data
// messages (as many as the fallback's socket buffer holds) are received
// first, in their order, flagged; then the data, in order, unflagged; Recv
// delivers urgent messages first too.
func testUrgentOvertakes(t *testing.T, m mode, d direction) {
	n := queue(t, d.from, 1000, 16)
	if m.transport == "ring" && n != 1000 {
		t.Fatalf("the ring took %d of 1000 messages", n)
	}
	if n < 100 {
		t.Fatalf("only %d messages queued", n)
	}
	must(t, d.from.SendUrgent(seqBytes(1_000_000, 8)))
	must(t, d.from.SendUrgent(seqBytes(1_000_001, 100)))
	expectSeq(t, d.to, 1_000_000, true, "first")
	expectSeq(t, d.to, 1_000_001, true, "second")
	for i := range uint64(n) {
		expectSeq(t, d.to, i, false, "queued data")
	}
	// Recv, without the flag, gives the urgent message first as well.
	must(t, d.from.Send(seqBytes(7, 8)))
	must(t, d.from.SendUrgent(seqBytes(8, 8)))
	buf := make([]byte, 64)
	for _, want := range []uint64{8, 7} {
		if k, err := d.to.Recv(buf); err != nil || k != 8 || binary.LittleEndian.Uint64(buf) != want {
			t.Fatalf("Recv() = %x, %v; want message %d", buf[:k], err, want)
		}
	}
	expectNothing(t, d.to)
	fs, ts := d.from.Stats(), d.to.Stats()
	if fs.UrgentSent != 3 || ts.UrgentReceived != 3 || ts.Received != uint64(n)+1 || fs.Sent != uint64(n)+1 || ts.Discarded != 0 {
		t.Errorf("Stats: sender %+v, receiver %+v; want 3 urgent, %d data sent and received", fs, ts, n+1)
	}
}

// testFlushExact: a flush discards exactly the messages sent before it and
// not yet received, none after.
func testFlushExact(t *testing.T, m mode, d direction) {
	const size = 40
	for i := range uint64(100) {
		must(t, d.from.Send(seqBytes(i, size)))
	}
	expectSeq(t, d.to, 0, false, "before the flush")
	must(t, d.from.Flush())
	for i := uint64(100); i < 110; i++ {
		must(t, d.from.Send(seqBytes(i, size)))
	}
	for i := uint64(100); i < 110; i++ {
		expectSeq(t, d.to, i, false, "after the flush (1..99 discarded)")
	}
	expectNothing(t, d.to)
	fs, ts := d.from.Stats(), d.to.Stats()
	if ts.Discarded != 99 || ts.DiscardedBytes != 99*size || fs.Flushes != 1 || ts.Received != 11 || fs.Sent != 110 {
		t.Errorf("Stats: sender %+v, receiver %+v; want 1 flush, 99 discarded (%d bytes), 11 received", fs, ts, 99*size)
	}
	// A flush with nothing queued discards nothing; urgent messages are
	// never discarded.
	must(t, d.from.SendUrgent(seqBytes(500, 8)))
	must(t, d.from.Flush())
	must(t, d.from.Send(seqBytes(501, 8)))
	expectSeq(t, d.to, 500, true, "urgent before a flush")
	expectSeq(t, d.to, 501, false, "after an empty flush")
	if ts := d.to.Stats(); ts.Discarded != 99 {
		t.Errorf("Discarded = %d after an empty flush, want 99", ts.Discarded)
	}
}

// testUrgentWakes: a receiver waiting on an empty connection is woken by
// an urgent message.
func testUrgentWakes(t *testing.T, m mode, d direction) {
	buf := make([]byte, 64)
	type result struct {
		n      int
		urgent bool
		err    error
	}
	done := make(chan result, 1)
	go func() {
		n, urgent, err := d.to.RecvMsg(context.Background(), buf)
		done <- result{n, urgent, err}
	}()
	time.Sleep(100 * time.Millisecond) // let it block
	select {
	case r := <-done:
		t.Fatalf("RecvMsg() returned %+v at once, want it to wait", r)
	default:
	}
	must(t, d.from.SendUrgent([]byte("wake up")))
	select {
	case r := <-done:
		if r.err != nil || !r.urgent || string(buf[:r.n]) != "wake up" {
			t.Fatalf("RecvMsg() = %q (urgent %v), %v; want the urgent \"wake up\"", buf[:r.n], r.urgent, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting receiver was not woken by an urgent message")
	}
}

// testUrgentWhileSendBlocked: SendUrgent from another goroutine works
// while Send waits on a full connection, and the urgent message is
// received before everything queued.
func testUrgentWhileSendBlocked(t *testing.T, m mode, d direction) {
	n := queue(t, d.from, 1<<20, 512)
	done := blocked(t, "Send on a full connection", func() error { return d.from.Send(seqBytes(uint64(n), 512)) })
	if err := within(t, 5*time.Second, "SendUrgent while Send waits", func() error { return d.from.SendUrgent(seqBytes(1<<40, 8)) }); err != nil {
		t.Fatalf("SendUrgent() while Send waits = %v", err)
	}
	expectSeq(t, d.to, 1<<40, true, "urgent while Send waits")
	for i := range uint64(n + 1) {
		expectSeq(t, d.to, i, false, "data")
	}
	must(t, waitErr(t, done, "the blocked Send"))
}

// testFlushUnblocksSend: Flush while Send waits on a full connection
// discards the queue, which lets the Send go on; its message is the next
// one received.
func testFlushUnblocksSend(t *testing.T, m mode, d direction) {
	n := queue(t, d.from, 1<<20, 512)
	done := blocked(t, "Send on a full connection", func() error { return d.from.Send(seqBytes(77_777, 512)) })
	if err := within(t, 5*time.Second, "Flush while Send waits", d.from.Flush); err != nil {
		t.Fatalf("Flush() while Send waits = %v", err)
	}
	expectSeq(t, d.to, 77_777, false, "the message of the Send that waited")
	must(t, waitErr(t, done, "the blocked Send"))
	if ts := d.to.Stats(); ts.Discarded != uint64(n) || ts.Received != 1 {
		t.Errorf("receiver's Stats %+v, want %d discarded and 1 received", ts, n)
	}
}

// testUrgentShortBuffer: an urgent message that does not fit the buffer
// stays first in line.
func testUrgentShortBuffer(t *testing.T, m mode, d direction) {
	must(t, d.from.Send([]byte("data")))
	must(t, d.from.SendUrgent([]byte("0123456789")))
	buf := make([]byte, 64)
	n, urgent, err := d.to.RecvMsg(context.Background(), buf[:4])
	if !errors.Is(err, io.ErrShortBuffer) || n != 10 || !urgent {
		t.Fatalf("RecvMsg(4-byte buffer) = %d (urgent %v), %v; want 10 (urgent), io.ErrShortBuffer", n, urgent, err)
	}
	for _, want := range []struct {
		msg    string
		urgent bool
	}{{"0123456789", true}, {"data", false}} {
		n, urgent, err := d.to.RecvMsg(context.Background(), buf)
		if err != nil || string(buf[:n]) != want.msg || urgent != want.urgent {
			t.Fatalf("RecvMsg() = %q (urgent %v), %v; want %q (urgent %v)", buf[:n], urgent, err, want.msg, want.urgent)
		}
	}
}

// testLaneFull: SendUrgent never waits: a lane the receiver does not drain
// fills up and SendUrgent says so; what was accepted arrives in order.
// MaxUrgent bounds the message.
func testLaneFull(t *testing.T, m mode, d direction) {
	max := d.from.MaxUrgent()
	if max <= 0 || max > d.from.MaxMessage() {
		t.Fatalf("MaxUrgent() = %d, MaxMessage() = %d", max, d.from.MaxMessage())
	}
	if err := d.from.SendUrgent(make([]byte, max+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("SendUrgent(MaxUrgent+1 bytes) = %v, want ErrTooLarge", err)
	}
	sent := 0
	var err error
	for ; sent < 10_000; sent++ {
		if err = d.from.SendUrgent(seqBytes(uint64(sent), 100)); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrLaneFull) || sent == 0 {
		t.Fatalf("SendUrgent #%d on a lane nobody drains = %v, want ErrLaneFull after at least one", sent, err)
	}
	errContains(t, "SendUrgent on a full lane", err, "lane of 4096 bytes")
	for i := range uint64(sent) {
		expectSeq(t, d.to, i, true, "urgent")
	}
	big := seqBytes(1<<50, max)
	must(t, d.from.SendUrgent(big))
	buf := make([]byte, max)
	if n, urgent, err := d.to.RecvMsg(context.Background(), buf); err != nil || !urgent || n != max || string(buf) != string(big) {
		t.Fatalf("RecvMsg() = %d bytes (urgent %v), %v; want the %d-byte urgent message", n, urgent, err, max)
	}
	t.Logf("the lane took %d urgent messages of 100 bytes; MaxUrgent %d", sent, max)
}

// testFlushFullLane: in shared-memory mode a flush never waits; in
// fallback mode it is a message on the lane, so a full lane makes it wait
// until the receiver drains it, the deadline passes or Close. Either way
// it takes effect after the urgent messages ahead of it.
func testFlushFullLane(t *testing.T, m mode, d direction) {
	must(t, d.from.Send(seqBytes(0, 8)))
	urgent := 0
	for ; urgent < 10_000; urgent++ {
		if err := d.from.SendUrgent(seqBytes(uint64(1000+urgent), 100)); err != nil {
			if !errors.Is(err, ErrLaneFull) {
				t.Fatalf("SendUrgent() = %v, want ErrLaneFull in the end", err)
			}
			break
		}
	}
	if m.transport == "ring" {
		must(t, d.from.Flush())
		for i := range uint64(urgent) {
			expectSeq(t, d.to, 1000+i, true, "urgent")
		}
	} else {
		must(t, d.from.SetDeadline(time.Now().Add(-time.Second)))
		if err := d.from.Flush(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Flush() on a full lane past the deadline = %v, want os.ErrDeadlineExceeded", err)
		}
		must(t, d.from.SetDeadline(time.Time{}))
		done := blocked(t, "Flush on a full lane", d.from.Flush)
		for i := range uint64(urgent) {
			expectSeq(t, d.to, 1000+i, true, "urgent")
		}
		must(t, waitErr(t, done, "Flush once the lane has room"))
	}
	must(t, d.from.Send(seqBytes(1, 8)))
	expectSeq(t, d.to, 1, false, "data after the flush (0 discarded)")
	if ts, fs := d.to.Stats(), d.from.Stats(); ts.Discarded != 1 || fs.Flushes != 1 {
		t.Errorf("Stats: receiver %+v, sender %+v; want 1 discarded, 1 flush", ts, fs)
	}
	if m.transport != "ring" {
		// Close wakes a Flush that waits.
		for i := 0; ; i++ {
			err := d.from.SendUrgent([]byte("fill"))
			if errors.Is(err, ErrLaneFull) {
				break
			}
			if err != nil || i > 10_000 {
				t.Fatalf("SendUrgent() #%d = %v, want ErrLaneFull in the end", i, err)
			}
		}
		done := blocked(t, "Flush on a full lane", d.from.Flush)
		must(t, d.from.Close())
		if err := waitErr(t, done, "Flush after Close"); !errors.Is(err, ErrClosed) {
			t.Errorf("Flush() interrupted by Close = %v, want ErrClosed", err)
		}
	}
}

// testOOBClose: urgent messages sent before Close arrive before the end of
// the stream; after Close, SendUrgent and Flush fail with ErrClosed, and
// the peer's with ErrPeerClosed.
func testOOBClose(t *testing.T, m mode, d direction) {
	must(t, d.from.Send(seqBytes(1, 8)))
	must(t, d.from.SendUrgent(seqBytes(2, 8)))
	must(t, d.from.Close())
	if err := d.from.SendUrgent([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("SendUrgent() after Close = %v, want ErrClosed", err)
	}
	if err := d.from.Flush(); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush() after Close = %v, want ErrClosed", err)
	}
	expectSeq(t, d.to, 2, true, "urgent before Close")
	expectSeq(t, d.to, 1, false, "data before Close")
	buf := make([]byte, 8)
	if _, _, err := d.to.RecvMsg(context.Background(), buf); err != io.EOF {
		t.Fatalf("RecvMsg() after the peer closed = %v, want io.EOF", err)
	}
	if err := d.to.SendUrgent([]byte("x")); !errors.Is(err, ErrPeerClosed) {
		t.Errorf("the peer's SendUrgent() = %v, want ErrPeerClosed", err)
	}
}

// TestNoLane: either side's NoOOB makes a connection without lanes, whose
// SendUrgent and Flush say ErrNotSupported; data still flows.
func TestNoLane(t *testing.T) {
	for _, m := range oobModes {
		for _, side := range []string{"listener", "dialer"} {
			t.Run(m.name+"/"+side, func(t *testing.T) {
				m := m
				if side == "listener" {
					m.listen.OOBCapacity = NoOOB
				} else {
					m.dial.OOBCapacity = NoOOB
				}
				server, client := newPair(t, m)
				for _, c := range []*Conn{server, client} {
					if err := c.SendUrgent([]byte("x")); !errors.Is(err, ErrNotSupported) || !errors.Is(err, ErrNoLane) {
						t.Errorf("SendUrgent() without a lane = %v, want ErrNoLane (ErrNotSupported)", err)
					}
					if err := c.Flush(); !errors.Is(err, ErrNotSupported) {
						t.Errorf("Flush() without a lane = %v, want ErrNotSupported", err)
					}
					if st := c.Stats(); c.MaxUrgent() != 0 || st.OOBCapacity != 0 {
						t.Errorf("MaxUrgent() = %d, Stats().OOBCapacity = %d, want 0 and 0", c.MaxUrgent(), st.OOBCapacity)
					}
				}
				must(t, client.Send(seqBytes(3, 8)))
				expectSeq(t, server, 3, false, "data without a lane")
			})
		}
	}
}

// TestOOBNegotiation: both lanes get the larger preference, the default
// when neither side has one; options outside the rule are refused.
func TestOOBNegotiation(t *testing.T) {
	for _, m := range oobModes {
		for _, tc := range []struct{ listen, dial, want int }{
			{0, 0, DefaultOOBCapacity},
			{16 << 10, 0, 16 << 10},
			{0, 8 << 10, 8 << 10},
			{4 << 10, 64 << 10, 64 << 10},
		} {
			m := m
			m.listen.OOBCapacity, m.dial.OOBCapacity = tc.listen, tc.dial
			server, client := newPair(t, m)
			for _, c := range []*Conn{server, client} {
				st := c.Stats()
				if st.OOBCapacity != uint64(tc.want) {
					t.Errorf("%s: listener %d, dialer %d: OOBCapacity %d, want %d", m.name, tc.listen, tc.dial, st.OOBCapacity, tc.want)
				}
				if m.transport == "ring" && (st.Send.OOBCapacity != uint64(tc.want) || st.Recv.OOBCapacity != uint64(tc.want)) {
					t.Errorf("ring lanes %d and %d, want %d", st.Send.OOBCapacity, st.Recv.OOBCapacity, tc.want)
				}
			}
		}
	}
	dir := t.TempDir()
	for _, bad := range []int{-2, 100, 3000, 6 << 10, 2 << 20} {
		_, err := Listen("bad", &ListenOptions{RuntimeDir: dir, OOBCapacity: bad})
		errContains(t, fmt.Sprintf("Listen(OOBCapacity=%d)", bad), err, "out-of-band capacity must be", fmt.Sprintf("oobcapacity=%d", bad))
		_, err = Dial(context.Background(), "bad", &DialOptions{RuntimeDir: dir, OOBCapacity: bad})
		errContains(t, fmt.Sprintf("Dial(OOBCapacity=%d)", bad), err, "out-of-band capacity must be")
	}
	_, err := Listen("bad", &ListenOptions{RuntimeDir: dir, FallbackOOBCheckEvery: -1})
	errContains(t, "Listen(FallbackOOBCheckEvery=-1)", err, "must not be negative", "every=-1")
}

// TestFallbackOOBCheckEvery: with an interval of N, the fallback receiver
// notices a flush within N-1 data messages; those arrive, the rest of what
// the flush covers is discarded.
func TestFallbackOOBCheckEvery(t *testing.T) {
	for _, every := range []int{8, 0} { // 0: the default, 16
		t.Run(fmt.Sprintf("every=%d", every), func(t *testing.T) { testFallbackOOBCheckEvery(t, every) })
	}
}

func testFallbackOOBCheckEvery(t *testing.T, every int) {
	m := modes[1]
	m.listen.FallbackOOBCheckEvery, m.dial.FallbackOOBCheckEvery = every, 1
	server, client := newPair(t, m)
	for i := range uint64(100) {
		must(t, client.Send(seqBytes(i, 8)))
	}
	expectSeq(t, server, 0, false, "before the flush")
	must(t, client.Flush())
	for i := uint64(100); i < 110; i++ {
		must(t, client.Send(seqBytes(i, 8)))
	}
	late := uint64(0)
	for {
		seq, _ := recvSeq(t, server)
		if seq == 100 {
			break
		}
		if seq != late+1 {
			t.Fatalf("RecvMsg() = %d, want %d or 100", seq, late+1)
		}
		late++
	}
	if n := checkEvery(every); late == 0 || late > uint64(n-1) {
		t.Errorf("%d messages arrived after the flush, want 1 to %d (the check interval less one)", late, n-1)
	}
	for i := uint64(101); i < 110; i++ {
		expectSeq(t, server, i, false, "after the flush")
	}
	if st := server.Stats(); st.Discarded != 99-late || st.Received != 11+late {
		t.Errorf("Stats() = %+v, want %d discarded, %d received", st, 99-late, 11+late)
	}
	// The dialer's receiver looks at the lane before every message.
	for i := range uint64(20) {
		must(t, server.Send(seqBytes(i, 8)))
	}
	expectSeq(t, client, 0, false, "before the flush")
	must(t, server.Flush())
	must(t, server.Send(seqBytes(20, 8)))
	expectSeq(t, client, 20, false, "after the flush, checking every message")
}

// TestFallbackOOBCausality: however seldom the fallback receiver looks at
// the lane, nothing the peer sent after an urgent message or a flush comes
// before it: the data message carries the count of lane packets sent
// before it, and the receiver reads the lane when it is behind.
func TestFallbackOOBCausality(t *testing.T) {
	m := modes[1]
	m.listen.FallbackOOBCheckEvery = 1000
	server, client := newPair(t, m)
	for i := range uint64(100) {
		must(t, client.Send(seqBytes(i, 8)))
	}
	expectSeq(t, server, 0, false, "before the urgent message") // the first look: the lane is empty
	must(t, client.SendUrgent(seqBytes(1000, 8)))
	for i := uint64(100); i < 110; i++ {
		must(t, client.Send(seqBytes(i, 8)))
	}
	must(t, client.Flush())
	for i := uint64(110); i < 115; i++ {
		must(t, client.Send(seqBytes(i, 8)))
	}
	// 1..99 were queued before the urgent message and the receiver does
	// not look for 1000 messages: they come first. Message 100 counts one
	// lane packet: the urgent message comes before it, and the flush,
	// read next, discards 100..109.
	for i := uint64(1); i < 100; i++ {
		expectSeq(t, server, i, false, "queued before the urgent message")
	}
	expectSeq(t, server, 1000, true, "the urgent message, before what was sent after it")
	for i := uint64(110); i < 115; i++ {
		expectSeq(t, server, i, false, "after the flush")
	}
	if st := server.Stats(); st.Discarded != 10 || st.UrgentReceived != 1 {
		t.Errorf("Stats() = %+v, want 10 discarded, 1 urgent", st)
	}
}

func init() {
	helpers["flushsend"] = helperFlushSend
}

// helperFlushSend dials, then sends ROUNDS rounds of data messages, each
// followed by a Flush, and reports the number of messages sent at each
// flush, one per line, once it has closed.
func helperFlushSend() error {
	c, err := helperDial()
	if err != nil {
		return err
	}
	rounds, per := helperInt("ROUNDS"), helperInt("PER")
	var points strings.Builder
	var seq uint64
	for range rounds {
		n := per/2 + int(seq*7919%uint64(per))
		for range n {
			if err := c.Send(seqBytes(seq, 24+int(seq%40))); err != nil {
				return fmt.Errorf("Send() #%d: %w", seq, err)
			}
			seq++
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("Flush() after %d: %w", seq, err)
		}
		fmt.Fprintln(&points, seq)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	if err := c.Close(); err != nil {
		return err
	}
	_, err = io.WriteString(os.Stdout, points.String())
	return err
}

// TestFlushRaceCrossProcess: a child process dials by name and flushes
// hundreds of times while this process receives. Every gap in what
// arrives must end exactly at a flush point (a flush discards only what
// was sent before it), nothing arrives twice, out of order or flagged, and
// received plus discarded equals sent.
func TestFlushRaceCrossProcess(t *testing.T) {
	for _, m := range oobModes {
		t.Run(m.name, func(t *testing.T) {
			size := map[string][2]int{"ring": {300, 2000}, "fallback": {200, 1000}}[m.name]
			rounds, per := size[0], size[1]
			if testing.Short() {
				rounds /= 4
			}
			dir := t.TempDir()
			lo := m.listen
			lo.RuntimeDir = dir
			l, err := Listen("flushrace", &lo)
			must(t, err)
			defer l.Close()
			ch := startChild(t, "", "flushsend", map[string]string{
				"DIR": dir, "NAME": "flushrace", "MODE": m.name,
				"ROUNDS": strconv.Itoa(rounds), "PER": strconv.Itoa(per),
			}, nil)
			c := acceptOne(t, l)
			must(t, c.SetDeadline(time.Now().Add(2*time.Minute)))
			type gap struct{ from, to uint64 } // [from, to) never arrived
			var gaps []gap
			var next, received uint64
			buf := make([]byte, c.MaxMessage())
			for {
				n, urgent, err := c.RecvMsg(context.Background(), buf)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("RecvMsg() after %d messages = %v; helper stderr:\n%s", received, err, ch.stderr)
				}
				seq := binary.LittleEndian.Uint64(buf)
				if urgent || seq < next {
					t.Fatalf("message %d (urgent %v) arrived when %d or later was due", seq, urgent, next)
				}
				if want := seqBytes(seq, 24+int(seq%40)); string(buf[:n]) != string(want) {
					t.Fatalf("message %d: %d bytes %x, want %d bytes %x", seq, n, buf[:min(n, 16)], len(want), want[:16])
				}
				if seq > next {
					gaps = append(gaps, gap{next, seq})
				}
				next = seq + 1
				received++
			}
			lines := drain(ch)
			if err := ch.wait(t, time.Minute); err != nil {
				t.Fatalf("helper: %v; stderr:\n%s", err, ch.stderr)
			}
			points := map[uint64]bool{}
			var last uint64
			for _, l := range lines {
				v, err := strconv.ParseUint(l, 10, 64)
				must(t, err)
				points[v], last = true, v
			}
			if len(points) != rounds {
				t.Fatalf("helper reported %d flush points, want %d", len(points), rounds)
			}
			var discarded uint64
			for _, g := range gaps {
				if !points[g.to] {
					t.Errorf("messages [%d, %d) were lost: %d is not a flush point", g.from, g.to, g.to)
				}
				discarded += g.to - g.from
			}
			// What was sent after the last message received and before the
			// last flush was discarded by it.
			if next < last {
				discarded += last - next
			}
			st := c.Stats()
			if st.Discarded != discarded || st.Received != received || received+discarded != last {
				t.Errorf("received %d, discarded %d (counted from the gaps), sent %d; Stats() = %+v", received, discarded, last, st)
			}
			t.Logf("%s: %d flushes: %d received, %d discarded in %d gaps", m.name, rounds, received, discarded, len(gaps))
		})
	}
}

// drain returns the lines the child has reported and will report.
func drain(ch *child) []string {
	var lines []string
	for l := range ch.lines {
		lines = append(lines, l)
	}
	return lines
}

// TestFallbackPacketTag pins fbPacketData to the first byte that the
// fallback package's unix transport puts on each packet.
func TestFallbackPacketTag(t *testing.T) {
	a, b, err := fallback.NewUnixPair(nil)
	must(t, err)
	defer a.Close()
	defer b.Close()
	must(t, a.Send([]byte{tagData, 'x'}))
	f, err := b.File()
	must(t, err)
	defer f.Close()
	rc, err := f.SyscallConn()
	must(t, err)
	p := make([]byte, 16)
	var n int
	var rerr error
	must(t, rc.Control(func(fd uintptr) { n, rerr = unix.Read(int(fd), p) }))
	if rerr != nil || n != 3 || p[0] != fbPacketData || p[1] != tagData || p[2] != 'x' {
		t.Fatalf("raw packet = %x, %v; want %x %x 'x'", p[:max(n, 0)], rerr, fbPacketData, tagData)
	}
}

// rawFallback connects a fallback receiver to a peer that writes raw
// packets: the data socket and the lane, as the listener would set them up.
func rawFallback(t *testing.T) (c *Conn, data *net.UnixConn, lane *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	must(t, err)
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		nc, err := net.FileConn(f)
		f.Close()
		must(t, err)
		conns[i] = nc.(*net.UnixConn)
	}
	mine, theirs, err := newLanePair(DefaultOOBCapacity)
	must(t, err)
	fb, err := adoptSocket(conns[0], watchSelf(), mine, DefaultOOBCapacity, 0)
	must(t, err)
	c = &Conn{link: fb}
	t.Cleanup(func() { c.Close(); conns[1].Close(); theirs.Close() })
	return c, conns[1], theirs
}

// TestFallbackCorruptLane: a fallback receiver treats the lane and the
// data socket as untrusted input: a malformed packet, a flush counting
// messages that were never sent, or flush counts that go backwards give
// ErrCorrupt, never a panic or a hang, and it keeps returning it.
func TestFallbackCorruptLane(t *testing.T) {
	data := func(seq uint64) []byte { return dataPacket(0, seqBytes(seq, 8)) }
	flush := func(count uint64) []byte {
		p := make([]byte, flushSize)
		p[0] = tagFlush
		binary.NativeEndian.PutUint64(p[1:], count)
		return p
	}
	for _, tc := range []struct {
		name       string
		data, lane [][]byte
		good       int // data messages delivered before the error
		want       string
	}{
		{"lane-tag", [][]byte{data(0)}, [][]byte{{9, 1, 2}}, 0, "lane packet of 3 bytes with tag 0x9"},
		{"flush-short", [][]byte{data(0)}, [][]byte{{tagFlush, 1, 2}}, 0, "lane packet of 3 bytes with tag 0x3"},
		{"flush-beyond", [][]byte{data(0), data(1)}, [][]byte{flush(5)}, 0, "a flush counted 5 data messages, only 2 arrived"},
		{"flush-backwards", [][]byte{data(0), data(1), data(2)}, [][]byte{flush(1), flush(0)}, 0, "flush counts 0 data messages, an earlier one 1"},
		{"lane-too-long", [][]byte{data(0)}, [][]byte{append([]byte{tagUrgent}, make([]byte, 4000)...)}, 0, "lane packet carries at least"},
		{"data-tag", [][]byte{data(0), {0x7f, tagData, 1}}, nil, 1, "starts with 0x7f"},
		{"data-empty-packet-tag", [][]byte{{fbPacketData, 9}}, nil, 0, "with tag 0x9"},
		{"data-short-header", [][]byte{{fbPacketData, tagData, 1, 2, 3}}, nil, 0, "packet of 5 bytes with tag 0x0"},
		{"lane-count-beyond", [][]byte{data(0), dataPacket(2, seqBytes(1, 8))}, [][]byte{flush(0)}, 1, "data message 1 follows 2 lane packets, the lane had 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, d, lane := rawFallback(t)
			for _, p := range tc.data {
				_, err := d.Write(p)
				must(t, err)
			}
			for _, p := range tc.lane {
				_, err := lane.Write(p)
				must(t, err)
			}
			must(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			for i := range tc.good {
				expectSeq(t, c, uint64(i), false, "good data")
			}
			buf := make([]byte, 64)
			for range 2 {
				_, _, err := c.RecvMsg(context.Background(), buf)
				if !errors.Is(err, ErrCorrupt) || !errors.Is(err, fallback.ErrCorrupt) {
					t.Fatalf("RecvMsg() = %v, want ErrCorrupt", err)
				}
				errContains(t, "RecvMsg()", err, tc.want)
			}
		})
	}
}

// TestFallbackLaneEndsWithPeer: a peer that closes its lane without a
// word is not an error; the data socket says how the connection ended.
func TestFallbackLaneEndsWithPeer(t *testing.T) {
	c, d, lane := rawFallback(t)
	_, err := lane.Write(append([]byte{tagUrgent}, "last words"...))
	must(t, err)
	must(t, lane.Close())
	_, err = d.Write(dataPacket(1, []byte("x")))
	must(t, err)
	_, err = d.Write([]byte{fbPacketData, tagEnd})
	must(t, err)
	buf := make([]byte, 64)
	for _, want := range []struct {
		msg    string
		urgent bool
	}{{"last words", true}, {"x", false}} {
		n, urgent, err := c.RecvMsg(context.Background(), buf)
		if err != nil || string(buf[:n]) != want.msg || urgent != want.urgent {
			t.Fatalf("RecvMsg() = %q (urgent %v), %v; want %q", buf[:n], urgent, err, want.msg)
		}
	}
	if _, _, err := c.RecvMsg(context.Background(), buf); err != io.EOF {
		t.Fatalf("RecvMsg() at the end = %v, want io.EOF", err)
	}
}

// TestOOBNoAllocs: urgent messages cost no allocation either, on the ring
// path and (when nothing has to wait) on the fallback path.
func TestOOBNoAllocs(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			server, client := newPair(t, m)
			msg, buf := make([]byte, 100), make([]byte, 100)
			ctx := context.Background()
			allocs := testing.AllocsPerRun(1000, func() {
				if err := client.SendUrgent(msg); err != nil {
					t.Fatal(err)
				}
				if err := client.Send(msg); err != nil {
					t.Fatal(err)
				}
				for range 2 {
					if _, _, err := server.RecvMsg(ctx, buf); err != nil {
						t.Fatal(err)
					}
				}
			})
			if allocs != 0 {
				t.Errorf("SendUrgent+Send+2 RecvMsg allocate %v times, want 0", allocs)
			}
		})
	}
}

// BenchmarkFallbackOOBCheck measures the fallback receive path with the
// out-of-band check before every data message and every 32, against a
// connection without a lane: 64-byte messages from another goroutine.
func BenchmarkFallbackOOBCheck(b *testing.B) {
	for _, bc := range []struct {
		name       string
		every, oob int
	}{{"every=1", 1, 0}, {"every=32", 32, 0}, {"no-lane", 1, NoOOB}} {
		b.Run(bc.name, func(b *testing.B) {
			m := modes[1]
			m.listen.FallbackOOBCheckEvery, m.listen.OOBCapacity = bc.every, bc.oob
			server, client := newPair(b, m)
			msg, buf := make([]byte, 64), make([]byte, 64)
			b.SetBytes(64)
			b.ReportAllocs()
			n := b.N
			done := make(chan error, 1)
			go func() {
				for range n {
					if err := client.Send(msg); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			b.ResetTimer()
			for range n {
				if _, err := server.Recv(buf); err != nil {
					b.Fatal(err)
				}
			}
			must(b, <-done)
		})
	}
}

// TestDialerChecksLane has a listener announce out-of-band lanes that
// break the rule, or pass something else than a lane: Dial refuses them.
func TestDialerChecksLane(t *testing.T) {
	pipe := func(t *testing.T) []*os.File {
		r, w, err := os.Pipe()
		must(t, err)
		w.Close()
		return []*os.File{r}
	}
	stream := func(t *testing.T) []*os.File {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		must(t, err)
		unix.Close(fds[1])
		return []*os.File{os.NewFile(uintptr(fds[0]), "stream")}
	}
	lane := func(t *testing.T) []*os.File {
		mine, theirs, err := newLanePair(4096)
		must(t, err)
		mine.Close()
		return []*os.File{theirs}
	}
	for _, tc := range []struct {
		name  string
		oob   uint64
		files func(t *testing.T) []*os.File
		pref  int
		want  string
	}{
		{"not-a-power-of-two", 3000, lane, 0, "listener announced an out-of-band lane of 3000 bytes: out-of-band capacity must be"},
		{"too-large", 4 << 20, lane, 0, "oobcapacity=4194304"},
		{"smaller-than-asked", 4096, lane, 8192, "smaller than the dialer's 8192"},
		{"unwanted", 4096, lane, NoOOB, "the dialer asked for none (NoOOB)"},
		{"missing", 4096, nil, 0, "with 0 descriptors, want 1"},
		{"extra", 0, lane, 0, "with 1 descriptors, want 0"},
		{"pipe", 4096, pipe, 0, "the lane must be a socket"},
		{"stream", 4096, stream, 0, "the lane must be an AF_UNIX SOCK_SEQPACKET socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ln := fakeListener(t, dir, "fake")
			served := make(chan error, 1)
			go func() {
				served <- func() error {
					uc, err := ln.AcceptUnix()
					if err != nil {
						return err
					}
					defer uc.Close()
					if _, _, _, err := readPacket(uc, 0); err != nil {
						return err
					}
					var files []*os.File
					if tc.files != nil {
						files = tc.files(t)
					}
					defer closeAll(files)
					h := newHello(kindFallback)
					h.Capacity, h.OOBCapacity, h.FDs, h.ConnID = 4096, tc.oob, uint32(len(files)), 7
					if err := writePacket(uc, h.encode("forced by a test"), files...); err != nil {
						return err
					}
					// The dialer hangs up instead of answering.
					if _, _, _, err := readPacket(uc, 0); err == nil {
						return errors.New("the dialer accepted the lane")
					}
					return nil
				}()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, "fake", &DialOptions{RuntimeDir: dir, OOBCapacity: tc.pref})
			if err == nil {
				c.Close()
			}
			if !errors.Is(err, ErrHandshake) {
				t.Fatalf("Dial() = %v, want ErrHandshake", err)
			}
			errContains(t, "Dial()", err, tc.want)
			must(t, <-served)
		})
	}
}

//go:build linux

package fallback

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// The conformance suite runs unchanged over every transport.
var conformance = []struct {
	name string
	fn   func(t *testing.T, tr transport)
}{
	{"Identity", testIdentity},
	{"Boundaries", testBoundaries},
	{"Empty", testEmpty},
	{"MaxMessage", testMaxMessage},
	{"ShortBuffer", testShortBuffer},
	{"Stress", testStress},
	{"CloseSender", testCloseSender},
	{"CloseReceiver", testCloseReceiver},
	{"CloseWhileRecv", testCloseWhileRecv},
	{"CloseWhileSend", testCloseWhileSend},
	{"CloseIdempotent", testCloseIdempotent},
	{"RecvDeadline", testRecvDeadline},
	{"SendDeadline", testSendDeadline},
	{"RecvContext", testRecvContext},
	{"SendContext", testSendContext},
	{"Allocs", testAllocs},
}

func TestConformance(t *testing.T) {
	for _, tr := range transports {
		t.Run("name="+tr.name, func(t *testing.T) {
			for _, c := range conformance {
				t.Run(c.name, func(t *testing.T) { c.fn(t, tr) })
			}
		})
	}
}

// recvDeadline bounds the waits of a test so that a bug fails it instead
// of hanging it.
const recvDeadline = 20 * time.Second

func mustSend(t testing.TB, s Sender, msg []byte) {
	t.Helper()
	if err := s.Send(msg); err != nil {
		t.Fatalf("Send(%d bytes) = %v", len(msg), err)
	}
}

func mustRecv(t testing.TB, r Receiver, want []byte) {
	t.Helper()
	buf := make([]byte, len(want)+16)
	n, err := r.Recv(buf)
	if err != nil {
		t.Fatalf("Recv() = %d, %v; want %d bytes", n, err, len(want))
	}
	if !bytes.Equal(buf[:n], want) {
		t.Fatalf("Recv() = %d bytes %.16x…, want %d bytes %.16x…", n, buf[:n], len(want), want)
	}
}

func testIdentity(t *testing.T, tr transport) {
	s, r := tr.pair(t)
	if s.Transport() != tr.kind || r.Transport() != tr.kind {
		t.Errorf("Transport() = %q, %q; want %q", s.Transport(), r.Transport(), tr.kind)
	}
	want := MaxPacketMessage
	if tr.framed {
		want = MaxStreamMessage
	}
	if s.MaxMessage() != want || r.MaxMessage() != want {
		t.Errorf("MaxMessage() = %d, %d; want %d", s.MaxMessage(), r.MaxMessage(), want)
	}
}

func testBoundaries(t *testing.T, tr transport) {
	s, r := tr.pair(t)
	r.SetDeadline(time.Now().Add(recvDeadline))
	sizes := []int{5, 0, 1, 64, 4095, 4096, 4097, 3, 1000, 0, 2}
	for i, n := range sizes {
		mustSend(t, s, pattern(byte(i), n))
	}
	for i, n := range sizes {
		mustRecv(t, r, pattern(byte(i), n))
	}
}

func testEmpty(t *testing.T, tr transport) {
	s, r := tr.pair(t)
	r.SetDeadline(time.Now().Add(recvDeadline))
	for range 3 {
		mustSend(t, s, nil)
	}
	mustSend(t, s, []byte{42})
	mustSend(t, s, []byte{})
	for range 3 {
		if n, err := r.Recv(nil); n != 0 || err != nil {
			t.Fatalf("Recv(nil) = %d, %v; want 0, nil", n, err)
		}
	}
	mustRecv(t, r, []byte{42})
	if n, err := r.Recv(make([]byte, 8)); n != 0 || err != nil {
		t.Fatalf("Recv() = %d, %v; want 0, nil", n, err)
	}
}

func testMaxMessage(t *testing.T, tr transport) {
	s, r := tr.pair(t)
	max := s.MaxMessage()
	big := pattern(1, max+1)
	r.SetDeadline(time.Now().Add(recvDeadline))
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, max+1)
		n, err := r.Recv(buf)
		switch {
		case err != nil:
			errc <- err
			return
		case !bytes.Equal(buf[:n], big[:max]):
			errc <- errors.New("largest message arrived altered")
			return
		}
		n, err = r.Recv(buf)
		if err == nil && string(buf[:n]) != "after" {
			err = errors.New("message after the refused one is " + string(buf[:min(n, 32)]))
		}
		errc <- err
	}()
	mustSend(t, s, big[:max])
	if err := s.Send(big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Send(MaxMessage+1 = %d bytes) = %v, want ErrTooLarge", len(big), err)
	}
	mustSend(t, s, []byte("after"))
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func testShortBuffer(t *testing.T, tr transport) {
	s, r := tr.pair(t)
	r.SetDeadline(time.Now().Add(recvDeadline))
	want := pattern(3, 100)
	mustSend(t, s, want)
	mustSend(t, s, []byte("next"))
	for _, size := range []int{10, 0, 99} { // the first read lands partly in the short buffer
		n, err := r.Recv(make([]byte, size))
		if n != len(want) || !errors.Is(err, io.ErrShortBuffer) {
			t.Fatalf("Recv(%d-byte buffer) = %d, %v; want %d, io.ErrShortBuffer", size, n, err, len(want))
		}
	}
	mustRecv(t, r, want)
	mustRecv(t, r, []byte("next"))
}

func testStress(t *testing.T, tr transport) {
	count := uint64(200_000)
	if testing.Short() {
		count = 20_000
	}
	s, r := tr.pair(t)
	r.SetDeadline(time.Now().Add(60 * time.Second))
	s.SetDeadline(time.Now().Add(60 * time.Second))
	const seed = 0x5eed
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, maxGenSize)
		for seq := range count {
			if err := s.Send(genMsg(buf, seed, seq)); err != nil {
				errc <- err
				return
			}
		}
		errc <- s.Close()
	}()
	buf := make([]byte, maxGenSize)
	for seq := range count {
		n, err := r.Recv(buf)
		if err != nil {
			t.Fatalf("Recv() of message %d = %v", seq, err)
		}
		if err := checkMsg(buf[:n], seed, seq); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := r.Recv(buf); err != io.EOF {
		t.Fatalf("Recv() after the last message = %d, %v; want io.EOF", n, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("sender: %v", err)
	}
}

func testCloseSender(t *testing.T, tr transport) {
	s, r := tr.pair(t)
	r.SetDeadline(time.Now().Add(recvDeadline))
	for i := range 10 {
		mustSend(t, s, pattern(byte(i), i*100))
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	for i := range 10 {
		mustRecv(t, r, pattern(byte(i), i*100))
	}
	for range 2 {
		if n, err := r.Recv(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Fatalf("Recv() after the sender closed = %d, %v; want 0, io.EOF", n, err)
		}
	}
}

func testCloseReceiver(t *testing.T, tr transport) {
	s, r := tr.pair(t)
	if err := r.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	s.SetDeadline(time.Now().Add(recvDeadline))
	msg := pattern(1, 64)
	var err error
	for i := 0; i < 100_000 && err == nil; i++ {
		err = s.Send(msg)
	}
	if !errors.Is(err, ErrPeerClosed) || !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("Send() after the receiver closed = %v; want ErrPeerClosed, matching io.ErrClosedPipe", err)
	}
}

func testCloseWhileRecv(t *testing.T, tr transport) {
	_, r := tr.pair(t)
	r.SetDeadline(time.Now().Add(recvDeadline))
	errc := make(chan error, 1)
	go func() {
		_, err := r.Recv(make([]byte, 64))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := r.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := <-errc; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Recv() interrupted by Close = %v; want os.ErrClosed", err)
	}
	if _, err := r.Recv(nil); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Recv() after Close = %v; want os.ErrClosed", err)
	}
}

// fillUntilError sends MaxMessage-sized messages, with nothing receiving,
// until Send fails: the first one that finds the kernel's buffer full
// waits.
func fillUntilError(s Sender) (sent int, err error) {
	msg := make([]byte, s.MaxMessage())
	for {
		if err := s.Send(msg); err != nil {
			return sent, err
		}
		sent++
	}
}

func testCloseWhileSend(t *testing.T, tr transport) {
	s, _ := tr.pair(t)
	s.SetDeadline(time.Now().Add(recvDeadline))
	errc := make(chan error, 1)
	go func() {
		_, err := fillUntilError(s)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := <-errc; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Send() interrupted by Close = %v; want os.ErrClosed", err)
	}
}

func testCloseIdempotent(t *testing.T, tr transport) {
	s, r := tr.pair(t)
	for _, c := range []interface{ Close() error }{s, r} {
		for i := range 2 {
			if err := c.Close(); err != nil {
				t.Fatalf("Close() #%d = %v", i+1, err)
			}
		}
	}
	if err := s.Send([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Send() after Close = %v; want os.ErrClosed", err)
	}
	if err := s.SendContext(context.Background(), []byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("SendContext() after Close = %v; want os.ErrClosed", err)
	}
	if _, err := r.Recv(nil); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Recv() after Close = %v; want os.ErrClosed", err)
	}
	if err := r.SetDeadline(time.Now()); !errors.Is(err, os.ErrClosed) {
		t.Errorf("SetDeadline() after Close = %v; want os.ErrClosed", err)
	}
}

func testRecvDeadline(t *testing.T, tr transport) {
	s, r := tr.pair(t)
	const wait = 30 * time.Millisecond
	start := time.Now()
	r.SetDeadline(start.Add(wait))
	n, err := r.Recv(make([]byte, 8))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Recv() with nothing sent = %d, %v; want os.ErrDeadlineExceeded", n, err)
	}
	if d := time.Since(start); d < wait {
		t.Fatalf("Recv() gave up after %v, before its %v deadline", d, wait)
	}
	// A message already buffered is delivered past the deadline.
	r.SetDeadline(time.Time{})
	mustSend(t, s, []byte("one"))
	mustSend(t, s, []byte("two"))
	mustRecv(t, r, []byte("one"))
	if !tr.framed {
		return // a packet socket buffers one packet at a time
	}
	r.SetDeadline(time.Now().Add(-time.Second))
	mustRecv(t, r, []byte("two"))
}

// testSendDeadline fills the kernel's buffer with 1000-byte messages until
// the deadline strikes. A frame cut by it breaks the stream; otherwise
// every message sent before it arrives intact, and so does one after.
func testSendDeadline(t *testing.T, tr transport) {
	s, r := tr.pair(t)
	s.SetDeadline(time.Now().Add(50 * time.Millisecond))
	sent, err := sendUntilError(s)
	checkSendInterrupted(t, tr, s, r, sent, err, os.ErrDeadlineExceeded)
}

func sendUntilError(s Sender) (sent int, err error) {
	buf := make([]byte, 1000)
	for {
		if err := s.Send(pattern(byte(sent), len(buf))); err != nil {
			return sent, err
		}
		sent++
	}
}

func sendUntilErrorContext(ctx context.Context, s Sender) (sent int, err error) {
	for {
		if err := s.SendContext(ctx, pattern(byte(sent), 1000)); err != nil {
			return sent, err
		}
		sent++
	}
}

func checkSendInterrupted(t *testing.T, tr transport, s Sender, r Receiver, sent int, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("Send() after %d messages = %v; want %v", sent, err, want)
	}
	t.Logf("interrupted after %d messages: %v", sent, err)
	if errors.Is(err, ErrBroken) {
		if !tr.framed {
			t.Fatalf("Send() = %v: a packet cannot be cut", err)
		}
		if err := s.Send(nil); !errors.Is(err, ErrBroken) {
			t.Fatalf("Send() on a broken stream = %v; want ErrBroken", err)
		}
		return
	}
	if err := s.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	r.SetDeadline(time.Now().Add(recvDeadline))
	errc := make(chan error, 1)
	go func() { errc <- s.Send([]byte("after")) }()
	for i := range sent {
		mustRecv(t, r, pattern(byte(i), 1000))
	}
	mustRecv(t, r, []byte("after"))
	if err := <-errc; err != nil {
		t.Fatalf("Send() after the interrupted one = %v", err)
	}
}

func testRecvContext(t *testing.T, tr transport) {
	s, r := tr.pair(t)
	// The deadline set before the calls must survive their cancellation.
	r.SetDeadline(time.Now().Add(recvDeadline))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if n, err := r.RecvContext(ctx, make([]byte, 8)); !errors.Is(err, context.Canceled) {
		t.Fatalf("RecvContext() cancelled while waiting = %d, %v; want context.Canceled", n, err)
	}
	if _, err := r.RecvContext(ctx, make([]byte, 8)); !errors.Is(err, context.Canceled) {
		t.Fatalf("RecvContext() with a cancelled context = %v; want context.Canceled", err)
	}
	tctx, tcancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer tcancel()
	if _, err := r.RecvContext(tctx, make([]byte, 8)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RecvContext() past the context's deadline = %v; want context.DeadlineExceeded", err)
	}
	// Nothing lost, nothing left interrupted.
	mustSend(t, s, []byte("hello"))
	mustRecv(t, r, []byte("hello"))
	mustSend(t, s, []byte("again"))
	buf := make([]byte, 8)
	n, err := r.RecvContext(testContext(t), buf)
	if err != nil || string(buf[:n]) != "again" {
		t.Fatalf("RecvContext() = %q, %v; want \"again\"", buf[:n], err)
	}
	// A deadline that strikes while a context watches is still reported
	// as a deadline.
	r.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.RecvContext(testContext(t), buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("RecvContext() past the endpoint's deadline = %v; want os.ErrDeadlineExceeded", err)
	}
}

func testSendContext(t *testing.T, tr transport) {
	s, r := tr.pair(t)
	s.SetDeadline(time.Now().Add(recvDeadline))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	sent, err := sendUntilErrorContext(ctx, s)
	checkSendInterrupted(t, tr, s, r, sent, err, context.Canceled)
}

func testAllocs(t *testing.T, tr transport) {
	s, r := tr.pair(t)
	r.SetDeadline(time.Now().Add(recvDeadline))
	for _, size := range []int{0, 64, 4096} {
		msg := pattern(5, size)
		buf := make([]byte, 4096)
		ctx := context.Background()
		roundTrip := func() {
			if err := s.Send(msg); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Recv(buf); err != nil {
				t.Fatal(err)
			}
			if err := s.SendContext(ctx, msg); err != nil {
				t.Fatal(err)
			}
			if _, err := r.RecvContext(ctx, buf); err != nil {
				t.Fatal(err)
			}
		}
		roundTrip() // warm-up: buffers are allocated on first use
		if a := testing.AllocsPerRun(500, roundTrip); a != 0 {
			t.Errorf("size=%d: %v allocations per Send+Recv, want 0", size, a)
		}
	}
}

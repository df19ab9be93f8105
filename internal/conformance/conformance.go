// Package conformance is the contract test suite that every shmlane
// transport passes unchanged: the bare ring, the pipe, FIFO, unix-socket
// and TCP fallbacks, and connections made by Listen and Dial in both
// modes. A transport describes itself with a Transport, and Run checks
// message boundaries, empty messages, the largest message and one byte
// over it, short buffers, a million generated messages with checksums,
// Close on either side before and during a wait, deadlines and contexts,
// and that a warm Send and Recv allocate nothing.
//
// The suite speaks the standard errors the contract promises, so that it
// needs no package's sentinels: os.ErrClosed, io.EOF, io.ErrClosedPipe
// (the peer closed), io.ErrShortBuffer, os.ErrDeadlineExceeded, the
// context's errors, and syscall.EMSGSIZE (a message over MaxMessage).
package conformance

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/shmlane/shmlane/transport"
)

// Sender and Receiver are the contract under test.
type (
	Sender   = transport.Sender
	Receiver = transport.Receiver
)

// Transport describes a transport under test.
type Transport struct {
	Name string // subtest name
	Kind string // what Transport() reports
	// MaxMessage is what MaxMessage() reports on both ends.
	MaxMessage int
	// OnePacket: the receiver takes one packet at a time from the kernel,
	// so a second message is not yet buffered when the first is read.
	OnePacket bool
	// Broken, if set, is the error of a byte stream that a deadline or a
	// context cut in the middle of a frame: every later Send returns it.
	Broken error
	// TooLarge and PeerClosed, if set, are the transport's own sentinels,
	// checked besides syscall.EMSGSIZE and io.ErrClosedPipe.
	TooLarge, PeerClosed error
	// Pair returns a connected sender and receiver, closed at cleanup.
	Pair func(t testing.TB) (Sender, Receiver)
}

// StressMessages is how many generated messages the stress check sends
// (a tenth with -short).
const StressMessages = 1_000_000

var checks = []struct {
	name string
	fn   func(t *testing.T, tr Transport)
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

// Run runs the suite over tr, each check in a subtest.
func Run(t *testing.T, tr Transport) {
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) { c.fn(t, tr) })
	}
}

// recvDeadline bounds the waits of a check so that a bug fails it instead
// of hanging it.
const recvDeadline = 20 * time.Second

// testContext is a context that ends with the test, or after 10 s.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

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

func testIdentity(t *testing.T, tr Transport) {
	s, r := tr.Pair(t)
	if s.Transport() != tr.Kind || r.Transport() != tr.Kind {
		t.Errorf("Transport() = %q, %q; want %q", s.Transport(), r.Transport(), tr.Kind)
	}
	if s.MaxMessage() != tr.MaxMessage || r.MaxMessage() != tr.MaxMessage {
		t.Errorf("MaxMessage() = %d, %d; want %d", s.MaxMessage(), r.MaxMessage(), tr.MaxMessage)
	}
}

func testBoundaries(t *testing.T, tr Transport) {
	s, r := tr.Pair(t)
	r.SetDeadline(time.Now().Add(recvDeadline))
	sizes := []int{5, 0, 1, 64, 4095, 4096, 4097, 3, 1000, 0, 2}
	for i, n := range sizes {
		mustSend(t, s, Pattern(byte(i), n))
	}
	for i, n := range sizes {
		mustRecv(t, r, Pattern(byte(i), n))
	}
}

func testEmpty(t *testing.T, tr Transport) {
	s, r := tr.Pair(t)
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

func testMaxMessage(t *testing.T, tr Transport) {
	s, r := tr.Pair(t)
	max := s.MaxMessage()
	big := Pattern(1, max+1)
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
	if err := s.Send(big); !errors.Is(err, syscall.EMSGSIZE) || tr.TooLarge != nil && !errors.Is(err, tr.TooLarge) {
		t.Fatalf("Send(MaxMessage+1 = %d bytes) = %v, want an error matching syscall.EMSGSIZE (and %v)", len(big), err, tr.TooLarge)
	}
	mustSend(t, s, []byte("after"))
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func testShortBuffer(t *testing.T, tr Transport) {
	s, r := tr.Pair(t)
	r.SetDeadline(time.Now().Add(recvDeadline))
	want := Pattern(3, 100)
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

func testStress(t *testing.T, tr Transport) {
	count := uint64(StressMessages)
	if testing.Short() {
		count /= 10
	}
	s, r := tr.Pair(t)
	r.SetDeadline(time.Now().Add(120 * time.Second))
	s.SetDeadline(time.Now().Add(120 * time.Second))
	const seed = 0x5eed
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, MaxGenSize)
		for seq := range count {
			if err := s.Send(GenMsg(buf, seed, seq)); err != nil {
				errc <- err
				return
			}
		}
		errc <- s.Close()
	}()
	buf := make([]byte, MaxGenSize)
	for seq := range count {
		n, err := r.Recv(buf)
		if err != nil {
			t.Fatalf("Recv() of message %d = %v", seq, err)
		}
		if err := CheckMsg(buf[:n], seed, seq); err != nil {
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

func testCloseSender(t *testing.T, tr Transport) {
	s, r := tr.Pair(t)
	r.SetDeadline(time.Now().Add(recvDeadline))
	for i := range 10 {
		mustSend(t, s, Pattern(byte(i), i*100))
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	for i := range 10 {
		mustRecv(t, r, Pattern(byte(i), i*100))
	}
	for range 2 {
		if n, err := r.Recv(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Fatalf("Recv() after the sender closed = %d, %v; want 0, io.EOF", n, err)
		}
	}
}

func testCloseReceiver(t *testing.T, tr Transport) {
	s, r := tr.Pair(t)
	if err := r.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	s.SetDeadline(time.Now().Add(recvDeadline))
	msg := Pattern(1, 64)
	var err error
	for i := 0; i < 100_000 && err == nil; i++ {
		err = s.Send(msg)
	}
	if !errors.Is(err, io.ErrClosedPipe) || tr.PeerClosed != nil && !errors.Is(err, tr.PeerClosed) {
		t.Fatalf("Send() after the receiver closed = %v; want an error matching io.ErrClosedPipe (and %v)", err, tr.PeerClosed)
	}
}

func testCloseWhileRecv(t *testing.T, tr Transport) {
	_, r := tr.Pair(t)
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

func testCloseWhileSend(t *testing.T, tr Transport) {
	s, _ := tr.Pair(t)
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

func testCloseIdempotent(t *testing.T, tr Transport) {
	s, r := tr.Pair(t)
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

func testRecvDeadline(t *testing.T, tr Transport) {
	s, r := tr.Pair(t)
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
	if tr.OnePacket {
		return // a packet socket hands over one packet at a time
	}
	r.SetDeadline(time.Now().Add(-time.Second))
	mustRecv(t, r, []byte("two"))
}

// testSendDeadline fills the kernel's buffer with 1000-byte messages until
// the deadline strikes. A frame cut by it breaks the stream; otherwise
// every message sent before it arrives intact, and so does one after.
func testSendDeadline(t *testing.T, tr Transport) {
	s, r := tr.Pair(t)
	s.SetDeadline(time.Now().Add(50 * time.Millisecond))
	sent, err := sendUntilError(s)
	checkSendInterrupted(t, tr, s, r, sent, err, os.ErrDeadlineExceeded)
}

func sendUntilError(s Sender) (sent int, err error) {
	buf := make([]byte, 1000)
	for {
		if err := s.Send(Pattern(byte(sent), len(buf))); err != nil {
			return sent, err
		}
		sent++
	}
}

func sendUntilErrorContext(ctx context.Context, s Sender) (sent int, err error) {
	for {
		if err := s.SendContext(ctx, Pattern(byte(sent), 1000)); err != nil {
			return sent, err
		}
		sent++
	}
}

func checkSendInterrupted(t *testing.T, tr Transport, s Sender, r Receiver, sent int, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("Send() after %d messages = %v; want %v", sent, err, want)
	}
	t.Logf("interrupted after %d messages: %v", sent, err)
	if tr.Broken != nil && errors.Is(err, tr.Broken) {
		if err := s.Send(nil); !errors.Is(err, tr.Broken) {
			t.Fatalf("Send() on a broken stream = %v; want %v", err, tr.Broken)
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
		mustRecv(t, r, Pattern(byte(i), 1000))
	}
	mustRecv(t, r, []byte("after"))
	if err := <-errc; err != nil {
		t.Fatalf("Send() after the interrupted one = %v", err)
	}
}

func testRecvContext(t *testing.T, tr Transport) {
	s, r := tr.Pair(t)
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

func testSendContext(t *testing.T, tr Transport) {
	s, r := tr.Pair(t)
	s.SetDeadline(time.Now().Add(recvDeadline))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	sent, err := sendUntilErrorContext(ctx, s)
	checkSendInterrupted(t, tr, s, r, sent, err, context.Canceled)
}

func testAllocs(t *testing.T, tr Transport) {
	s, r := tr.Pair(t)
	r.SetDeadline(time.Now().Add(recvDeadline))
	for _, size := range []int{0, 64, 4096} {
		msg := Pattern(5, size)
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

// Generated messages: message seq of a run seeded with seed has
// MsgSize(seed, seq) bytes, uniform in [0, MaxGenSize]: its sequence number
// (when it has 12 bytes or more), pseudo-random bytes, and a CRC-32C of
// the bytes before it (when it has 4 or more).
const MaxGenSize = 4096

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// MsgSize is the size of message seq of a run seeded with seed.
func MsgSize(seed, seq uint64) int { return int(splitmix(seed^splitmix(seq)) % (MaxGenSize + 1)) }

// GenMsg writes message seq into buf (at least MaxGenSize bytes) and
// returns it.
func GenMsg(buf []byte, seed, seq uint64) []byte {
	b := buf[:MsgSize(seed, seq)]
	body := b
	if len(b) >= 4 {
		body = b[:len(b)-4]
	}
	x := seed ^ seq<<20
	for i := 0; i < len(body); i += 8 {
		x = splitmix(x)
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], x)
		copy(body[i:], w[:])
	}
	if len(b) >= 12 {
		binary.LittleEndian.PutUint64(b, seq)
	}
	if len(b) >= 4 {
		binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(body, castagnoli))
	}
	return b
}

// CheckMsg checks msg against message seq's size, number and checksum.
func CheckMsg(msg []byte, seed, seq uint64) error {
	if want := MsgSize(seed, seq); len(msg) != want {
		return fmt.Errorf("message %d is %d bytes, want %d", seq, len(msg), want)
	}
	if len(msg) >= 12 {
		if got := binary.LittleEndian.Uint64(msg); got != seq {
			return fmt.Errorf("message %d carries sequence number %d", seq, got)
		}
	}
	if len(msg) >= 4 {
		body := msg[:len(msg)-4]
		if got, want := binary.LittleEndian.Uint32(msg[len(msg)-4:]), crc32.Checksum(body, castagnoli); got != want {
			return fmt.Errorf("message %d (%d bytes): checksum %#x, want %#x", seq, len(msg), got, want)
		}
	}
	return nil
}

// Pattern returns n bytes that depend on tag, for comparisons.
func Pattern(tag byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = tag + byte(i*7)
	}
	return b
}

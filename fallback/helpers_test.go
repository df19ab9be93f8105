//go:build linux

package fallback

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// transport builds connected endpoints of one kind for the conformance
// suite and the benchmarks.
type transport struct {
	name   string // subtest name
	kind   string // what Transport() reports
	framed bool   // length-prefixed frames (else one packet per message)
	// pair returns a connected sender and receiver, closed at cleanup.
	pair func(t testing.TB) (Sender, Receiver)
	// raw returns a receiver and a writer to the descriptor beneath it,
	// for hand-made frames and packets.
	raw func(t testing.TB) (io.WriteCloser, Receiver)
}

var transports = []transport{
	{name: "pipe", kind: "pipe", framed: true, pair: pipePair, raw: pipeRaw},
	{name: "fifo", kind: "fifo", framed: true, pair: fifoPair, raw: fifoRaw},
	{name: "unix-seqpacket", kind: "unix", pair: unixListenPair, raw: unixRawFunc(unix.SOCK_SEQPACKET)},
	{name: "unix-stream", kind: "unix", framed: true, pair: unixPairStream, raw: unixRawFunc(unix.SOCK_STREAM)},
	{name: "tcp", kind: "tcp", framed: true, pair: tcpPair, raw: tcpRaw},
}

func closeAtCleanup(t testing.TB, cs ...io.Closer) {
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
}

func pipePair(t testing.TB) (Sender, Receiver) {
	s, r, err := NewPipe()
	if err != nil {
		t.Fatal(err)
	}
	closeAtCleanup(t, s, r)
	return s, r
}

func pipeRaw(t testing.TB) (io.WriteCloser, Receiver) {
	rf, wf, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewPipeReceiver(rf)
	if err != nil {
		t.Fatal(err)
	}
	closeAtCleanup(t, wf, r)
	return wf, r
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newFIFO(t testing.TB) string {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := CreateFIFO(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func fifoPair(t testing.TB) (Sender, Receiver) {
	path := newFIFO(t)
	r, err := OpenFIFOReceiver(testContext(t), path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenFIFOSender(testContext(t), path)
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	closeAtCleanup(t, s, r)
	return s, r
}

func fifoRaw(t testing.TB) (io.WriteCloser, Receiver) {
	path := newFIFO(t)
	r, err := OpenFIFOReceiver(testContext(t), path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	closeAtCleanup(t, w, r)
	return w, r
}

func unixListenPair(t testing.TB) (Sender, Receiver) {
	path := filepath.Join(t.TempDir(), "sock")
	l, err := ListenUnix(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := DialUnix(testContext(t), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := l.Accept()
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	closeAtCleanup(t, s, r)
	return s, r
}

func unixPairStream(t testing.TB) (Sender, Receiver) {
	s, r, err := NewUnixPair(&UnixOptions{Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	closeAtCleanup(t, s, r)
	return s, r
}

// socketpair returns both ends of a unix socket pair as files.
func socketpair(t testing.TB, sotype int) (*os.File, *os.File) {
	fds, err := unix.Socketpair(unix.AF_UNIX, sotype|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
}

func unixRawFunc(sotype int) func(t testing.TB) (io.WriteCloser, Receiver) {
	return func(t testing.TB) (io.WriteCloser, Receiver) {
		a, b := socketpair(t, sotype)
		r, err := NewUnixConn(b)
		if err != nil {
			t.Fatal(err)
		}
		closeAtCleanup(t, a, r)
		return a, r
	}
}

func tcpPair(t testing.TB) (Sender, Receiver) {
	l, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := DialTCP(testContext(t), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r, err := l.Accept()
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	closeAtCleanup(t, s, r)
	return s, r
}

func tcpRaw(t testing.TB) (io.WriteCloser, Receiver) {
	l, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	w, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r, err := l.Accept()
	if err != nil {
		w.Close()
		t.Fatal(err)
	}
	closeAtCleanup(t, w, r)
	return w, r
}

// Generated messages: message seq of a run seeded with seed has
// msgSize(seed, seq) bytes, uniform in [0, maxGenSize]: its sequence number
// (when it has 12 bytes or more), pseudo-random bytes, and a CRC-32C of
// the bytes before it (when it has 4 or more).
const maxGenSize = 4096

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func msgSize(seed, seq uint64) int { return int(splitmix(seed^splitmix(seq)) % (maxGenSize + 1)) }

// genMsg writes message seq into buf and returns it.
func genMsg(buf []byte, seed, seq uint64) []byte {
	b := buf[:msgSize(seed, seq)]
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

// checkMsg checks msg against message seq's size, number and checksum.
func checkMsg(msg []byte, seed, seq uint64) error {
	if want := msgSize(seed, seq); len(msg) != want {
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

// pattern returns n bytes that depend on tag, for comparisons.
func pattern(tag byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = tag + byte(i*7)
	}
	return b
}

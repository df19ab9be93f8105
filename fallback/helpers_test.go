//go:build linux

package fallback

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmlane/shmlane/internal/conformance"
	"github.com/shmlane/shmlane/transport"
)

// The contract, by the short names the tests use.
type (
	Sender   = transport.Sender
	Receiver = transport.Receiver
)

// kind builds connected endpoints of one transport for the conformance
// suite and the benchmarks.
type kind struct {
	name   string // subtest name
	kind   string // what Transport() reports
	framed bool   // length-prefixed frames (else one packet per message)
	// pair returns a connected sender and receiver, closed at cleanup.
	pair func(t testing.TB) (Sender, Receiver)
	// raw returns a receiver and a writer to the descriptor beneath it,
	// for hand-made frames and packets.
	raw func(t testing.TB) (io.WriteCloser, Receiver)
}

var transports = []kind{
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

// The generated messages and patterns of the contract suite.
const maxGenSize = conformance.MaxGenSize

var (
	genMsg   = conformance.GenMsg
	checkMsg = conformance.CheckMsg
	pattern  = conformance.Pattern
)

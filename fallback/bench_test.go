//go:build linux

package fallback

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// The benchmarks send size-byte messages from the benchmark loop to a
// receiving goroutine. BenchmarkRawSyscall does the same with a bare
// write per message and 64 KiB reads on the same kind of descriptor and
// the same Go objects (the runtime's poller included), without framing:
// the cost a transport adds is the ratio of the two.

var benchSizes = []int{64, 1024, 4096}

// rawSizes adds 4100, what a framed 4096-byte message puts on the wire: a
// pipe stores data in 4 KiB pages, so the 4-byte header costs a page
// crossing that the raw baseline at 4096 does not pay.
var rawSizes = []int{64, 1024, 4096, 4100}

func BenchmarkTransport(b *testing.B) {
	for _, tr := range transports {
		for _, size := range benchSizes {
			b.Run("name="+tr.name+"/size="+strconv.Itoa(size), func(b *testing.B) {
				s, r := tr.pair(b)
				done := make(chan error, 1)
				go func() {
					buf := make([]byte, size)
					for {
						if _, err := r.Recv(buf); err != nil {
							if err == io.EOF {
								err = nil
							}
							done <- err
							return
						}
					}
				}()
				msg := make([]byte, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if err := s.Send(msg); err != nil {
						b.Fatal(err)
					}
				}
				s.Close()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// rawPair returns a writer and a reader of the descriptor kind beneath a
// transport.
var rawPairs = []struct {
	name string
	pair func(b *testing.B) (w io.WriteCloser, r io.ReadCloser)
}{
	{"pipe", func(b *testing.B) (io.WriteCloser, io.ReadCloser) {
		r, w, err := os.Pipe()
		if err != nil {
			b.Fatal(err)
		}
		return w, r
	}},
	{"fifo", func(b *testing.B) (io.WriteCloser, io.ReadCloser) {
		path := filepath.Join(b.TempDir(), "fifo")
		if err := unix.Mkfifo(path, 0o600); err != nil {
			b.Fatal(err)
		}
		// Non-blocking descriptors, so that os.File puts them in the
		// poller as the transport does.
		r, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			b.Fatal(err)
		}
		w, err := os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			b.Fatal(err)
		}
		return w, r
	}},
	{"unix-seqpacket", func(b *testing.B) (io.WriteCloser, io.ReadCloser) { return rawUnix(b, unix.SOCK_SEQPACKET) }},
	{"unix-stream", func(b *testing.B) (io.WriteCloser, io.ReadCloser) { return rawUnix(b, unix.SOCK_STREAM) }},
	{"tcp", func(b *testing.B) (io.WriteCloser, io.ReadCloser) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		w, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		r, err := l.Accept()
		if err != nil {
			b.Fatal(err)
		}
		return w, r
	}},
}

func rawUnix(b *testing.B, sotype int) (io.WriteCloser, io.ReadCloser) {
	fds, err := unix.Socketpair(unix.AF_UNIX, sotype|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		if cs[i], err = net.FileConn(f); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	return cs[0], cs[1]
}

func BenchmarkRawSyscall(b *testing.B) {
	for _, rp := range rawPairs {
		for _, size := range rawSizes {
			b.Run("name="+rp.name+"/size="+strconv.Itoa(size), func(b *testing.B) {
				w, r := rp.pair(b)
				defer r.Close()
				done := make(chan error, 1)
				go func() {
					buf := make([]byte, ioBufSize)
					for {
						if _, err := r.Read(buf); err != nil {
							if err == io.EOF {
								err = nil
							}
							done <- err
							return
						}
					}
				}()
				msg := make([]byte, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := w.Write(msg); err != nil {
						b.Fatal(err)
					}
				}
				w.Close()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

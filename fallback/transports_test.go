//go:build linux

package fallback

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestNewPipeEnds(t *testing.T) {
	rf, wf, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	defer wf.Close()
	if _, err := NewPipeSender(rf); err == nil || !strings.Contains(err.Error(), "not open for writing") {
		t.Errorf("NewPipeSender(read end) = %v; want a \"not open for writing\" error", err)
	}
	if _, err := NewPipeReceiver(wf); err == nil || !strings.Contains(err.Error(), "not open for reading") {
		t.Errorf("NewPipeReceiver(write end) = %v; want a \"not open for reading\" error", err)
	}
	reg, err := os.Create(filepath.Join(t.TempDir(), "regular"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if _, err := NewPipeSender(reg); err == nil || !strings.Contains(err.Error(), "not a pipe") {
		t.Errorf("NewPipeSender(regular file) = %v; want a \"not a pipe\" error", err)
	}
	if _, err := NewPipeReceiver(nil); err == nil {
		t.Error("NewPipeReceiver(nil) succeeded")
	}
}

// TestPipeAdoptBlocking adopts descriptors in blocking mode, as a child
// inherits them, and checks that deadlines then work.
func TestPipeAdoptBlocking(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, err := NewPipeReceiver(os.NewFile(uintptr(p[0]), "r"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s, err := NewPipeSender(os.NewFile(uintptr(p[1]), "w"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.Recv(nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Recv() on an adopted pipe = %v; want os.ErrDeadlineExceeded", err)
	}
	r.SetDeadline(time.Now().Add(recvDeadline))
	mustSend(t, s, []byte("adopted"))
	mustRecv(t, r, []byte("adopted"))
}

func TestCreateFIFO(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fifo")
	if err := CreateFIFO(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeNamedPipe || fi.Mode().Perm()&^0o600 != 0 {
		t.Fatalf("CreateFIFO made mode %v, want a FIFO with at most 0600", fi.Mode())
	}
	if err := CreateFIFO(path); err != nil {
		t.Fatalf("CreateFIFO() over our own FIFO = %v; want it reused", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CreateFIFO(path); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Fatalf("CreateFIFO() over a 0644 FIFO = %v; want a refusal", err)
	}
	reg := filepath.Join(dir, "regular")
	if err := os.WriteFile(reg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CreateFIFO(reg); err == nil || !strings.Contains(err.Error(), "not a FIFO") {
		t.Fatalf("CreateFIFO() over a regular file = %v; want a refusal", err)
	}
	ctx := testContext(t)
	if _, err := OpenFIFOReceiver(ctx, reg); err == nil || !strings.Contains(err.Error(), "not a FIFO") {
		t.Fatalf("OpenFIFOReceiver(regular file) = %v; want a refusal", err)
	}
	if _, err := OpenFIFOSender(ctx, reg); err == nil || !strings.Contains(err.Error(), "not a FIFO") {
		t.Fatalf("OpenFIFOSender(regular file) = %v; want a refusal", err)
	}
}

func TestFIFOSenderWaitsForReceiver(t *testing.T) {
	path := newFIFO(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if s, err := OpenFIFOSender(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("OpenFIFOSender() with no receiver = %v; want context.DeadlineExceeded", err)
	}
	// A receiver that opens later lets a waiting sender through.
	done := make(chan error, 1)
	go func() {
		s, err := OpenFIFOSender(testContext(t), path)
		if err == nil {
			err = s.Send([]byte("late"))
			s.Close()
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	r, err := OpenFIFOReceiver(testContext(t), path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetDeadline(time.Now().Add(recvDeadline))
	mustRecv(t, r, []byte("late"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := r.Recv(nil); err != io.EOF {
		t.Fatalf("Recv() after the sender closed = %v; want io.EOF", err)
	}
}

// TestFIFOReceiverWaitsForSender: a FIFO with no writer reads as
// end-of-file; the receiver must wait instead, and see io.EOF only after a
// sender came and went.
func TestFIFOReceiverWaitsForSender(t *testing.T) {
	path := newFIFO(t)
	r, err := OpenFIFOReceiver(testContext(t), path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := r.Recv(nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Recv() before any sender opened = %v; want os.ErrDeadlineExceeded", err)
	}
	r.SetDeadline(time.Now().Add(recvDeadline))
	errc := make(chan error, 1)
	go func() {
		_, err := r.Recv(nil)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s, err := OpenFIFOSender(testContext(t), path)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-errc:
		t.Fatalf("Recv() returned %v while the sender was open and silent", err)
	default:
	}
	s.Close()
	if err := <-errc; err != io.EOF {
		t.Fatalf("Recv() after a silent sender closed = %v; want io.EOF", err)
	}
}

func TestUnixListener(t *testing.T) {
	for _, stream := range []bool{false, true} {
		opts := &UnixOptions{Stream: stream}
		path := filepath.Join(t.TempDir(), "sock")
		l, err := ListenUnix(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm()&^0o600 != 0 {
			t.Errorf("socket file mode = %v, want a socket with at most 0600", fi.Mode())
		}
		if _, err := ListenUnix(path, opts); err == nil {
			t.Errorf("ListenUnix() over an existing socket file succeeded")
		}
		if c, err := DialUnix(testContext(t), path, &UnixOptions{Stream: !stream}); err == nil {
			c.Close()
			t.Errorf("DialUnix(Stream=%v) to a Stream=%v listener succeeded", !stream, stream)
		}
		errc := make(chan error, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				err = c.Send([]byte("hi"))
				c.Close()
			}
			errc <- err
		}()
		c, err := DialUnix(testContext(t), path, opts)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(recvDeadline))
		mustRecv(t, c, []byte("hi"))
		if _, err := c.Recv(nil); err != io.EOF {
			t.Errorf("Recv() after the peer closed = %v; want io.EOF", err)
		}
		c.Close()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		acc := make(chan error, 1)
		go func() {
			_, err := l.Accept()
			acc <- err
		}()
		time.Sleep(10 * time.Millisecond)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-acc; !errors.Is(err, os.ErrClosed) {
			t.Errorf("Accept() interrupted by Close = %v; want os.ErrClosed", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket file after Close: %v; want it removed", err)
		}
		if err := l.Close(); err != nil {
			t.Errorf("second Close() = %v", err)
		}
	}
}

// TestUnixFile hands one end of a pair over as a file, as to a child
// process, and adopts it with NewUnixConn, which reads the socket type.
func TestUnixFile(t *testing.T) {
	for _, stream := range []bool{false, true} {
		a, b, err := NewUnixPair(&UnixOptions{Stream: stream})
		if err != nil {
			t.Fatal(err)
		}
		f, err := b.File()
		if err != nil {
			t.Fatal(err)
		}
		b.Close()
		c, err := NewUnixConn(f)
		if err != nil {
			t.Fatal(err)
		}
		want := MaxPacketMessage
		if stream {
			want = MaxStreamMessage
		}
		if c.MaxMessage() != want {
			t.Errorf("stream=%v: adopted MaxMessage() = %d, want %d", stream, c.MaxMessage(), want)
		}
		c.SetDeadline(time.Now().Add(recvDeadline))
		a.SetDeadline(time.Now().Add(recvDeadline))
		mustSend(t, a, []byte("ping"))
		mustRecv(t, c, []byte("ping"))
		mustSend(t, c, []byte("pong"))
		mustRecv(t, a, []byte("pong"))
		a.Close()
		c.Close()
	}
	rf, wf, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	if _, err := NewUnixConn(rf); err == nil {
		t.Error("NewUnixConn(pipe) succeeded")
	}
}

func TestTCPNoDelay(t *testing.T) {
	s, r := tcpPair(t)
	for _, c := range []*TCPConn{s.(*TCPConn), r.(*TCPConn)} {
		rc, err := c.tc.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		var gerr error
		rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY) })
		if gerr != nil || v == 0 {
			t.Errorf("%v: TCP_NODELAY = %d, %v; want set", c.LocalAddr(), v, gerr)
		}
	}
}

//go:build linux

package shmlane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmlane/shmlane/internal/layout"
	"github.com/shmlane/shmlane/ring"
)

// fakeListener listens on name's socket in dir without any of Listener's
// checks, to play a misbehaving listener against Dial.
func fakeListener(t *testing.T, dir, name string) *net.UnixListener {
	t.Helper()
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(dir, name+".sock"), Net: "unixpacket"})
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln
}

// fakeDial connects to a listener's socket without Dial's protocol.
func fakeDial(t testing.TB, dir, name string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: filepath.Join(dir, name+".sock"), Net: "unixpacket"})
	must(t, err)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// TestDialerRejectsBadSegments has a listener pass descriptors that are not
// valid segments: the dialer refuses to map them, says so, and both ends
// fall back to the socket.
func TestDialerRejectsBadSegments(t *testing.T) {
	good := func(t *testing.T) *os.File {
		s, err := ring.Create(&ring.Config{Capacity: 4096})
		must(t, err)
		defer s.Close()
		f, err := s.File()
		must(t, err)
		return f
	}
	for _, tc := range []struct {
		name  string
		files func(t *testing.T) []*os.File
		want  string
	}{{
		name: "regular-file",
		files: func(t *testing.T) []*os.File {
			f, err := os.CreateTemp(t.TempDir(), "segment")
			must(t, err)
			must(t, f.Truncate(1<<16))
			return []*os.File{f, good(t)}
		},
		want: "not a sealable memfd",
	}, {
		name: "unsealed-memfd",
		files: func(t *testing.T) []*os.File {
			fd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC)
			must(t, err)
			f := os.NewFile(uintptr(fd), "unsealed")
			must(t, f.Truncate(1<<16))
			return []*os.File{good(t), f}
		},
		want: "must be sealed against shrink and grow",
	}, {
		name: "corrupt-header",
		files: func(t *testing.T) []*os.File {
			f := good(t)
			_, err := f.WriteAt([]byte("NOTSHMLN"), layout.OffMagic)
			must(t, err)
			return []*os.File{f, good(t)}
		},
		want: "bad magic",
	}, {
		name: "other-capacity",
		files: func(t *testing.T) []*os.File {
			s, err := ring.Create(&ring.Config{Capacity: 8192})
			must(t, err)
			defer s.Close()
			f, err := s.File()
			must(t, err)
			return []*os.File{good(t), f}
		},
		want: "differ from the 4096 announced",
	}, {
		name: "other-lane",
		files: func(t *testing.T) []*os.File {
			s, err := ring.Create(&ring.Config{Capacity: 4096, OOBCapacity: 4096})
			must(t, err)
			defer s.Close()
			f, err := s.File()
			must(t, err)
			return []*os.File{f, good(t)}
		},
		want: "segment out-of-band lanes of 4096 and 0 bytes differ from the 0 announced",
	}, {
		name:  "one-descriptor",
		files: func(t *testing.T) []*os.File { return []*os.File{good(t)} },
		want:  "passed 1 descriptors, want 2",
	}} {
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
					files := tc.files(t)
					defer closeAll(files)
					h := newHello(kindRing)
					h.Capacity, h.FDs, h.ConnID = 4096, uint32(len(files)), 7
					if err := writePacket(uc, h.encode(""), files...); err != nil {
						return err
					}
					r, text, _, err := readPacket(uc, 0)
					if err != nil {
						return err
					}
					if r.Kind != kindNoMap {
						return errors.New("dialer sent " + kindName(r.Kind) + ", want nomap")
					}
					t.Logf("dialer's reason: %s", text)
					// Carry on over the socket, as the listener would,
					// without an out-of-band lane.
					if err := writePacket(uc, newHello(kindLane).encode("")); err != nil {
						return err
					}
					fb, err := adoptSocket(uc, watchSelf(), nil, 0, 0)
					if err != nil {
						return err
					}
					c := &Conn{link: fb}
					defer c.Close()
					return c.Send([]byte("over the socket"))
				}()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, "fake", &DialOptions{RuntimeDir: dir})
			must(t, err)
			defer c.Close()
			if !c.FellBack() || c.ID() != 7 {
				t.Fatalf("FellBack() = %v, ID() = %d, want a fallback connection with ID 7", c.FellBack(), c.ID())
			}
			errContains(t, "FallbackReason()", errors.New(c.FallbackReason()), "the dialer cannot use the rings", tc.want)
			buf := make([]byte, 64)
			n, err := c.Recv(buf)
			if err != nil || string(buf[:n]) != "over the socket" {
				t.Fatalf("Recv() = %q, %v", buf[:n], err)
			}
			must(t, <-served)
		})
	}
}

// TestListenerSurvivesBadDialers sends the listener what a broken or
// hostile dialer might and checks that Accept reports each attempt and the
// listener goes on serving.
func TestListenerSurvivesBadDialers(t *testing.T) {
	dir := t.TempDir()
	l, err := Listen("tough", &ListenOptions{RuntimeDir: dir, HandshakeTimeout: 200 * time.Millisecond})
	must(t, err)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	badHello := newHello(kindDial)
	badHello.Magic = 0x12345678
	newVersion := newHello(kindDial)
	newVersion.Version = helloVersion + 1
	oldHello := newHello(kindDial).encode("")[:88] // a version-1 hello
	badOOB := newHello(kindDial)
	badOOB.OOBCapacity = 5000
	binary.NativeEndian.PutUint16(oldHello[4:], 1)
	for _, tc := range []struct {
		name   string
		send   []byte // nil: send nothing
		accept string // in Accept's error
		answer string // in the listener's kindReject text, "" for none
	}{
		{"garbage", []byte("GET / HTTP/1.0\r\n\r\n"), "not a shmlane peer", "not a shmlane peer"},
		{"tiny", []byte("SHR"), "shorter than 8", "shorter than 8"},
		{"bad-magic", badHello.encode(""), "not a shmlane peer", "not a shmlane peer"},
		{"new-version", newVersion.encode(""), fmt.Sprintf("peer speaks handshake version %d, this side %d", helloVersion+1, helloVersion), fmt.Sprintf("version %d", helloVersion+1)},
		{"old-version", oldHello, fmt.Sprintf("peer speaks handshake version 1, this side %d", helloVersion), "version 1"},
		{"short", newHello(kindDial).encode("")[:100], "shorter than 136", "shorter than 136"},
		{"bad-oob", badOOB.encode(""), "out-of-band capacity must be", "oobcapacity=5000"},
		{"wrong-kind", newHello(kindAttached).encode(""), "sent attached first", "sent attached first"},
		{"silent", nil, "i/o timeout", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uc := fakeDial(t, dir, "tough")
			if tc.send != nil {
				_, err := uc.Write(tc.send)
				must(t, err)
			}
			_, err := l.Accept(ctx)
			if !errors.Is(err, ErrHandshake) {
				t.Fatalf("Accept() = %v, want ErrHandshake", err)
			}
			errContains(t, "Accept()", err, tc.accept)
			if tc.answer != "" {
				h, text, _, err := readPacket(uc, 0)
				if err != nil || h.Kind != kindReject {
					t.Fatalf("listener's answer: %s %v, want reject", kindName(h.Kind), err)
				}
				errContains(t, "reject text", errors.New(text), tc.answer)
			}
		})
	}

	t.Run("nomap", func(t *testing.T) {
		uc := fakeDial(t, dir, "tough")
		must(t, writePacket(uc, newHello(kindDial).encode("")))
		type result struct {
			c   *Conn
			err error
		}
		accepted := make(chan result, 1)
		go func() { c, err := l.Accept(ctx); accepted <- result{c, err} }()
		h, _, files, err := readPacket(uc, 2)
		must(t, err)
		closeAll(files)
		if h.Kind != kindRing || len(files) != 2 {
			t.Fatalf("listener sent %s with %d descriptors, want ring with 2", kindName(h.Kind), len(files))
		}
		must(t, writePacket(uc, newHello(kindNoMap).encode("this dialer cannot map memory")))
		r := <-accepted
		must(t, r.err)
		defer r.c.Close()
		if !r.c.FellBack() || r.c.FallbackReason() != "the dialer cannot use the rings: this dialer cannot map memory" {
			t.Fatalf("FellBack() = %v, FallbackReason() = %q", r.c.FellBack(), r.c.FallbackReason())
		}
		// The listener follows up with the out-of-band lane.
		lh, _, lfiles, err := readPacket(uc, 1)
		must(t, err)
		if lh.Kind != kindLane || lh.OOBCapacity != DefaultOOBCapacity || len(lfiles) != 1 {
			closeAll(lfiles)
			t.Fatalf("listener sent %s (oobcap %d) with %d descriptors, want lane (%d) with 1", kindName(lh.Kind), lh.OOBCapacity, len(lfiles), DefaultOOBCapacity)
		}
		must(t, checkLaneSocket(lfiles[0], os.Getpid()))
		fb, err := adoptSocket(uc, watchSelf(), lfiles[0], int(lh.OOBCapacity), 0)
		must(t, err)
		peer := &Conn{link: fb}
		defer peer.Close()
		must(t, r.c.Send([]byte("hi")))
		must(t, r.c.SendUrgent([]byte("!")))
		buf := make([]byte, 8)
		if n, urgent, err := peer.RecvMsg(ctx, buf); err != nil || !urgent || string(buf[:n]) != "!" {
			t.Fatalf("RecvMsg() = %q (urgent %v), %v; want the urgent \"!\"", buf[:n], urgent, err)
		}
		if n, err := peer.Recv(buf); err != nil || string(buf[:n]) != "hi" {
			t.Fatalf("Recv() = %q, %v", buf[:n], err)
		}
	})

	t.Run("hang-up", func(t *testing.T) {
		uc := fakeDial(t, dir, "tough")
		must(t, writePacket(uc, newHello(kindDial).encode("")))
		accepted := make(chan error, 1)
		go func() { _, err := l.Accept(ctx); accepted <- err }()
		_, _, files, err := readPacket(uc, 2)
		must(t, err)
		closeAll(files)
		uc.Close()
		if err := <-accepted; !errors.Is(err, ErrHandshake) {
			t.Fatalf("Accept() after the dialer hung up = %v, want ErrHandshake", err)
		}
	})

	// After all that, a real dialer still gets through.
	server, client := acceptDial(t, l, dir, "tough")
	must(t, client.Send([]byte("fine")))
	buf := make([]byte, 8)
	if n, err := server.Recv(buf); err != nil || string(buf[:n]) != "fine" {
		t.Fatalf("Recv() = %q, %v", buf[:n], err)
	}
}

// acceptDial connects a Dial to l.
func acceptDial(t *testing.T, l *Listener, dir, name string) (server, client *Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted := make(chan error, 1)
	go func() {
		var err error
		server, err = l.Accept(ctx)
		accepted <- err
	}()
	client, err := Dial(ctx, name, &DialOptions{RuntimeDir: dir})
	must(t, err)
	must(t, <-accepted)
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func TestHelloRoundTrip(t *testing.T) {
	h := hello{Magic: helloMagic, Version: helloVersion, Kind: kindConnInfo, Flags: 3, PID: 4, UID: 5, FDs: 2,
		Capacity: 1 << 20, IPCNS: 4026531839, ConnID: 9, PeerPID: 10, Sent: 11, SentBytes: 12, Received: 13, ReceivedBytes: 14,
		OOBCapacity: 15, UrgentSent: 16, UrgentReceived: 17, Flushes: 18, Discarded: 19, DiscardedBytes: 20}
	b := h.encode("ring\nreason")
	if len(b) != helloSize+len("ring\nreason") {
		t.Fatalf("encoded %d bytes, want %d", len(b), helloSize+11)
	}
	got, text, err := decodeHello(b)
	if err != nil || got != h || text != "ring\nreason" {
		t.Fatalf("decodeHello(encode(h)) = %+v, %q, %v; want %+v", got, text, err, h)
	}
	long := make([]byte, 2*maxText)
	if b := h.encode(string(long)); len(b) != helloSize+maxText {
		t.Errorf("encode with %d bytes of text = %d bytes, want the text cut to %d", len(long), len(b), maxText)
	}
	if _, _, err := decodeHello(append(h.encode(""), long...)); !errors.Is(err, ErrHandshake) {
		t.Errorf("decodeHello with %d bytes of text = %v, want ErrHandshake", len(long), err)
	}
}

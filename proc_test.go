//go:build linux

package shmlane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"testing"
	"time"
)

func init() {
	helpers["stream"] = helperStream
	helpers["burst"] = helperBurst
	helpers["sink"] = helperSink
	helpers["hold"] = helperHold
}

// acceptOne accepts a connection within 20 seconds.
func acceptOne(t testing.TB, l *Listener) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := l.Accept(ctx)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCrossProcessStream sends messages of random sizes (0 to 4096 bytes)
// from a child process that dials by name, while the parent sends a
// smaller stream the other way, and checks every byte, the order and the
// count, plus a CRC-32 of each direction that the sending side reports.
func TestCrossProcessStream(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			n := map[string]int{"ring": 1_000_000, "fallback": 200_000}[m.name]
			if testing.Short() {
				n /= 10
			}
			back := n / 8
			const seed = 20240601
			dir := t.TempDir()
			lo := m.listen
			lo.RuntimeDir, lo.Capacity = dir, 0
			l, err := Listen("stream", &lo)
			must(t, err)
			defer l.Close()
			ch := startChild(t, "", "stream", map[string]string{
				"DIR": dir, "NAME": "stream", "MODE": m.name,
				"N": strconv.Itoa(n), "BACK": strconv.Itoa(back), "SEED": strconv.Itoa(seed),
			}, nil)
			c := acceptOne(t, l)
			if c.Transport() != m.transport {
				t.Fatalf("Transport() = %q, want %q", c.Transport(), m.transport)
			}
			start := time.Now()
			sendErr := make(chan error, 1)
			go func() {
				g := newMsgGen(seed+1, 4096)
				for range back {
					if err := c.Send(g.next()); err != nil {
						sendErr <- err
						return
					}
				}
				sendErr <- nil
			}()
			g := newMsgGen(seed, 4096)
			crc := crc32.NewIEEE()
			buf := make([]byte, c.MaxMessage())
			var bytesIn int
			for i := range n {
				got, err := c.Recv(buf)
				if err != nil {
					t.Fatalf("Recv() #%d of %d = %v; helper stderr:\n%s", i, n, err, ch.stderr)
				}
				want := g.next()
				if !bytes.Equal(buf[:got], want) {
					t.Fatalf("message #%d: got %d bytes, want %d; first difference at %d", i, got, len(want), firstDiff(buf[:got], want))
				}
				crc.Write(buf[:got])
				bytesIn += got
			}
			must(t, <-sendErr)
			report := ch.line(t, 30*time.Second)
			if want := fmt.Sprintf("crc %08x", crc.Sum32()); report != want {
				t.Fatalf("helper reported %q, the received stream has %q", report, want)
			}
			if _, err := c.Recv(buf); err != io.EOF {
				t.Fatalf("Recv() after %d messages = %v, want io.EOF", n, err)
			}
			if err := ch.wait(t, 30*time.Second); err != nil {
				t.Fatalf("helper: %v; stderr:\n%s", err, ch.stderr)
			}
			el := time.Since(start)
			t.Logf("%s: %d messages (%d MiB) in, %d out, in %v: %.0f msg/s", m.name, n, bytesIn>>20, back, el.Round(time.Millisecond), float64(n)/el.Seconds())
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// helperStream: dial, send N generated messages while checking BACK
// messages from the parent, report the CRC-32 of what was sent, close.
func helperStream() error {
	c, err := helperDial()
	if err != nil {
		return err
	}
	n, back, seed := helperInt("N"), helperInt("BACK"), uint64(helperInt("SEED"))
	recvErr := make(chan error, 1)
	go func() {
		g := newMsgGen(seed+1, 4096)
		buf := make([]byte, c.MaxMessage())
		for i := range back {
			got, err := c.Recv(buf)
			if err != nil {
				recvErr <- fmt.Errorf("Recv() #%d = %w", i, err)
				return
			}
			if want := g.next(); !bytes.Equal(buf[:got], want) {
				recvErr <- fmt.Errorf("message #%d from the parent: got %d bytes, want %d", i, got, len(want))
				return
			}
		}
		recvErr <- nil
	}()
	g := newMsgGen(seed, 4096)
	crc := crc32.NewIEEE()
	for i := range n {
		msg := g.next()
		if err := c.Send(msg); err != nil {
			return fmt.Errorf("Send() #%d: %w", i, err)
		}
		crc.Write(msg)
	}
	if err := <-recvErr; err != nil {
		return err
	}
	fmt.Printf("crc %08x\n", crc.Sum32())
	return c.Close()
}

// TestKillSender kills the sending process (SIGKILL) while it is blocked on
// a full connection: the receiver gets every message committed before,
// in order, then ErrPeerGone within a second.
func TestKillSender(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			// k messages fit in either transport: 64 KiB of ring, or the
			// socket's default 208 KiB send buffer.
			const k = 100
			dir := t.TempDir()
			lo := m.listen
			lo.RuntimeDir = dir
			if m.transport == "ring" {
				lo.Capacity = 64 << 10
			}
			l, err := Listen("burst", &lo)
			must(t, err)
			defer l.Close()
			ch := startChild(t, "", "burst", map[string]string{"DIR": dir, "NAME": "burst", "MODE": m.name, "K": strconv.Itoa(k)}, nil)
			c := acceptOne(t, l)
			if got := ch.line(t, 20*time.Second); got != "sent "+strconv.Itoa(k) {
				t.Fatalf("helper reported %q, want \"sent %d\"", got, k)
			}
			// The child goes on sending until the connection is full, and
			// waits there.
			waitStalled(t, c, m)
			ch.kill(t)
			killed := time.Now()
			buf := make([]byte, c.MaxMessage())
			var i uint64
			for {
				n, err := c.Recv(buf)
				if err != nil {
					if !errors.Is(err, ErrPeerGone) {
						t.Fatalf("Recv() after %d messages = %v, want ErrPeerGone", i, err)
					}
					break
				}
				if n != 100 || !checkSeq(buf[:n], i) {
					t.Fatalf("message #%d is %d bytes %x…, want 100 bytes carrying %d", i, n, buf[:min(n, 8)], i)
				}
				i++
			}
			if el := time.Since(killed); el > time.Second {
				t.Errorf("ErrPeerGone came %v after the kill, want within 1s", el)
			}
			if i < k {
				t.Errorf("received %d messages, want at least the %d committed before the report", i, k)
			}
			t.Logf("%s: %d messages received before ErrPeerGone", m.name, i)
		})
	}
}

// waitStalled waits until the peer's messages stop arriving in c's
// receive direction, which is then full.
func waitStalled(t testing.TB, c *Conn, m mode) {
	t.Helper()
	if m.transport != "ring" {
		// The socket's queue has no counters here; the child blocks
		// after a few hundred kilobytes, well within this.
		time.Sleep(300 * time.Millisecond)
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	last := c.Stats().Recv.Sent
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		st := c.Stats().Recv
		if st.Sent == last && st.Used()+2*(100+16) > st.Capacity {
			return
		}
		last = st.Sent
	}
	t.Fatalf("the peer never filled the ring: %+v", c.Stats().Recv)
}

// helperBurst: dial, send K sequence-numbered messages, report, then go on
// sending until killed.
func helperBurst() error {
	c, err := helperDial()
	if err != nil {
		return err
	}
	k := uint64(helperInt("K"))
	msg := make([]byte, 100)
	for i := uint64(0); ; i++ {
		if i == k {
			fmt.Printf("sent %d\n", k)
		}
		if err := c.Send(seqMsg(msg, i)); err != nil {
			return err
		}
	}
}

// TestKillReceiver kills the receiving process while the sender waits on a
// full connection: the sender gets ErrPeerGone within a second.
func TestKillReceiver(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			dir := t.TempDir()
			lo := m.listen
			lo.RuntimeDir = dir
			l, err := Listen("sink", &lo)
			must(t, err)
			defer l.Close()
			ch := startChild(t, "", "sink", map[string]string{"DIR": dir, "NAME": "sink", "MODE": m.name}, nil)
			c := acceptOne(t, l)
			if got := ch.line(t, 20*time.Second); got != "ready" {
				t.Fatalf("helper reported %q, want \"ready\"", got)
			}
			sent := fill(t, c, 1000)
			done := blocked(t, "Send on a full connection", func() error { return c.Send(make([]byte, 1000)) })
			ch.kill(t)
			killed := time.Now()
			err = waitErr(t, done, "Send after the receiver's death")
			if !errors.Is(err, ErrPeerGone) {
				t.Fatalf("Send() after the receiver died = %v, want ErrPeerGone", err)
			}
			if el := time.Since(killed); el > time.Second {
				t.Errorf("ErrPeerGone came %v after the kill, want within 1s", el)
			}
			if err := c.Send(nil); !errors.Is(err, ErrPeerGone) {
				t.Errorf("a later Send() = %v, want ErrPeerGone again", err)
			}
			t.Logf("%s: %d messages sent before the connection was full", m.name, sent)
		})
	}
}

// helperSink: dial, report, never read.
func helperSink() error {
	c, err := helperDial()
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println("ready")
	select {}
}

// TestStaleSocket kills a listener and checks that its name can be taken
// again: while it lives the name is in use, after its death the socket it
// left answers nobody (ErrNoListener) and a new Listen reclaims it.
func TestStaleSocket(t *testing.T) {
	dir := t.TempDir()
	ch := startChild(t, "", "hold", map[string]string{"DIR": dir, "NAME": "held"}, nil)
	if got := ch.line(t, 20*time.Second); got != "ready" {
		t.Fatalf("helper reported %q, want \"ready\"", got)
	}
	_, err := Listen("held", &ListenOptions{RuntimeDir: dir})
	if !errors.Is(err, ErrNameInUse) {
		t.Fatalf("Listen() on a live listener's name = %v, want ErrNameInUse", err)
	}
	errContains(t, "Listen() on a live name", err, fmt.Sprintf("pid %d", ch.cmd.Process.Pid))

	ch.kill(t)
	sock := dir + "/held.sock"
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("the dead listener's socket: %v, %v; want a socket left behind", fi, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Dial(ctx, "held", &DialOptions{RuntimeDir: dir}); !errors.Is(err, ErrNoListener) {
		t.Fatalf("Dial() to a stale socket = %v, want ErrNoListener", err)
	}
	l, err := Listen("held", &ListenOptions{RuntimeDir: dir})
	if err != nil {
		t.Fatalf("Listen() after the holder died = %v, want the stale socket reclaimed", err)
	}
	defer l.Close()
	accepted := make(chan *Conn, 1)
	go func() {
		c, err := l.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	c, err := Dial(ctx, "held", &DialOptions{RuntimeDir: dir})
	must(t, err)
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	defer s.Close()
	must(t, c.Send([]byte("reclaimed")))
	buf := make([]byte, 16)
	if n, err := s.Recv(buf); err != nil || string(buf[:n]) != "reclaimed" {
		t.Fatalf("Recv() = %q, %v", buf[:n], err)
	}
}

// helperHold: listen on NAME, report, wait to be killed.
func helperHold() error {
	l, err := Listen(helperVar("NAME"), &ListenOptions{RuntimeDir: helperVar("DIR")})
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println("ready")
	select {}
}

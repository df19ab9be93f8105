//go:build linux

package shmlane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/shmlane/shmlane/fallback"
	"github.com/shmlane/shmlane/internal/conformance"
	"github.com/shmlane/shmlane/ring"
)

// A mode is a way for Listen and Dial to connect; the conformance suite
// runs the same checks over each.
type mode struct {
	name      string
	listen    ListenOptions
	dial      DialOptions
	transport string
	reason    string // a part of the fallback reason, "" for shared memory
}

var modes = []mode{
	{name: "ring", listen: ListenOptions{Capacity: 16 << 10}, transport: "ring"},
	{name: "fallback", listen: ListenOptions{ForceFallback: true}, transport: "unix", reason: "ListenOptions.ForceFallback"},
}

// newPair connects a dialer to a listener in this process and returns the
// listener's end and the dialer's.
func newPair(t testing.TB, m mode) (server, client *Conn) {
	t.Helper()
	dir := t.TempDir()
	lo, do := m.listen, m.dial
	lo.RuntimeDir, do.RuntimeDir = dir, dir
	l, err := Listen("pair", &lo)
	must(t, err)
	t.Cleanup(func() { l.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted := make(chan error, 1)
	go func() {
		var err error
		server, err = l.Accept(ctx)
		accepted <- err
	}()
	client, err = Dial(ctx, "pair", &do)
	must(t, err)
	must(t, <-accepted)
	t.Cleanup(func() { client.Close(); server.Close() })
	for _, c := range []*Conn{server, client} {
		if c.Transport() != m.transport || c.FellBack() != (m.reason != "") {
			t.Fatalf("Transport() = %q, FellBack() = %v, want %q, %v", c.Transport(), c.FellBack(), m.transport, m.reason != "")
		}
		if !bytes.Contains([]byte(c.FallbackReason()), []byte(m.reason)) || (m.reason == "") != (c.FallbackReason() == "") {
			t.Fatalf("FallbackReason() = %q, want it to contain %q", c.FallbackReason(), m.reason)
		}
		if c.PeerPID() != os.Getpid() {
			t.Fatalf("PeerPID() = %d, want %d", c.PeerPID(), os.Getpid())
		}
	}
	if server.ID() != client.ID() || server.ID() == 0 {
		t.Fatalf("IDs: server %d, client %d, want equal and non-zero", server.ID(), client.ID())
	}
	if server.MaxMessage() != client.MaxMessage() {
		t.Fatalf("MaxMessage: server %d, client %d, want equal", server.MaxMessage(), client.MaxMessage())
	}
	return server, client
}

// fill sends size-byte messages until c's peer is full and returns how
// many were sent.
func fill(t testing.TB, c *Conn, size int) int {
	t.Helper()
	msg := make([]byte, size)
	for n := 0; n < 1<<20; n++ {
		c.SetDeadline(time.Now().Add(50 * time.Millisecond))
		if err := c.Send(msg); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Send() = %v while filling, want a deadline error once full", err)
			}
			must(t, c.SetDeadline(time.Time{}))
			return n
		}
	}
	t.Fatal("the connection never filled up")
	return 0
}

// within runs fn in a goroutine and returns its error, failing the test
// if it takes longer than d.
func within(t testing.TB, d time.Duration, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
	return nil
}

// blocked starts fn, checks that it is still waiting after a moment, and
// returns a channel with its result.
func blocked(t testing.TB, what string, fn func() error) chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		t.Fatalf("%s returned %v at once, want it to wait", what, err)
	case <-time.After(100 * time.Millisecond):
	}
	return done
}

func waitErr(t testing.TB, done chan error, what string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s still waiting 5s after it should have been released", what)
	}
	return nil
}

// TestContract runs the contract suite that the bare ring and every
// fallback pass (internal/conformance) over connections made by Listen and
// Dial, in shared-memory and in fallback mode: the dialer sends, the
// listener's end receives.
func TestContract(t *testing.T) {
	for _, m := range modes {
		m.listen.Capacity = 64 << 10 // room for the suite's unread messages
		max := ring.MaxMessage(m.listen.Capacity)
		if m.reason != "" {
			max = fbMaxMessage
		}
		tr := conformance.Transport{
			Name: m.name, Kind: m.transport, MaxMessage: max,
			TooLarge: ErrTooLarge, PeerClosed: ErrPeerClosed,
			Pair: func(t testing.TB) (conformance.Sender, conformance.Receiver) {
				server, client := newPair(t, m)
				return client, server
			},
		}
		t.Run(m.name, func(t *testing.T) { conformance.Run(t, tr) })
	}
}

// TestConformance checks what is particular to connections, in both
// modes.
func TestConformance(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Run("boundaries", func(t *testing.T) { testBoundaries(t, m) })
			t.Run("empty", func(t *testing.T) { testEmpty(t, m) })
			t.Run("max-message", func(t *testing.T) { testMaxMessage(t, m) })
			t.Run("short-buffer", func(t *testing.T) { testShortBuffer(t, m) })
			t.Run("deadline", func(t *testing.T) { testDeadline(t, m) })
			t.Run("context", func(t *testing.T) { testContext(t, m) })
			t.Run("batch", func(t *testing.T) { testBatch(t, m) })
			t.Run("close", func(t *testing.T) { testClose(t, m) })
			t.Run("stats", func(t *testing.T) { testStats(t, m) })
		})
	}
}

func testBoundaries(t *testing.T, m mode) {
	server, client := newPair(t, m)
	max := client.MaxMessage()
	sizes := []int{0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4095, 4096, 4097, max - 1, max, 3, 0, 1}
	payload := func(i, n int) []byte {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(i*31 + j)
		}
		return b
	}
	for _, dir := range []struct {
		name     string
		from, to *Conn
	}{{"dialer→listener", client, server}, {"listener→dialer", server, client}} {
		sent := make(chan error, 1)
		go func() {
			for i, n := range sizes {
				if err := dir.from.Send(payload(i, n)); err != nil {
					sent <- err
					return
				}
			}
			sent <- nil
		}()
		buf := make([]byte, max)
		for i, n := range sizes {
			got, err := dir.to.Recv(buf)
			if err != nil {
				t.Fatalf("%s: Recv() #%d = %v", dir.name, i, err)
			}
			if want := payload(i, n); !bytes.Equal(buf[:got], want) {
				t.Fatalf("%s: message #%d is %d bytes (%x…), want %d bytes (%x…)", dir.name, i, got, buf[:min(got, 8)], n, want[:min(n, 8)])
			}
		}
		must(t, <-sent)
	}
}

func testEmpty(t *testing.T, m mode) {
	server, client := newPair(t, m)
	must(t, client.Send(nil))
	must(t, client.Send([]byte{}))
	must(t, client.Send([]byte("x")))
	for i := range 2 {
		if n, err := server.Recv(nil); n != 0 || err != nil {
			t.Fatalf("Recv(nil) #%d = %d, %v, want 0, nil", i, n, err)
		}
	}
	buf := make([]byte, 8)
	if n, err := server.Recv(buf); n != 1 || err != nil || buf[0] != 'x' {
		t.Fatalf("Recv() = %d, %v (%q), want 1, nil (\"x\")", n, err, buf[:n])
	}
}

func testMaxMessage(t *testing.T, m mode) {
	server, client := newPair(t, m)
	max := client.MaxMessage()
	switch m.transport {
	case "ring":
		if want := ring.MaxMessage(16 << 10); max != want {
			t.Fatalf("MaxMessage() = %d, want ring.MaxMessage(16 KiB) = %d", max, want)
		}
	default:
		// The unix transport's packet limit less the connection's
		// header: its tag and the lane count.
		if want := fallback.MaxPacketMessage - 5; max != want {
			t.Fatalf("MaxMessage() = %d, want %d", max, want)
		}
	}
	big := bytes.Repeat([]byte{0xa5}, max+1)
	err := client.Send(big)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Send(MaxMessage+1 bytes) = %v, want ErrTooLarge", err)
	}
	if m.transport != "ring" && !errors.Is(err, fallback.ErrTooLarge) {
		t.Fatalf("Send(MaxMessage+1 bytes) = %v, want it to match fallback.ErrTooLarge too", err)
	}
	if err := client.SendContext(context.Background(), big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("SendContext(MaxMessage+1 bytes) = %v, want ErrTooLarge", err)
	}
	errContains(t, "Send(MaxMessage+1 bytes)", err, "MaxMessage")
	// Nothing of the refused message went out; a message of MaxMessage
	// bytes does.
	done := make(chan error, 1)
	go func() { done <- client.Send(big[:max]) }()
	buf := make([]byte, max+1)
	n, err := server.Recv(buf)
	if err != nil || n != max || !bytes.Equal(buf[:n], big[:max]) {
		t.Fatalf("Recv() = %d, %v, want the %d-byte message", n, err, max)
	}
	must(t, <-done)
}

func testShortBuffer(t *testing.T, m mode) {
	server, client := newPair(t, m)
	msg := bytes.Repeat([]byte("0123456789"), 10)
	must(t, client.Send(msg))
	buf := make([]byte, 200)
	n, err := server.Recv(buf[:10])
	if !errors.Is(err, io.ErrShortBuffer) || n != len(msg) {
		t.Fatalf("Recv(10-byte buffer) = %d, %v, want %d, io.ErrShortBuffer", n, err, len(msg))
	}
	n, err = server.Recv(buf)
	if err != nil || !bytes.Equal(buf[:n], msg) {
		t.Fatalf("Recv() after a short buffer = %d, %v, want the whole message", n, err)
	}
}

func testDeadline(t *testing.T, m mode) {
	server, client := newPair(t, m)
	buf := make([]byte, server.MaxMessage())

	// Receive: the deadline ends the wait, and a later message is
	// delivered once the deadline is cleared.
	must(t, server.SetDeadline(time.Now().Add(50*time.Millisecond)))
	start := time.Now()
	_, err := server.Recv(buf)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Recv() past the deadline = %v, want os.ErrDeadlineExceeded", err)
	}
	if el := time.Since(start); el < 40*time.Millisecond || el > 3*time.Second {
		t.Errorf("Recv() returned after %v, want about 50ms", el)
	}
	must(t, server.SetDeadline(time.Time{}))
	must(t, client.Send([]byte("after")))
	if n, err := server.Recv(buf); err != nil || string(buf[:n]) != "after" {
		t.Fatalf("Recv() = %q, %v, want \"after\"", buf[:n], err)
	}

	// Send: a full connection makes Send wait until the deadline; what
	// was sent before is all delivered.
	sent := fill(t, client, 1000)
	must(t, client.SetDeadline(time.Now().Add(-time.Second)))
	if err := client.Send(make([]byte, 1000)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Send() on a full connection past the deadline = %v, want os.ErrDeadlineExceeded", err)
	}
	must(t, client.SetDeadline(time.Time{}))
	for i := range sent {
		if n, err := server.Recv(buf); err != nil || n != 1000 {
			t.Fatalf("Recv() #%d of %d = %d, %v", i, sent, n, err)
		}
	}
	must(t, client.Send([]byte("last")))
	if n, err := server.Recv(buf); err != nil || string(buf[:n]) != "last" {
		t.Fatalf("Recv() = %q, %v, want \"last\"", buf[:n], err)
	}
}

func testContext(t *testing.T, m mode) {
	server, client := newPair(t, m)
	buf := make([]byte, server.MaxMessage())

	ctx, cancel := context.WithCancel(context.Background())
	done := blocked(t, "RecvContext", func() error { _, err := server.RecvContext(ctx, buf); return err })
	cancel()
	if err := waitErr(t, done, "RecvContext after cancel"); !errors.Is(err, context.Canceled) {
		t.Fatalf("RecvContext() after cancel = %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := server.RecvContext(ctx, buf)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RecvContext() past the context's deadline = %v, want context.DeadlineExceeded", err)
	}
	must(t, client.Send([]byte("kept")))
	if n, err := server.RecvContext(context.Background(), buf); err != nil || string(buf[:n]) != "kept" {
		t.Fatalf("RecvContext() = %q, %v, want \"kept\"", buf[:n], err)
	}

	sent := fill(t, client, 1000)
	ctx, cancel = context.WithCancel(context.Background())
	done = blocked(t, "SendContext on a full connection", func() error { return client.SendContext(ctx, make([]byte, 1000)) })
	cancel()
	if err := waitErr(t, done, "SendContext after cancel"); !errors.Is(err, context.Canceled) {
		t.Fatalf("SendContext() after cancel = %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	err = client.SendContext(ctx, make([]byte, 1000))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendContext() past the context's deadline = %v, want context.DeadlineExceeded", err)
	}
	for i := range sent {
		if n, err := server.Recv(buf); err != nil || n != 1000 {
			t.Fatalf("Recv() #%d of %d = %d, %v", i, sent, n, err)
		}
	}
	// Neither cancelled send left a message behind.
	must(t, client.Send([]byte("end")))
	if n, err := server.Recv(buf); err != nil || string(buf[:n]) != "end" {
		t.Fatalf("Recv() = %q, %v, want \"end\"", buf[:n], err)
	}
}

// testBatch: SendBatch delivers every message in order, stops at the
// first one that is too large (those before it sent, none after), and a
// cancelled batch on a full connection reports how many it sent.
func testBatch(t *testing.T, m mode) {
	server, client := newPair(t, m)
	buf := make([]byte, server.MaxMessage())
	var msgs [][]byte
	for i := range 200 {
		msgs = append(msgs, bytes.Repeat([]byte{byte(i)}, i*7%300)) // empty ones included
	}
	done := make(chan error, 1)
	go func() {
		for i, want := range msgs {
			n, err := server.Recv(buf)
			if err != nil || !bytes.Equal(buf[:n], want) {
				done <- fmt.Errorf("Recv() #%d = %d bytes, %v, want %d bytes", i, n, err, len(want))
				return
			}
		}
		done <- nil
	}()
	if n, err := client.SendBatch(msgs); n != len(msgs) || err != nil {
		t.Fatalf("SendBatch(%d messages) = %d, %v, want all", len(msgs), n, err)
	}
	must(t, waitErr(t, done, "receiving the batch"))

	tooLarge := [][]byte{[]byte("a"), make([]byte, client.MaxMessage()+1), []byte("c")}
	if n, err := client.SendBatch(tooLarge); n != 1 || !errors.Is(err, ErrTooLarge) {
		t.Fatalf("SendBatch with a message over MaxMessage second = %d, %v, want 1, ErrTooLarge", n, err)
	}
	must(t, client.Send([]byte("d")))
	for _, want := range []string{"a", "d"} {
		if n, err := server.Recv(buf); err != nil || string(buf[:n]) != want {
			t.Fatalf("Recv() = %q, %v, want %q", buf[:n], err, want)
		}
	}

	// RecvBatch: everything queued in one batch on the ring (one message
	// per batch in fallback mode), in order, at most max; an urgent
	// message comes alone, and before the data sent after it.
	must(t, client.SendUrgent([]byte("u")))
	for i := range 30 {
		must(t, client.Send([]byte{byte(i)}))
	}
	var got []string
	var urgents []bool
	take := func(msg []byte, urgent bool) { got = append(got, string(msg)); urgents = append(urgents, urgent) }
	if n, err := server.RecvBatchMsg(nil, 0, take); n != 1 || err != nil || got[0] != "u" || !urgents[0] {
		t.Fatalf("RecvBatchMsg() = %d, %v, got %q urgent %v, want the urgent message alone", n, err, got, urgents)
	}
	wantBatch := 10 // ring: max
	if m.reason != "" {
		wantBatch = 1 // fallback: one per batch
	}
	got = got[:0]
	if n, err := server.RecvBatch(10, func(msg []byte) { take(msg, false) }); n != wantBatch || err != nil || len(got) != n {
		t.Fatalf("RecvBatch(10) = %d, %v (fn saw %d), want %d", n, err, len(got), wantBatch)
	}
	for len(got) < 30 {
		if _, err := server.RecvBatch(0, func(msg []byte) { take(msg, false) }); err != nil {
			t.Fatalf("RecvBatch(0) after %d messages: %v", len(got), err)
		}
	}
	for i, g := range got {
		if g != string([]byte{byte(i)}) {
			t.Fatalf("message %d = %q, want %q: got %q", i, g, []byte{byte(i)}, got)
		}
	}
	if m.reason == "" && len(got) != 30 {
		t.Fatalf("RecvBatch delivered %d messages, want 30", len(got))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := server.RecvBatchMsg(ctx, 0, take)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RecvBatchMsg() on an empty connection past the context's deadline = %v, want context.DeadlineExceeded", err)
	}

	sent := fill(t, client, 1000)
	ctx, cancel = context.WithCancel(context.Background())
	batch := [][]byte{make([]byte, 1000), make([]byte, 1000)}
	var nsent int
	wait := blocked(t, "SendBatchContext on a full connection", func() error {
		var err error
		nsent, err = client.SendBatchContext(ctx, batch)
		return err
	})
	cancel()
	if err := waitErr(t, wait, "SendBatchContext after cancel"); !errors.Is(err, context.Canceled) || nsent != 0 {
		t.Fatalf("SendBatchContext() after cancel = %d, %v, want 0, context.Canceled", nsent, err)
	}
	for i := range sent {
		if n, err := server.Recv(buf); err != nil || n != 1000 {
			t.Fatalf("Recv() #%d of %d = %d, %v", i, sent, n, err)
		}
	}
	must(t, client.Send([]byte("end")))
	if n, err := server.Recv(buf); err != nil || string(buf[:n]) != "end" {
		t.Fatalf("Recv() = %q, %v, want \"end\" (the cancelled batch left nothing behind)", buf[:n], err)
	}
}

func testClose(t *testing.T, m mode) {
	buf := make([]byte, 1<<16)
	t.Run("local-before", func(t *testing.T) {
		server, client := newPair(t, m)
		must(t, client.Close())
		must(t, client.Close()) // idempotent
		if err := client.Send([]byte("x")); !errors.Is(err, ErrClosed) || !errors.Is(err, os.ErrClosed) {
			t.Errorf("Send() after Close = %v, want ErrClosed", err)
		}
		if _, err := client.Recv(buf); !errors.Is(err, ErrClosed) {
			t.Errorf("Recv() after Close = %v, want ErrClosed", err)
		}
		if err := client.SetDeadline(time.Now()); !errors.Is(err, ErrClosed) {
			t.Errorf("SetDeadline() after Close = %v, want ErrClosed", err)
		}
		// The peer sees the end of the stream, and its sends fail.
		if _, err := server.Recv(buf); err != io.EOF {
			t.Errorf("peer's Recv() = %v, want io.EOF", err)
		}
		if err := server.Send([]byte("x")); !errors.Is(err, ErrPeerClosed) || !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("peer's Send() = %v, want ErrPeerClosed", err)
		}
	})
	t.Run("local-during-recv", func(t *testing.T) {
		_, client := newPair(t, m)
		done := blocked(t, "Recv", func() error { _, err := client.Recv(buf); return err })
		must(t, client.Close())
		if err := waitErr(t, done, "Recv after Close"); !errors.Is(err, ErrClosed) {
			t.Errorf("Recv() interrupted by Close = %v, want ErrClosed", err)
		}
	})
	t.Run("local-during-send", func(t *testing.T) {
		_, client := newPair(t, m)
		fill(t, client, 1000)
		done := blocked(t, "Send on a full connection", func() error { return client.Send(make([]byte, 1000)) })
		must(t, client.Close())
		if err := waitErr(t, done, "Send after Close"); !errors.Is(err, ErrClosed) {
			t.Errorf("Send() interrupted by Close = %v, want ErrClosed", err)
		}
	})
	t.Run("remote-before", func(t *testing.T) {
		server, client := newPair(t, m)
		for i := range 3 {
			must(t, client.Send([]byte{byte(i)}))
		}
		must(t, client.Close())
		for i := range 3 {
			if n, err := server.Recv(buf); err != nil || n != 1 || buf[0] != byte(i) {
				t.Fatalf("Recv() #%d after the peer closed = %d, %v, want message %d", i, n, err, i)
			}
		}
		for range 2 {
			if _, err := server.Recv(buf); err != io.EOF {
				t.Fatalf("Recv() after the last message = %v, want io.EOF", err)
			}
		}
	})
	t.Run("remote-during-recv", func(t *testing.T) {
		server, client := newPair(t, m)
		done := blocked(t, "Recv", func() error { _, err := server.Recv(buf); return err })
		must(t, client.Close())
		if err := waitErr(t, done, "Recv after the peer's Close"); err != io.EOF {
			t.Errorf("Recv() when the peer closed = %v, want io.EOF", err)
		}
	})
	t.Run("remote-during-send", func(t *testing.T) {
		server, client := newPair(t, m)
		fill(t, client, 1000)
		done := blocked(t, "Send on a full connection", func() error { return client.Send(make([]byte, 1000)) })
		must(t, server.Close())
		if err := waitErr(t, done, "Send after the peer's Close"); !errors.Is(err, ErrPeerClosed) {
			t.Errorf("Send() when the peer closed = %v, want ErrPeerClosed", err)
		}
	})
}

func testStats(t *testing.T, m mode) {
	server, client := newPair(t, m)
	for i := range 5 {
		must(t, client.Send(make([]byte, 10*i)))
	}
	buf := make([]byte, 100)
	for range 5 {
		if _, err := server.Recv(buf); err != nil {
			t.Fatal(err)
		}
	}
	cs, ss := client.Stats(), server.Stats()
	if cs.Transport != m.transport || cs.Sent != 5 || cs.SentBytes != 100 || ss.Received != 5 || ss.ReceivedBytes != 100 {
		t.Errorf("Stats: client %+v, server %+v; want 5 messages of 100 bytes sent and received over %s", cs, ss, m.transport)
	}
	if m.transport == "ring" && (cs.Send.Capacity != 16<<10 || ss.Recv.Sent != 5 || cs.Send.ProducerPID != uint32(os.Getpid())) {
		t.Errorf("ring Stats: client %+v, server %+v", cs.Send, ss.Recv)
	}
}

// TestRingNoAllocs checks that a Conn in shared-memory mode sends and
// receives without allocating.
func TestRingNoAllocs(t *testing.T) {
	server, client := newPair(t, modes[0])
	msg, buf := make([]byte, 100), make([]byte, 100)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := client.Send(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := server.Recv(buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Send+Recv allocate %v times per message, want 0", allocs)
	}
}

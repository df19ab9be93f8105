//go:build linux

package shmlane

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/shmlane/shmlane/internal/layout"
)

func TestInspect(t *testing.T) {
	dir := t.TempDir()
	l, err := Listen("seen", &ListenOptions{RuntimeDir: dir, Capacity: 64 << 10, FallbackOOBCheckEvery: 1})
	must(t, err)
	defer l.Close()
	ringServer, ringClient := acceptDial(t, l, dir, "seen")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted := make(chan *Conn, 1)
	go func() {
		c, err := l.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	fbClient, err := Dial(ctx, "seen", &DialOptions{RuntimeDir: dir, ForceFallback: true, FallbackOOBCheckEvery: 1})
	must(t, err)
	defer fbClient.Close()
	fbServer := <-accepted
	if fbServer == nil {
		t.FailNow()
	}
	defer fbServer.Close()

	// Traffic: 3 messages (30 bytes) to the listener on each connection,
	// 1 message (7 bytes) back on the ring, one message left unread.
	buf := make([]byte, 64)
	for _, c := range []*Conn{ringClient, fbClient} {
		for range 3 {
			must(t, c.Send(make([]byte, 10)))
		}
	}
	for _, c := range []*Conn{ringServer, fbServer} {
		for range 3 {
			_, err := c.Recv(buf)
			must(t, err)
		}
	}
	must(t, ringServer.Send([]byte("unread!")))
	must(t, fbServer.Send([]byte("x")))

	// Out of band, dialer to listener: a 5-byte message that a flush
	// discards, 2 urgent messages, a 10-byte message after the flush.
	// Listener to dialer: 1 urgent message and a flush, unread.
	for _, c := range []*Conn{ringClient, fbClient} {
		must(t, c.Send(make([]byte, 5)))
		must(t, c.SendUrgent([]byte("urgent")))
		must(t, c.SendUrgent([]byte("urgent")))
		must(t, c.Flush())
		must(t, c.Send(make([]byte, 10)))
	}
	for _, c := range []*Conn{ringServer, fbServer} {
		for _, wantUrgent := range []bool{true, true, false} {
			n, urgent, err := c.RecvMsg(ctx, buf)
			must(t, err)
			if urgent != wantUrgent || (!urgent && n != 10) {
				t.Fatalf("RecvMsg() = %d bytes (urgent %v), want urgent %v", n, urgent, wantUrgent)
			}
		}
		must(t, c.SendUrgent([]byte("z")))
		must(t, c.Flush())
	}

	info, err := Inspect(ctx, "seen", &DialOptions{RuntimeDir: dir})
	must(t, err)
	if info.Name != "seen" || info.PID != os.Getpid() || info.UID != os.Geteuid() || len(info.Conns) != 2 {
		t.Fatalf("Inspect() = %+v, want this process's listener with 2 connections", info)
	}
	for _, c := range info.Conns {
		switch c.ID {
		case ringServer.ID():
			if c.Transport != "ring" || c.FallbackReason != "" || c.DialerPID != os.Getpid() || c.ToDialer == nil || c.ToListener == nil || c.SegmentErr != "" {
				t.Fatalf("ring connection: %+v", c)
			}
			for _, s := range []*SegmentInfo{c.ToDialer, c.ToListener} {
				if s.Magic != layout.Magic || s.Version != layout.Version || s.Capacity != 64<<10 || s.Size != uint64(layout.DataOffset+64<<10+DefaultOOBCapacity) || s.CreatorPID != uint32(os.Getpid()) {
					t.Errorf("segment header: %+v", *s)
				}
			}
			in, out := c.ToListener.Stats, c.ToDialer.Stats
			if in.Sent != 5 || in.SentBytes != 45 || in.Received != 4 || in.Head != in.Tail || in.Used() != 0 {
				t.Errorf("dialer→listener ring: %+v, want 5 messages (45 bytes) sent, 4 received", in)
			}
			if in.OOBCapacity != DefaultOOBCapacity || in.UrgentSent != 2 || in.UrgentReceived != 2 || in.Flushes != 1 || in.Discarded != 1 || in.DiscardedBytes != 5 {
				t.Errorf("dialer→listener lane: %+v, want 2 urgent sent and received, 1 flush, 1 message (5 bytes) discarded", in)
			}
			if out.Sent != 1 || out.SentBytes != 7 || out.Received != 0 || out.Used() != 16 {
				t.Errorf("listener→dialer ring: %+v, want 1 message of 7 bytes unread (16 bytes)", out)
			}
			if out.OOBCapacity != DefaultOOBCapacity || out.UrgentSent != 1 || out.UrgentReceived != 0 || out.Flushes != 1 || out.Discarded != 0 {
				t.Errorf("listener→dialer lane: %+v, want 1 urgent unread, 1 flush", out)
			}
		case fbServer.ID():
			if c.Transport != "unix" || c.FallbackReason != "forced by the dialer (DialOptions.ForceFallback)" || c.ToDialer != nil {
				t.Fatalf("fallback connection: %+v", c)
			}
			if c.Received != 4 || c.ReceivedBytes != 40 || c.Sent != 1 || c.SentBytes != 1 {
				t.Errorf("fallback counters: %+v, want 4 messages (40 bytes) received, 1 (1 byte) sent", c)
			}
			if c.OOBCapacity != DefaultOOBCapacity || c.UrgentReceived != 2 || c.Discarded != 1 || c.DiscardedBytes != 5 || c.UrgentSent != 1 || c.Flushes != 1 {
				t.Errorf("fallback out-of-band counters: %+v, want 2 urgent received, 1 message (5 bytes) discarded, 1 urgent sent, 1 flush", c)
			}
		default:
			t.Errorf("unknown connection %+v", c)
		}
	}

	// A closed connection is no longer listed.
	must(t, ringServer.Close())
	info, err = Inspect(ctx, "seen", &DialOptions{RuntimeDir: dir})
	must(t, err)
	if len(info.Conns) != 1 || info.Conns[0].ID != fbServer.ID() {
		t.Fatalf("Inspect() after a Close = %+v, want only the fallback connection", info.Conns)
	}
	if _, err := Inspect(ctx, "unseen", &DialOptions{RuntimeDir: dir}); !errors.Is(err, ErrNoListener) {
		t.Errorf("Inspect() with no listener = %v, want ErrNoListener", err)
	}
}

// TestInspectorCannotWrite checks that the descriptors handed to an
// inspector are read-only.
func TestInspectorCannotWrite(t *testing.T) {
	server, _ := newPair(t, modes[0])
	files := segmentFiles(server.link.(*ringLink))
	if len(files) != 2 {
		t.Fatalf("segmentFiles() gave %d files, want 2", len(files))
	}
	defer closeAll(files)
	for _, f := range files {
		if _, err := f.WriteAt([]byte{1}, 0); err == nil {
			t.Errorf("WriteAt on an inspector's descriptor succeeded, want it refused")
		}
		s, err := readSegment(f)
		must(t, err)
		if s.Capacity != 16<<10 {
			t.Errorf("readSegment: capacity %d, want %d", s.Capacity, 16<<10)
		}
	}
}

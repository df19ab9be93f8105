package ring

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

func newRing(t testing.TB, capacity int, po, co *Options) (*Segment, *Producer, *Consumer) {
	t.Helper()
	seg, err := Create(&Config{Capacity: capacity})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	p, err := seg.Producer(po)
	if err != nil {
		t.Fatalf("Producer: %v", err)
	}
	c, err := seg.Consumer(co)
	if err != nil {
		t.Fatalf("Consumer: %v", err)
	}
	t.Cleanup(func() {
		p.Close()
		c.Close()
		seg.Close()
	})
	return seg, p, c
}

var past = time.Unix(1, 0)

func TestConfigErrors(t *testing.T) {
	for _, c := range []int{-1, 1, 100, 2048, 4097, 3 << 20, 1 << 31} {
		if _, err := Create(&Config{Capacity: c}); err == nil {
			t.Errorf("Create(Capacity=%d) = nil error, want a capacity error", c)
		}
	}
	seg, err := Create(nil)
	if err != nil {
		t.Fatalf("Create(nil): %v", err)
	}
	defer seg.Close()
	if got := seg.Capacity(); got != DefaultCapacity {
		t.Errorf("Capacity() = %d, want %d", got, DefaultCapacity)
	}
	if _, err := seg.Producer(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := seg.Producer(nil); !errors.Is(err, ErrRoleTaken) {
		t.Errorf("second Producer() = %v, want ErrRoleTaken", err)
	}
}

func TestSendRecvSizes(t *testing.T) {
	seg, p, c := newRing(t, 4096, nil, nil)
	max := seg.MaxMessage()
	if max != 4096/2-16 {
		t.Fatalf("MaxMessage() = %d, want %d", max, 4096/2-16)
	}
	buf := make([]byte, max)
	for round := 0; round < 20; round++ { // wrap the ring several times
		for _, n := range []int{0, 1, 7, 8, 9, 100, 1000, max} {
			msg := bytes.Repeat([]byte{byte(n + round)}, n)
			if err := p.Send(msg); err != nil {
				t.Fatalf("Send(%d bytes): %v", n, err)
			}
			got, err := c.Recv(buf)
			if err != nil {
				t.Fatalf("Recv: %v", err)
			}
			if !bytes.Equal(buf[:got], msg) {
				t.Fatalf("Recv() = %d bytes %x..., want %d bytes", got, buf[:min(got, 8)], n)
			}
		}
	}
	if err := p.Send(make([]byte, max+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Send(max+1) = %v, want ErrTooLarge", err)
	}
	if _, err := p.Reserve(max + 1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Reserve(max+1) = %v, want ErrTooLarge", err)
	}
	st := seg.Stats()
	if st.Sent != 160 || st.Received != 160 || st.SentBytes != st.ReceivedBytes || st.Head != st.Tail {
		t.Errorf("Stats() = %+v, want 160 sent and received, head == tail", st)
	}
}

func TestShortBuffer(t *testing.T) {
	_, p, c := newRing(t, 4096, nil, nil)
	if err := p.Send([]byte("hello world")); err != nil {
		t.Fatal(err)
	}
	n, err := c.Recv(make([]byte, 4))
	if !errors.Is(err, io.ErrShortBuffer) || n != 11 {
		t.Fatalf("Recv(short) = %d, %v; want 11, io.ErrShortBuffer", n, err)
	}
	buf := make([]byte, 64)
	n, err = c.Recv(buf)
	if err != nil || string(buf[:n]) != "hello world" {
		t.Fatalf("Recv() = %q, %v; want %q (the message must stay queued)", buf[:n], err, "hello world")
	}
}

func TestZeroCopy(t *testing.T) {
	seg, p, c := newRing(t, 4096, nil, nil)
	for i := 0; i < 100; i++ {
		b, err := p.Reserve(100 + i)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 100+i {
			t.Fatalf("Reserve(%d) gave %d bytes", 100+i, len(b))
		}
		for j := range b {
			b[j] = byte(i)
		}
		if i%3 == 0 {
			if err := p.Abort(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := p.Send(nil); !errors.Is(err, ErrPending) {
			t.Fatalf("Send during Reserve = %v, want ErrPending", err)
		}
		if err := p.Commit(); err != nil {
			t.Fatal(err)
		}
		m, err := c.Peek()
		if err != nil {
			t.Fatal(err)
		}
		m2, err := c.Peek()
		if err != nil || &m2[0] != &m[0] {
			t.Fatalf("second Peek() = %p, %v; want the same message %p", m2, err, m)
		}
		if len(m) != 100+i || m[0] != byte(i) || m[len(m)-1] != byte(i) {
			t.Fatalf("Peek() = %d bytes of %d, want %d bytes of %d", len(m), m[0], 100+i, i)
		}
		if _, err := c.Recv(nil); !errors.Is(err, ErrPending) {
			t.Fatalf("Recv during Peek = %v, want ErrPending", err)
		}
		if err := c.Release(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Commit(); !errors.Is(err, ErrNoPending) {
		t.Errorf("Commit() without Reserve = %v, want ErrNoPending", err)
	}
	if err := p.Abort(); !errors.Is(err, ErrNoPending) {
		t.Errorf("Abort() without Reserve = %v, want ErrNoPending", err)
	}
	if err := c.Release(); !errors.Is(err, ErrNoPending) {
		t.Errorf("Release() without Peek = %v, want ErrNoPending", err)
	}
	c.SetDeadline(past)
	if _, err := c.Peek(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Peek() on empty ring = %v, want os.ErrDeadlineExceeded (aborted messages must not appear)", err)
	}
	if st := seg.Stats(); st.Sent != 66 || st.Received != 66 {
		t.Errorf("Stats() = %+v, want 66 sent and received", st)
	}
}

func TestBatch(t *testing.T) {
	seg, p, c := newRing(t, 1<<16, nil, nil)
	var msgs [][]byte
	for i := 0; i < 1000; i++ {
		msgs = append(msgs, bytes.Repeat([]byte{byte(i)}, i%300))
	}
	errc := make(chan error, 1)
	go func() {
		n, err := p.SendBatch(msgs)
		if err == nil && n != len(msgs) {
			err = errors.New("short batch")
		}
		errc <- err
	}()
	got := 0
	for got < len(msgs) {
		n, err := c.RecvBatch(0, func(m []byte) {
			if !bytes.Equal(m, msgs[got]) {
				t.Errorf("message %d = %d bytes, want %d", got, len(m), len(msgs[got]))
			}
			got++
		})
		if err != nil || n == 0 {
			t.Fatalf("RecvBatch() = %d, %v", n, err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("SendBatch: %v", err)
	}
	// max limits the batch.
	p.SendBatch(msgs[:10])
	if n, err := c.RecvBatch(3, func([]byte) {}); n != 3 || err != nil {
		t.Errorf("RecvBatch(3) = %d, %v; want 3, nil", n, err)
	}
	if n, err := p.SendBatch([][]byte{{1}, make([]byte, seg.MaxMessage()+1)}); n != 1 || !errors.Is(err, ErrTooLarge) {
		t.Errorf("SendBatch with an oversized message = %d, %v; want 1, ErrTooLarge", n, err)
	}
}

func TestCloseProducerEOF(t *testing.T) {
	_, p, c := newRing(t, 4096, nil, &Options{SpinTime: -1})
	for i := 0; i < 3; i++ {
		p.Send([]byte{byte(i)})
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	if err := p.Send([]byte{1}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Send after Close = %v, want os.ErrClosed", err)
	}
	buf := make([]byte, 8)
	for i := 0; i < 3; i++ {
		if n, err := c.Recv(buf); err != nil || n != 1 || buf[0] != byte(i) {
			t.Fatalf("Recv() = %d, %v; want message %d", n, err, i)
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := c.Recv(buf); err != io.EOF {
			t.Fatalf("Recv() after drain = %v, want io.EOF", err)
		}
	}
	c.Close()
	if _, err := c.Recv(buf); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Recv after Close = %v, want os.ErrClosed", err)
	}
}

// blockedCall runs f, which must block, then unblocks it with unblock and
// returns f's error.
func blockedCall(t *testing.T, f func() error, unblock func()) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- f() }()
	select {
	case err := <-errc:
		t.Fatalf("call returned %v before it was unblocked", err)
	case <-time.After(50 * time.Millisecond):
	}
	unblock()
	select {
	case err := <-errc:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("call still blocked 10s after it was unblocked")
		return nil
	}
}

func TestUnblock(t *testing.T) {
	for _, spin := range []time.Duration{-1, time.Millisecond} {
		o := &Options{SpinTime: spin}
		t.Run("spin="+spin.String(), func(t *testing.T) {
			t.Run("CloseConsumerWhileRecv", func(t *testing.T) {
				_, _, c := newRing(t, 4096, o, o)
				err := blockedCall(t, func() error { _, err := c.Recv(nil); return err }, func() { c.Close() })
				if !errors.Is(err, os.ErrClosed) {
					t.Errorf("Recv() = %v, want os.ErrClosed", err)
				}
			})
			t.Run("CloseProducerWhileRecv", func(t *testing.T) {
				_, p, c := newRing(t, 4096, o, o)
				err := blockedCall(t, func() error { _, err := c.Recv(nil); return err }, func() { p.Close() })
				if err != io.EOF {
					t.Errorf("Recv() = %v, want io.EOF", err)
				}
			})
			t.Run("CloseConsumerWhileSendFull", func(t *testing.T) {
				_, p, c := newRing(t, 4096, o, o)
				fill(t, p)
				err := blockedCall(t, func() error { return p.Send(make([]byte, 100)) }, func() { c.Close() })
				if !errors.Is(err, ErrPeerClosed) {
					t.Errorf("Send() = %v, want ErrPeerClosed", err)
				}
				if err := p.Send(nil); !errors.Is(err, ErrPeerClosed) {
					t.Errorf("Send() after consumer closed = %v, want ErrPeerClosed", err)
				}
			})
			t.Run("CloseProducerWhileSendFull", func(t *testing.T) {
				_, p, _ := newRing(t, 4096, o, o)
				fill(t, p)
				err := blockedCall(t, func() error { return p.Send(make([]byte, 100)) }, func() { p.Close() })
				if !errors.Is(err, os.ErrClosed) {
					t.Errorf("Send() = %v, want os.ErrClosed", err)
				}
			})
			t.Run("Deadline", func(t *testing.T) {
				_, p, c := newRing(t, 4096, o, o)
				err := blockedCall(t, func() error { _, err := c.Recv(nil); return err }, func() { c.SetDeadline(time.Now()) })
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("Recv() = %v, want os.ErrDeadlineExceeded", err)
				}
				c.SetDeadline(time.Now().Add(30 * time.Millisecond))
				start := time.Now()
				if _, err := c.Recv(nil); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("Recv() = %v, want os.ErrDeadlineExceeded", err)
				}
				if el := time.Since(start); el < 25*time.Millisecond {
					t.Errorf("Recv() returned after %v, before its deadline", el)
				}
				c.SetDeadline(time.Time{})
				p.Send([]byte("x"))
				if n, err := c.Recv(make([]byte, 1)); n != 1 || err != nil {
					t.Errorf("Recv() after clearing the deadline = %d, %v", n, err)
				}
				fill(t, p)
				p.SetDeadline(past)
				if err := p.Send(make([]byte, 100)); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("Send() on full ring with past deadline = %v, want os.ErrDeadlineExceeded", err)
				}
			})
			t.Run("Context", func(t *testing.T) {
				_, p, c := newRing(t, 4096, o, o)
				ctx, cancel := context.WithCancel(context.Background())
				err := blockedCall(t, func() error { _, err := c.RecvContext(ctx, nil); return err }, cancel)
				if !errors.Is(err, context.Canceled) {
					t.Errorf("RecvContext() = %v, want context.Canceled", err)
				}
				tctx, tcancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				defer tcancel()
				if _, err := c.PeekContext(tctx); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("PeekContext() = %v, want context.DeadlineExceeded", err)
				}
				fill(t, p)
				ctx, cancel = context.WithCancel(context.Background())
				err = blockedCall(t, func() error { return p.SendContext(ctx, make([]byte, 100)) }, cancel)
				if !errors.Is(err, context.Canceled) {
					t.Errorf("SendContext() = %v, want context.Canceled", err)
				}
			})
		})
	}
}

// fill sends 100-byte messages until the ring is full.
func fill(t *testing.T, p *Producer) {
	t.Helper()
	p.SetDeadline(past)
	defer p.SetDeadline(time.Time{})
	for i := 0; ; i++ {
		err := p.Send(make([]byte, 100))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if i == 0 {
				t.Fatal("ring full before the first message")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestCorrupt(t *testing.T) {
	t.Run("Head", func(t *testing.T) {
		seg, p, c := newRing(t, 4096, nil, nil)
		fill(t, p)
		for _, garbage := range []uint64{1 << 60, 3, ^uint64(0)} {
			seg.consumerSide().pos.Store(garbage)
			p.SetDeadline(past)
			if err := p.Send(make([]byte, 100)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Send() with head=%#x = %v, want ErrCorrupt", garbage, err)
			}
		}
		// The consumer is unaffected: it trusts its own head.
		if _, err := c.Recv(make([]byte, 100)); err != nil {
			t.Errorf("Recv() = %v, want nil", err)
		}
	})
	t.Run("Header", func(t *testing.T) {
		for name, poke := range map[string]func(w uint64) uint64{
			"tag":    func(w uint64) uint64 { return w ^ 1<<40 },
			"type":   func(w uint64) uint64 { return w | 0xff<<24 },
			"length": func(w uint64) uint64 { return w | 0xffffff },
			"pad":    func(w uint64) uint64 { return w&^(0xff<<24) | 2<<24 | 5 },
		} {
			t.Run(name, func(t *testing.T) {
				seg, p, c := newRing(t, 4096, nil, nil)
				p.Send([]byte("hello"))
				h := seg.u64(int(seg.geo.Areas[1].Off))
				h.Store(poke(h.Load()))
				for i := 0; i < 2; i++ { // sticky
					if _, err := c.Recv(make([]byte, 64)); !errors.Is(err, ErrCorrupt) {
						t.Errorf("Recv() = %v, want ErrCorrupt", err)
					}
				}
			})
		}
	})
	t.Run("Tail", func(t *testing.T) {
		// The shared tail is a statistic: nothing trusts it, so garbage
		// there changes nothing that is delivered.
		seg, p, c := newRing(t, 4096, nil, nil)
		seg.producerSide().pos.Store(^uint64(0))
		p.Send([]byte("ok"))
		buf := make([]byte, 8)
		if n, err := c.Recv(buf); err != nil || string(buf[:n]) != "ok" {
			t.Errorf("Recv() = %q, %v; want %q", buf[:n], err, "ok")
		}
	})
	t.Run("Open", func(t *testing.T) {
		seg, _, _ := newRing(t, 4096, nil, nil)
		binaryPut := func(off int, v uint64) { seg.u64(off).Store(v) }
		binaryPut(16, 12345) // capacity
		f, _ := seg.File()
		defer f.Close()
		if _, err := Open(f); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Open() of a segment with a bad capacity = %v, want ErrCorrupt", err)
		}
	})
}

func TestOpenRejects(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "notmemfd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(1 << 16)
	if _, err := Open(f); err == nil {
		t.Error("Open() of an unsealed regular file = nil error, want an error")
	}
	if _, err := Open(nil); err == nil {
		t.Error("Open(nil) = nil error")
	}
}

func TestSegmentCloseKeepsEndpoints(t *testing.T) {
	seg, err := Create(&Config{Capacity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := seg.Producer(nil)
	c, _ := seg.Consumer(nil)
	seg.Close()
	seg.Close()
	if _, err := seg.Producer(nil); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Producer() after Close = %v, want os.ErrClosed", err)
	}
	p.Send([]byte("still mapped"))
	buf := make([]byte, 32)
	if n, err := c.Recv(buf); err != nil || string(buf[:n]) != "still mapped" {
		t.Errorf("Recv() = %q, %v", buf[:n], err)
	}
	if st := c.Stats(); st.Sent != 1 {
		t.Errorf("Stats().Sent = %d, want 1", st.Sent)
	}
	p.Close()
	c.Close()
	if st := c.Stats(); st != (Stats{}) {
		t.Errorf("Stats() after everything closed = %+v, want zero", st)
	}
}

// TestHappensBefore passes data outside the ring (a plain Go slice) and
// uses the ring's messages as the only synchronisation. Under -race it
// checks that the race annotations give the detector the same
// happens-before edge that the ring gives the hardware.
func TestHappensBefore(t *testing.T) {
	_, p, c := newRing(t, 4096, nil, nil)
	side := make([]int, 1000)
	go func() {
		for i := range side {
			side[i] = i + 1 // written before the message that announces it
			p.Send([]byte{1})
		}
	}()
	buf := make([]byte, 1)
	for i := range side {
		if _, err := c.Recv(buf); err != nil {
			t.Fatal(err)
		}
		if side[i] != i+1 {
			t.Fatalf("side[%d] = %d after its message, want %d", i, side[i], i+1)
		}
	}
}

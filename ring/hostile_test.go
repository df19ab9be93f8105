//go:build linux

package ring

import (
	"context"
	"errors"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shmlane/shmlane/internal/layout"
)

// Deterministic regressions for each class of hostile-peer bug: a peer's
// word that used to make a side read outside its mapping, wait past its
// deadline, or sleep through a wake. Every segment is mapped between guard
// pages (TestGuardPages), so a missed offset check faults the test binary
// instead of passing by luck. The randomised version is TestScribble.

// deadPID is a pid that no process has: above the kernel's pid_max limit
// (4 Mi), so kill(pid, 0) gives ESRCH.
const deadPID = 1<<22 + 1

func newMPMC(t *testing.T, capacity int) *Segment {
	t.Helper()
	seg, err := CreateMPMC(&Config{Capacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	return seg
}

func mpmcProducer(t *testing.T, seg *Segment, o *Options) *MPMCProducer {
	t.Helper()
	p, err := seg.MPMCProducer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func mpmcConsumer(t *testing.T, seg *Segment, o *Options) *MPMCConsumer {
	t.Helper()
	c, err := seg.MPMCConsumer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dataWord is the atomic view of the data area's word at position pos.
func dataWord(seg *Segment, pos uint64) *atomic.Uint64 {
	return seg.u64(layout.DataOffset + int(pos&uint64(seg.geo.Capacity-1)))
}

// within runs f and fails the test if it takes longer than limit.
func within(t *testing.T, what string, limit time.Duration, f func() error) error {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case v := <-done:
		if took := time.Since(start); took > limit {
			t.Errorf("%s took %v, want at most %v", what, took, limit)
		}
		return v
	case <-time.After(limit + 10*time.Second):
		t.Fatalf("%s still running %v after its limit of %v", what, limit+10*time.Second, limit)
		panic("unreachable")
	}
}

// TestHostileOffsets: indices a peer wrote are checked before they are
// used as offsets. Each value lies within 8 bytes of the end of the area
// or off the 8-byte grid: an 8-byte access there would run past the
// mapping into the guard page.
func TestHostileOffsets(t *testing.T) {
	const capacity = 4096
	msg := make([]byte, 16)
	t.Run("mpmc-tail", func(t *testing.T) {
		seg := newMPMC(t, capacity)
		p := mpmcProducer(t, seg, nil)
		mpmcConsumer(t, seg, nil)
		seg.mpmcShared().tail.Store(capacity - 4)
		if err := p.Send(msg); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Send with tail %d = %v, want ErrCorrupt", capacity-4, err)
		}
	})
	t.Run("mpmc-head", func(t *testing.T) {
		seg := newMPMC(t, capacity)
		mpmcProducer(t, seg, nil)
		c := mpmcConsumer(t, seg, nil)
		sh := seg.mpmcShared()
		sh.tail.Store(capacity + 64)
		sh.head.Store(2*capacity - 4)
		if _, err := c.Recv(make([]byte, 64)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Recv with head %d = %v, want ErrCorrupt", 2*capacity-4, err)
		}
	})
	t.Run("mpmc-reclaim", func(t *testing.T) {
		seg := newMPMC(t, capacity)
		p := mpmcProducer(t, seg, nil)
		mpmcConsumer(t, seg, nil)
		sh := seg.mpmcShared()
		// A full ring: the producer must look at reclaim to find room.
		sh.tail.Store(capacity)
		sh.head.Store(capacity)
		sh.reclaim.Store(4)
		if err := p.Send(msg); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Send with reclaim 4 = %v, want ErrCorrupt", err)
		}
	})
	t.Run("spsc-producer-tail", func(t *testing.T) {
		seg, err := Create(&Config{Capacity: capacity})
		if err != nil {
			t.Fatal(err)
		}
		defer seg.Close()
		seg.producerSide().pos.Store(capacity - 4)
		if p, err := seg.Producer(nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Producer() with tail %d = %v, want ErrCorrupt", capacity-4, err)
			if err == nil {
				p.Close()
			}
		}
	})
	t.Run("lane-producer-tail", func(t *testing.T) {
		seg, err := Create(&Config{Capacity: capacity, OOBCapacity: 4096})
		if err != nil {
			t.Fatal(err)
		}
		defer seg.Close()
		lp, _ := seg.laneSides()
		lp.pos.Store(4096 - 4)
		if p, err := seg.Producer(nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Producer() with lane tail %d = %v, want ErrCorrupt", 4096-4, err)
			if err == nil {
				p.Close()
			}
		}
	})
}

// TestHostileWaits: a wait whose end depends on words the peer writes
// still ends at its deadline, on Close and on its context.
func TestHostileWaits(t *testing.T) {
	const deadline = 100 * time.Millisecond
	const slack = time.Second
	t.Run("mpmc-send-behind-live-busy", func(t *testing.T) {
		// A Busy header at tail owned by a live process (this one) that
		// never moves tail: the claim waits behind it.
		seg := newMPMC(t, 4096)
		p := mpmcProducer(t, seg, nil)
		mpmcConsumer(t, seg, nil)
		dataWord(seg, 0).Store(layout.OwnerHeader(8, layout.TypeBusy, uint32(os.Getpid())))
		p.SetDeadline(time.Now().Add(deadline))
		err := within(t, "Send behind a live Busy header", deadline+slack, func() error { return p.Send([]byte("x")) })
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Send = %v, want os.ErrDeadlineExceeded", err)
		}
		p.SetDeadline(time.Time{})
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		err = within(t, "SendContext behind a live Busy header", deadline+slack, func() error { return p.SendContext(ctx, []byte("x")) })
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("SendContext = %v, want context.DeadlineExceeded", err)
		}
		err = blockedCall(t, func() error { return p.Send([]byte("x")) }, func() {
			within(t, "Close during the Send", slack, func() error { return p.Close() })
		})
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Send after Close = %v, want os.ErrClosed", err)
		}
	})
	t.Run("mpmc-recv-impossible-busy-after-producers-left", func(t *testing.T) {
		seg := newMPMC(t, 4096)
		p := mpmcProducer(t, seg, nil)
		c := mpmcConsumer(t, seg, nil)
		p.Close() // every producer has left: the consumer discards a Busy record at head
		seg.mpmcShared().tail.Store(64)
		dataWord(seg, 0).Store(layout.OwnerHeader(layout.MaxRecordLen, layout.TypeBusy, deadPID))
		c.SetDeadline(time.Now().Add(deadline))
		err := within(t, "Recv at an impossible Busy header", deadline+slack, func() error {
			_, err := c.Recv(make([]byte, 64))
			return err
		})
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("Recv = %v, want ErrCorrupt", err)
		}
	})
	t.Run("spsc-lane-head-word-without-event", func(t *testing.T) {
		// The lane's head word is non-zero but the event count did not
		// change: the consumer must not spin on it.
		seg, _, c := newLaneRing(t, 4096, nil, nil)
		seg.u64(int(seg.geo.Areas[layout.AreaOOB].Off)).Store(layout.EncodeHeader(8, layout.TypeData, 0))
		c.SetDeadline(time.Now().Add(deadline))
		err := within(t, "Recv with a lane word and no event", deadline+slack, func() error {
			_, err := c.Recv(make([]byte, 64))
			return err
		})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Recv = %v, want os.ErrDeadlineExceeded", err)
		}
		c.SetDeadline(time.Time{})
		err = blockedCall(t, func() error { _, err := c.Recv(make([]byte, 64)); return err }, func() {
			within(t, "Close during the Recv", slack, func() error { return c.Close() })
		})
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Recv after Close = %v, want os.ErrClosed", err)
		}
	})
	t.Run("spsc-events-churn", func(t *testing.T) {
		// The peer keeps changing the event count with nothing behind
		// it: ready keeps saying yes, and the deadline still ends Recv.
		seg, _, c := newLaneRing(t, 4096, nil, nil)
		stop := make(chan struct{})
		var churn sync.WaitGroup
		defer churn.Wait() // before the cleanup unmaps the segment
		defer close(stop)
		churn.Add(1)
		go func() {
			defer churn.Done()
			ev := seg.oobWords().events
			for {
				select {
				case <-stop:
					return
				default:
					ev.Add(1)
				}
			}
		}()
		c.SetDeadline(time.Now().Add(deadline))
		err := within(t, "Recv while the event count churns", deadline+slack, func() error {
			_, err := c.Recv(make([]byte, 64))
			return err
		})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Recv = %v, want os.ErrDeadlineExceeded", err)
		}
	})
	t.Run("flush-after-hot-slot-scribble", func(t *testing.T) {
		// Flush reads nothing from shared memory that can make it wait:
		// odd words in the producer's hot slot (where the old sequence
		// lock lived) do not hang Flush or Close; a bad published tail
		// reaches the consumer as a flush position it rejects.
		seg, p, c := newLaneRing(t, 4096, nil, nil)
		for i := range 3 {
			p.Send(seqMsg(uint64(i), 16))
		}
		hot := layout.SlotOffset(layout.SlotProducer)
		for off := 0; off < layout.SlotSize; off += 8 {
			seg.u64(hot + off).Store(0x8000_0000_0000_0001 + uint64(off))
		}
		if err := within(t, "Flush", slack, p.Flush); err != nil {
			t.Errorf("Flush = %v, want nil", err)
		}
		if _, err := c.Recv(make([]byte, 64)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Recv after a flush of a scribbled tail = %v, want ErrCorrupt", err)
		}
		if err := within(t, "Close", slack, p.Close); err != nil {
			t.Errorf("Close = %v", err)
		}
	})
	t.Run("spsc-sleep-bounded", func(t *testing.T) {
		// A peer can rewrite this side's futex word between Close's kick
		// (seq+1, FUTEX_WAKE) and the sleeper's FUTEX_WAIT, so that the
		// sleeper sleeps through the kick. Every sleep is bounded by
		// spscPoll, after which the sleeper sees that it was closed.
		// Here the kick is left out altogether: only the flag is set.
		seg, _, c := newRing(t, 4096, &Options{SpinTime: -1}, &Options{SpinTime: -1})
		got := make(chan error, 1)
		go func() { _, err := c.Recv(make([]byte, 64)); got <- err }()
		for seg.consumerSide().waiting.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond) // into FUTEX_WAIT
		c.closed.Store(true)              // closed, and no wake
		err := within(t, "Recv after a Close whose wake was lost", spscPoll+slack, func() error { return <-got })
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Recv = %v, want os.ErrClosed", err)
		}
	})
}

// TestMPMCCloseKeepsWakes: a producer's Close wakes the consumers without
// leaving the pending-wake bit set. It used to set it with no one asleep,
// and then the next commit, finding the bit set, woke no one: a sleeping
// consumer waited for its 50 ms poll with a message at head.
func TestMPMCCloseKeepsWakes(t *testing.T) {
	seg := newMPMC(t, 4096)
	p1 := mpmcProducer(t, seg, nil)
	p2 := mpmcProducer(t, seg, nil)
	c := mpmcConsumer(t, seg, &Options{SpinTime: -1})
	cons := seg.mpmcShared().cons
	p1.Close() // nobody sleeps now
	if v := cons.count.Load(); v != 0 {
		t.Fatalf("sleeper word after Close = %#x, want 0", v)
	}
	got := make(chan error, 1)
	go func() { _, err := c.Recv(make([]byte, 64)); got <- err }()
	for cons.count.Load()&^pendingBit == 0 {
		time.Sleep(time.Millisecond)
	}
	seq := cons.seq.Load()
	if err := p2.Send([]byte("after close")); err != nil {
		t.Fatal(err)
	}
	if cons.seq.Load() == seq {
		t.Errorf("Send to a sleeping consumer issued no wake (sleeper word %#x)", cons.count.Load())
	}
	if err := within(t, "Recv", time.Second, func() error { return <-got }); err != nil {
		t.Errorf("Recv = %v", err)
	}
}

// TestMPMCRetractClearsPending: once no sleeper is counted, the
// pending-wake bit is clear, whether the wake came while the sleeper was
// counted or after it left; a wake with no sleeper sets nothing. (The
// interleavings inside wake and retract are the spin model's, ring/model.)
func TestMPMCRetractClearsPending(t *testing.T) {
	seg := newMPMC(t, 4096)
	c := mpmcConsumer(t, seg, nil)
	sh := seg.mpmcShared()
	cons := &sh.cons
	c.announce()
	seq := cons.seq.Load()
	cons.wake(1)
	if v := cons.count.Load(); v != 1|pendingBit || cons.seq.Load() == seq {
		t.Errorf("wake of one sleeper: sleeper word %#x, seq %d -> %d; want %#x and a new seq", v, seq, cons.seq.Load(), 1|pendingBit)
	}
	cons.wake(1)
	if cons.seq.Load() != seq+1 {
		t.Errorf("a second wake before the sleeper looked was not suppressed")
	}
	c.retract()
	if v := cons.count.Load(); v != 0 {
		t.Errorf("after retract: sleeper word %#x, want 0", v)
	}
	cons.wake(1)
	if v := cons.count.Load(); v != 0 || cons.seq.Load() != seq+1 {
		t.Errorf("wake with no sleeper: sleeper word %#x, seq %d; want 0 and %d", v, cons.seq.Load(), seq+1)
	}
}

// TestCloseDuringSend: a Send that returns nil was received, even when the
// producer's Close runs meanwhile. Close used to store the shared closed
// flag before it waited for the Send in progress, which could then publish
// after the flag: a consumer that had seen the flag and an empty ring
// returned io.EOF, and the message was lost (the spin model's
// spsc-bug-close-flag-first).
func TestCloseDuringSend(t *testing.T) {
	rounds := 2000
	if testing.Short() || raceEnabled {
		rounds = 300
	}
	for round := range rounds {
		_, p, c := newRing(t, 4096, nil, nil)
		var sent int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			for p.Send([]byte("m")) == nil {
				sent++
			}
		}()
		got := 0
		buf := make([]byte, 8)
		closeAt := round % 7
		for {
			if got == closeAt {
				go p.Close()
				runtime.Gosched() // let it run now, while the producer sends
			}
			_, err := c.Recv(buf)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("round %d: Recv = %v, want io.EOF at the end", round, err)
				}
				break
			}
			got++
		}
		<-done
		if int64(got) != sent {
			t.Fatalf("round %d: %d messages received before io.EOF, %d Sends returned nil", round, got, sent)
		}
	}
}

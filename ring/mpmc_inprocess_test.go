package ring

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// TestMPMCInProcessWrap streams through a 4 KiB MPMC ring in one process,
// wrapping it hundreds of thousands of times, with the producer and the
// consumer both reclaiming: this is where a reclaimer delayed between its
// steps would tear a message.
func TestMPMCInProcessWrap(t *testing.T) {
	seg, err := CreateMPMC(&Config{Capacity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	p, err := seg.MPMCProducer(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := seg.MPMCConsumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := uint32(2_000_000)
	if testing.Short() || raceEnabled {
		n = 200_000
	}
	go func() {
		buf := make([]byte, 12+mpmcMaxExtra)
		for seq := uint32(0); seq < n; seq++ {
			if err := p.Send(mpmcMessage(buf, 0, seq)); err != nil {
				t.Error(err)
				break
			}
		}
		p.Close()
	}()
	buf := make([]byte, c.MaxMessage())
	want := make([]byte, 12+mpmcMaxExtra)
	for i := uint32(0); ; i++ {
		m, err := c.Recv(buf)
		if err == io.EOF {
			if i != n {
				t.Fatalf("io.EOF after %d messages, want %d", i, n)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, seq, err := checkMPMC(buf[:m], want); err != nil || seq != i {
			t.Fatalf("message %d: sequence %d, %v", i, seq, err)
		}
	}
}

// TestMPMCPeekedRecordAfterLap: a consumer holds (Peek) the record at
// offset 0 while the others take everything after it, so that head comes
// round to offset 0 again, one lap on, with nothing claimed there. Another
// consumer's wait must end at its deadline, not spin on the peeked record
// of the previous lap, and the messages sent once it is released arrive.
func TestMPMCPeekedRecordAfterLap(t *testing.T) {
	seg, err := CreateMPMC(&Config{Capacity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	p, err := seg.MPMCProducer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a, err := seg.MPMCConsumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// b is closed at the end only: if its Recv spins, holding b, the test
	// fails instead of waiting for it in a deferred Close.
	b, err := seg.MPMCConsumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 1000) // records of 1008 bytes: four fill 4032 of 4096
	for i := range 4 {
		msg[0] = byte(i)
		if err := p.Send(msg); err != nil {
			t.Fatal(err)
		}
	}
	if m, err := a.Peek(); err != nil || m[0] != 0 {
		t.Fatalf("Peek() = %v, want message 0", err)
	}
	buf := make([]byte, b.MaxMessage())
	for i := 1; i < 4; i++ {
		if n, err := b.Recv(buf); err != nil || n != 1000 || buf[0] != byte(i) {
			t.Fatalf("Recv() = %d, %v, want message %d", n, err, i)
		}
	}
	// The next record does not fit before the end: the producer pads to
	// the end and finds offset 0 still held.
	p.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if err := p.Send(msg); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Send() into the held lap = %v, want os.ErrDeadlineExceeded", err)
	}
	if st := seg.MPMCStats(); st.Tail != 4096 {
		t.Fatalf("tail %d, want 4096 (one lap on, on the peeked record)", st.Tail)
	}
	b.SetDeadline(time.Unix(1, 0)) // past: one look at the ring, then the deadline
	done := make(chan error, 1)
	go func() {
		_, err := b.Recv(buf)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Recv() with nothing claimed = %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recv() with a past deadline still running after 5 s")
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	p.SetDeadline(time.Now().Add(5 * time.Second))
	b.SetDeadline(time.Now().Add(5 * time.Second))
	msg[0] = 9
	if err := p.Send(msg); err != nil {
		t.Fatalf("Send() after the release = %v", err)
	}
	if n, err := b.Recv(buf); err != nil || n != 1000 || buf[0] != 9 {
		t.Fatalf("Recv() after the release = %d, %v, want message 9", n, err)
	}
	b.Close()
}

// TestMPMCSendBatchPartial: when a batch's group does not fit before the
// deadline, SendBatch still sends the messages there is room for, one at
// a time, and reports how many.
func TestMPMCSendBatchPartial(t *testing.T) {
	seg, err := CreateMPMC(&Config{Capacity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	p, err := seg.MPMCProducer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := seg.MPMCConsumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		if err := p.Send(make([]byte, 1200)); err != nil { // 3 × 1208 = 3624 of 4096
			t.Fatal(err)
		}
	}
	// 472 bytes left: room for two 100-byte records, not for the 400.
	p.SetDeadline(time.Now().Add(20 * time.Millisecond))
	batch := [][]byte{make([]byte, 100), make([]byte, 100), make([]byte, 400)}
	if n, err := p.SendBatch(batch); n != 2 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendBatch(100, 100, 400 bytes) with 472 bytes free = %d, %v, want 2, os.ErrDeadlineExceeded", n, err)
	}
}

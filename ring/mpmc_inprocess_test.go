package ring

import (
	"io"
	"testing"
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

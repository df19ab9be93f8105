//go:build linux

package fallback

import (
	"bytes"
	"testing"
	"time"

	"github.com/shmlane/shmlane/internal/conformance"
	"github.com/shmlane/shmlane/ring"
)

// TestConformance runs the contract suite (internal/conformance) over
// every fallback transport and over the bare SPSC ring beside them; the
// root package runs it over Listen and Dial in both modes.
func TestConformance(t *testing.T) {
	for _, tr := range transports {
		max := MaxPacketMessage
		if tr.framed {
			max = MaxStreamMessage
		}
		ct := conformance.Transport{
			Name: tr.name, Kind: tr.kind, MaxMessage: max, OnePacket: !tr.framed,
			TooLarge: ErrTooLarge, PeerClosed: ErrPeerClosed,
			Pair: func(t testing.TB) (conformance.Sender, conformance.Receiver) { return tr.pair(t) },
		}
		if tr.framed {
			ct.Broken = ErrBroken
		}
		t.Run("name="+tr.name, func(t *testing.T) { conformance.Run(t, ct) })
	}
	t.Run("name=ring", func(t *testing.T) { conformance.Run(t, ringTransport) })
}

// ringTransport is the bare SPSC ring, both ends in this process.
var ringTransport = conformance.Transport{
	Name: "ring", Kind: "ring", MaxMessage: ring.MaxMessage(ringCapacity),
	TooLarge: ring.ErrTooLarge, PeerClosed: ring.ErrPeerClosed,
	Pair: func(t testing.TB) (conformance.Sender, conformance.Receiver) {
		seg, err := ring.Create(&ring.Config{Capacity: ringCapacity})
		if err != nil {
			t.Fatal(err)
		}
		p, err := seg.Producer(nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := seg.Consumer(nil)
		if err != nil {
			t.Fatal(err)
		}
		closeAtCleanup(t, p, c, seg)
		return p, c
	},
}

// ringCapacity holds the suite's 4097-byte messages and several of its
// 1000-byte ones.
const ringCapacity = 64 << 10

// recvDeadline bounds the waits of a test so that a bug fails it instead
// of hanging it.
const recvDeadline = 20 * time.Second

func mustSend(t testing.TB, s Sender, msg []byte) {
	t.Helper()
	if err := s.Send(msg); err != nil {
		t.Fatalf("Send(%d bytes) = %v", len(msg), err)
	}
}

func mustRecv(t testing.TB, r Receiver, want []byte) {
	t.Helper()
	buf := make([]byte, len(want)+16)
	n, err := r.Recv(buf)
	if err != nil {
		t.Fatalf("Recv() = %d, %v; want %d bytes", n, err, len(want))
	}
	if !bytes.Equal(buf[:n], want) {
		t.Fatalf("Recv() = %d bytes %.16x…, want %d bytes %.16x…", n, buf[:n], len(want), want)
	}
}

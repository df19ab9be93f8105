package ring

import (
	"fmt"
	"testing"
)

// BenchmarkSendRecv sends and receives one 64-byte message per iteration in
// one goroutine (no cross-core traffic): the CPU cost of the hot path, with
// and without an out-of-band lane, whose check is one load per message.
func BenchmarkSendRecv(b *testing.B) {
	for _, lane := range []int{0, 4096} {
		b.Run(fmt.Sprintf("lane=%v", lane != 0), func(b *testing.B) {
			seg, err := Create(&Config{Capacity: 1 << 16, OOBCapacity: lane})
			if err != nil {
				b.Fatal(err)
			}
			defer seg.Close()
			p, _ := seg.Producer(nil)
			c, _ := seg.Consumer(nil)
			defer p.Close()
			defer c.Close()
			msg, buf := make([]byte, 64), make([]byte, 64)
			b.SetBytes(64)
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Send(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Recv(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

//go:build linux

package fallback

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime"
	"testing"
	"time"
)

func frame(n uint32, payload string) []byte {
	b := binary.LittleEndian.AppendUint32(nil, n)
	return append(b, payload...)
}

// TestWireFormat pins the frame and packet layouts written by hand.
func TestWireFormat(t *testing.T) {
	for _, tr := range transports {
		t.Run("name="+tr.name, func(t *testing.T) {
			w, r := tr.raw(t)
			r.SetDeadline(time.Now().Add(recvDeadline))
			var wire [][]byte
			if tr.framed {
				// Two frames in one write, then one split over three.
				wire = [][]byte{append(frame(5, "hello"), frame(0, "")...), {3, 0}, {0, 0, 'a'}, []byte("bc")}
			} else {
				wire = [][]byte{append([]byte{packetData}, "hello"...), {packetData}, append([]byte{packetData}, "abc"...)}
			}
			for _, b := range wire {
				if _, err := w.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			mustRecv(t, r, []byte("hello"))
			mustRecv(t, r, nil)
			mustRecv(t, r, []byte("abc"))
			w.Close()
			if _, err := r.Recv(nil); err != io.EOF {
				t.Fatalf("Recv() after the writer closed = %v, want io.EOF", err)
			}
		})
	}
}

func TestCorrupt(t *testing.T) {
	type tcase struct {
		name  string
		wire  [][]byte
		close bool // close the writer after the wire bytes
	}
	framed := []tcase{
		{name: "4GiB", wire: [][]byte{{0xff, 0xff, 0xff, 0xff}}},
		{name: "MaxMessage+1", wire: [][]byte{binary.LittleEndian.AppendUint32(nil, MaxStreamMessage+1)}},
		{name: "TruncatedPayload", wire: [][]byte{frame(100, "0123456789")}, close: true},
		{name: "TruncatedHeader", wire: [][]byte{frame(2, "ok"), {7, 0}}, close: true},
	}
	packet := []tcase{
		{name: "BadTag", wire: [][]byte{{0x7f, 'x'}}},
		{name: "Oversized", wire: [][]byte{make([]byte, packetHeader+MaxPacketMessage+1)}},
	}
	packet[1].wire[0][0] = packetData
	for _, tr := range transports {
		cases := packet
		if tr.framed {
			cases = framed
		}
		for _, c := range cases {
			t.Run("name="+tr.name+"/"+c.name, func(t *testing.T) {
				w, r := tr.raw(t)
				r.SetDeadline(time.Now().Add(recvDeadline))
				for _, b := range c.wire {
					if _, err := w.Write(b); err != nil {
						t.Fatal(err)
					}
				}
				if c.close {
					w.Close()
				}
				buf := make([]byte, 256)
				if c.name == "TruncatedHeader" {
					mustRecv(t, r, []byte("ok"))
				}
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				n, err := r.Recv(buf)
				runtime.ReadMemStats(&after)
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Recv() = %d, %v; want ErrCorrupt", n, err)
				}
				t.Logf("Recv() = %v", err)
				// The receiver's own 64 KiB buffer is allocated on first
				// use; nothing sized by the header may follow.
				if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
					t.Fatalf("Recv() of a corrupt stream allocated %d bytes", d)
				}
				if _, err := r.Recv(buf); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Recv() after ErrCorrupt = %v; want ErrCorrupt again", err)
				}
			})
		}
	}
}

// TestBroken cuts a frame with a deadline: the sender reports ErrBroken
// from then on, and the receiver, once the sender closes, ErrCorrupt.
func TestBroken(t *testing.T) {
	s, r := pipePair(t)
	s.SetDeadline(time.Now().Add(50 * time.Millisecond))
	big := make([]byte, 1<<20) // more than a pipe holds
	err := s.Send(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.Is(err, ErrBroken) {
		t.Fatalf("Send(1 MiB) into a full pipe past its deadline = %v; want os.ErrDeadlineExceeded and ErrBroken", err)
	}
	t.Log(err)
	s.SetDeadline(time.Time{})
	if err := s.Send([]byte("x")); !errors.Is(err, ErrBroken) {
		t.Fatalf("Send() on a broken stream = %v; want ErrBroken", err)
	}
	s.Close()
	r.SetDeadline(time.Now().Add(recvDeadline))
	if n, err := r.Recv(big); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Recv() of the cut frame = %d, %v; want ErrCorrupt", n, err)
	}
}

package fuzz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/shmlane/shmlane/internal/layout"
	"github.com/shmlane/shmlane/ring"
)

// FuzzMPMCModel drives random interleavings of Send, SendBatch, Reserve,
// Commit, Abort (three simulated producers) and Recv, Peek, Release (three
// simulated consumers) on one MPMC ring in one goroutine, against a model:
// the list of claims in claim order, each reserved, committed or aborted,
// and the index of the next claim a consumer takes. Every wait has a
// deadline in the past, so "empty" and "full" return at once and are
// checked against the model.
func FuzzMPMCModel(f *testing.F) {
	f.Add([]byte{0, 10, 0, 6, 0, 0, 1, 20, 0, 4, 0, 0, 2, 0, 0, 5, 0, 0, 6, 0, 0})
	f.Add(bytes.Repeat([]byte{0, 200, 1, 8, 0, 0, 14, 100, 0, 6, 0, 0}, 60))
	f.Add(bytes.Repeat([]byte{1, 90, 3, 9, 0, 0, 0, 30, 0, 4, 0, 0, 2, 0, 0, 6, 0, 0, 12, 0, 0, 5, 0, 0}, 40))
	f.Add(bytes.Repeat([]byte{7, 50, 2, 7, 0, 0, 15, 255, 1, 3, 0, 0, 6, 0, 0, 14, 0, 0}, 50))
	f.Fuzz(func(t *testing.T, in []byte) {
		runMPMCModel(t, in)
	})
}

type mpmcClaim struct {
	id    uint32
	n     int
	state int // claimReserved, claimCommitted, claimAborted
}

const (
	claimReserved = iota
	claimCommitted
	claimAborted
)

const mpmcActors = 3

// mpmcPayload is message id's content: its id, then a byte pattern.
func mpmcPayload(buf []byte, id uint32, n int) []byte {
	m := buf[:n]
	for i := range m {
		m[i] = byte(id*7 + uint32(i))
	}
	if n >= 4 {
		binary.LittleEndian.PutUint32(m, id)
	}
	return m
}

func runMPMCModel(t *testing.T, in []byte) {
	seg, err := ring.CreateMPMC(&ring.Config{Capacity: modelCapacity})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	var prods [mpmcActors]*ring.MPMCProducer
	var cons [mpmcActors]*ring.MPMCConsumer
	past := time.Unix(1, 0)
	for i := range prods {
		if prods[i], err = seg.MPMCProducer(nil); err != nil {
			t.Fatal(err)
		}
		prods[i].SetDeadline(past)
		if cons[i], err = seg.MPMCConsumer(nil); err != nil {
			t.Fatal(err)
		}
		cons[i].SetDeadline(past)
	}
	max := prods[0].MaxMessage()
	var (
		claims   []mpmcClaim
		head     int                // next claim a consumer takes
		resv     [mpmcActors]int    // claim index + 1 of each producer's reservation
		resvBuf  [mpmcActors][]byte // its payload
		peeked   [mpmcActors]int    // claim index + 1 of each consumer's peek
		nextID   uint32
		sent     int
		received int
	)
	buf := make([]byte, max+8)
	msg := make([]byte, max+8)
	// deliverable skips aborted claims at head and reports the claim a
	// consumer takes now, or -1 if the one at head is still reserved.
	deliverable := func() int {
		for head < len(claims) && claims[head].state == claimAborted {
			head++
		}
		if head == len(claims) || claims[head].state == claimReserved {
			return -1
		}
		return head
	}
	// full checks that a wait for space was plausible: the space not yet
	// reclaimed leaves no room for the record and a padding before it.
	full := func(n int, err error) {
		t.Helper()
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("send of %d bytes = %v, want nil or os.ErrDeadlineExceeded", n, err)
		}
		st := seg.MPMCStats()
		if used := st.Tail - st.Reclaim; used+2*layout.RecordSize(n) <= st.Capacity {
			t.Fatalf("send of %d bytes found the ring full with %d of %d bytes in use", n, used, st.Capacity)
		}
	}
	check := func(who string, got []byte, err error) {
		t.Helper()
		k := deliverable()
		if k < 0 {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("%s on an empty ring = %d bytes, %v; want os.ErrDeadlineExceeded", who, len(got), err)
			}
			return
		}
		if err != nil {
			t.Fatalf("%s = %v, want message %d", who, err, claims[k].id)
		}
		want := mpmcPayload(msg, claims[k].id, claims[k].n)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s = %d bytes %x, want message %d: %d bytes %x", who, len(got), got[:min(len(got), 8)], claims[k].id, len(want), want[:min(len(want), 8)])
		}
		head++
		received++
	}
	d := &decoder{b: in}
	for step := 0; step < maxSteps && len(d.b) > 0; step++ {
		op, arg := d.byte(), d.u16()
		who := int(op/16) % mpmcActors
		switch op % 8 {
		case 0: // Send
			n := length(arg)
			err := prods[who].Send(mpmcPayload(msg, nextID, min(n, len(msg))))
			switch {
			case resv[who] != 0: // checked first, as by the SPSC ring
				if !errors.Is(err, ring.ErrPending) {
					t.Fatalf("Send during Reserve = %v, want ErrPending", err)
				}
			case n > max:
				if !errors.Is(err, ring.ErrTooLarge) {
					t.Fatalf("Send(%d bytes) = %v, want ErrTooLarge", n, err)
				}
			case err == nil:
				claims = append(claims, mpmcClaim{nextID, n, claimCommitted})
				nextID++
				sent++
			default:
				full(n, err)
			}
		case 1: // Reserve
			n := length(arg) % (max + 1)
			b, err := prods[who].Reserve(n)
			switch {
			case resv[who] != 0:
				if !errors.Is(err, ring.ErrPending) {
					t.Fatalf("second Reserve = %v, want ErrPending", err)
				}
			case err == nil:
				copy(b, mpmcPayload(msg, nextID, n))
				claims = append(claims, mpmcClaim{nextID, n, claimReserved})
				resv[who], resvBuf[who] = len(claims), b
				nextID++
			default:
				full(n, err)
			}
		case 2, 3: // Commit, Abort
			var err error
			if op%8 == 2 {
				err = prods[who].Commit()
			} else {
				err = prods[who].Abort()
			}
			if resv[who] == 0 {
				if !errors.Is(err, ring.ErrNoPending) {
					t.Fatalf("Commit/Abort without Reserve = %v, want ErrNoPending", err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("Commit/Abort = %v", err)
			}
			c := &claims[resv[who]-1]
			if op%8 == 2 {
				c.state = claimCommitted
				sent++
			} else {
				c.state = claimAborted
			}
			resv[who], resvBuf[who] = 0, nil
		case 4: // Recv
			n, err := cons[who].Recv(buf)
			if peeked[who] != 0 {
				if !errors.Is(err, ring.ErrPending) {
					t.Fatalf("Recv during Peek = %v, want ErrPending", err)
				}
				continue
			}
			check("Recv", buf[:max0(n, err)], err)
		case 5: // Peek
			if peeked[who] != 0 {
				continue // a second Peek returns the same message: nothing to model
			}
			m, err := cons[who].Peek()
			k := deliverable()
			check("Peek", m, err)
			if err == nil {
				peeked[who] = k + 1
			}
		case 6: // Release
			err := cons[who].Release()
			if peeked[who] == 0 {
				if !errors.Is(err, ring.ErrNoPending) {
					t.Fatalf("Release without Peek = %v, want ErrNoPending", err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("Release = %v", err)
			}
			peeked[who] = 0
		case 7: // SendBatch of 1..4 messages
			k := 1 + int(arg%4)
			batch := make([][]byte, k)
			for i := range batch {
				n := length(arg>>2+uint16(i)*97) % (max/4 + 1)
				batch[i] = mpmcPayload(make([]byte, n), nextID+uint32(i), n)
			}
			got, err := prods[who].SendBatch(batch)
			if resv[who] != 0 {
				if !errors.Is(err, ring.ErrPending) {
					t.Fatalf("SendBatch during Reserve = %v, want ErrPending", err)
				}
				continue
			}
			for i := 0; i < got; i++ {
				claims = append(claims, mpmcClaim{nextID, len(batch[i]), claimCommitted})
				nextID++
				sent++
			}
			if err != nil {
				full(len(batch[got]), err)
			}
		}
	}
	// Close the producers (open reservations are discarded), then drain
	// everything committed with one consumer: then io.EOF.
	for i := range prods {
		if resv[i] != 0 {
			claims[resv[i]-1].state = claimAborted
		}
		prods[i].Close()
	}
	for i := range cons {
		if peeked[i] != 0 {
			cons[i].Release()
		}
	}
	for {
		n, err := cons[0].Recv(buf)
		if err == io.EOF {
			if k := deliverable(); k >= 0 {
				t.Fatalf("io.EOF with message %d still due", claims[k].id)
			}
			break
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Recv (drain) = %v after every producer closed, want a message or io.EOF", err)
		}
		check("Recv (drain)", buf[:max0(n, err)], err)
	}
	for i := range cons {
		cons[i].Close()
	}
	st := seg.MPMCStats()
	if st.Sent != uint64(sent) || st.Received != uint64(received) || st.Sent != st.Received {
		t.Fatalf("MPMCStats() = %+v, want %d sent and received", st, sent)
	}
}

func max0(n int, err error) int {
	if err != nil {
		return 0
	}
	return n
}

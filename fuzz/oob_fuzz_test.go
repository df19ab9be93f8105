package fuzz

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/shmlane/shmlane/internal/layout"
	"github.com/shmlane/shmlane/ring"
)

// FuzzOOBModel drives random interleavings of Send, SendUrgent, Flush,
// Recv, Peek and Release on an SPSC ring with an out-of-band lane against
// a model: a queue of data messages, a queue of urgent ones, and a flush
// that empties the data queue (but not a message already peeked).
func FuzzOOBModel(f *testing.F) {
	f.Add([]byte{0, 10, 0, 0, 20, 0, 1, 5, 0, 3, 0, 0, 3, 0, 0, 3, 0, 0})
	f.Add(bytes.Repeat([]byte{0, 100, 0, 0, 200, 1, 2, 0, 0, 0, 30, 0, 3, 0, 0}, 40))
	f.Add(bytes.Repeat([]byte{0, 50, 0, 4, 0, 0, 2, 0, 0, 1, 9, 0, 4, 0, 0, 5, 0, 0, 3, 0, 0}, 40))
	f.Add(bytes.Repeat([]byte{1, 255, 3, 1, 200, 0, 0, 255, 0, 2, 0, 0}, 30))
	f.Fuzz(func(t *testing.T, in []byte) { runOOBModel(t, in) })
}

type oobItem struct {
	id uint32
	n  int
}

func runOOBModel(t *testing.T, in []byte) {
	seg, err := ring.Create(&ring.Config{Capacity: modelCapacity, OOBCapacity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	p, err := seg.Producer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := seg.Consumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	past := time.Unix(1, 0)
	p.SetDeadline(past)
	c.SetDeadline(past)
	var (
		data, urgent  []oobItem
		peek          *oobItem
		peekUrgent    bool
		nextID        uint32
		sent, recvd   int
		usent, urecvd int
		discarded     int
	)
	buf := make([]byte, 8192)
	msg := make([]byte, 8192)
	queued := func(q []oobItem) (n uint64) {
		for _, it := range q {
			n += layout.RecordSize(it.n)
		}
		return n
	}
	expect := func(who string, got []byte, isUrgent bool, err error) (oobItem, bool) {
		t.Helper()
		var want oobItem
		switch {
		case len(urgent) > 0:
			want = urgent[0]
			if err != nil || !isUrgent {
				t.Fatalf("%s = %v (urgent %v), want urgent message %d", who, err, isUrgent, want.id)
			}
		case len(data) > 0:
			want = data[0]
			if err != nil || isUrgent {
				t.Fatalf("%s = %v (urgent %v), want data message %d", who, err, isUrgent, want.id)
			}
		default:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("%s on an empty ring = %d bytes (urgent %v), %v; want os.ErrDeadlineExceeded", who, len(got), isUrgent, err)
			}
			return oobItem{}, false
		}
		if w := mpmcPayload(msg, want.id, want.n); !bytes.Equal(got, w) {
			t.Fatalf("%s = %d bytes %x, want message %d (%d bytes)", who, len(got), got[:min(8, len(got))], want.id, want.n)
		}
		if isUrgent {
			urgent = urgent[1:]
		} else {
			data = data[1:]
		}
		return want, true
	}
	d := &decoder{b: in}
	for step := 0; step < maxSteps && len(d.b) > 0; step++ {
		op, arg := d.byte(), d.u16()
		switch op % 6 {
		case 0: // Send
			n := length(arg) % (p.MaxMessage() + 1)
			err := p.Send(mpmcPayload(msg, nextID, n))
			if err == nil {
				data = append(data, oobItem{nextID, n})
				nextID++
				sent++
				continue
			}
			st := seg.Stats()
			if !errors.Is(err, os.ErrDeadlineExceeded) || st.Tail-st.Head+2*layout.RecordSize(n)+8 <= st.Capacity {
				t.Fatalf("Send(%d bytes) = %v with %d of %d bytes in use", n, err, st.Tail-st.Head, st.Capacity)
			}
		case 1: // SendUrgent
			n := length(arg) % (p.MaxUrgent() + 1)
			err := p.SendUrgent(mpmcPayload(msg, nextID, n))
			if err == nil {
				urgent = append(urgent, oobItem{nextID, n})
				nextID++
				usent++
				continue
			}
			// Full is plausible if the queued records (a peeked urgent
			// message stays in the lane until Release), a padding record
			// at the wrap (less than one record of the largest size) and
			// this one (and its padding) leave no room.
			q := queued(urgent)
			if peek != nil && peekUrgent {
				q += layout.RecordSize(peek.n)
			}
			if pad := layout.RecordSize(p.MaxUrgent()); !errors.Is(err, ring.ErrLaneFull) || q+pad+2*layout.RecordSize(n)+8 <= 4096 {
				t.Fatalf("SendUrgent(%d bytes) = %v with %d bytes queued", n, err, q)
			}
		case 2: // Flush
			if err := p.Flush(); err != nil {
				t.Fatalf("Flush() = %v", err)
			}
			discarded += len(data)
			data = nil
		case 3: // Recv
			n, isUrgent, err := c.RecvMsg(context.Background(), buf)
			if peek != nil {
				if !errors.Is(err, ring.ErrPending) {
					t.Fatalf("RecvMsg during Peek = %v, want ErrPending", err)
				}
				continue
			}
			if _, ok := expect("RecvMsg", buf[:max0(n, err)], isUrgent, err); ok {
				if isUrgent {
					urecvd++
				} else {
					recvd++
				}
			}
		case 4: // Peek
			m, isUrgent, err := c.PeekMsg(context.Background())
			if peek != nil {
				if err != nil || isUrgent != peekUrgent || !bytes.Equal(m, mpmcPayload(msg, peek.id, peek.n)) {
					t.Fatalf("second PeekMsg = %v (urgent %v), want message %d again", err, isUrgent, peek.id)
				}
				continue
			}
			if it, ok := expect("PeekMsg", m, isUrgent, err); ok {
				peek, peekUrgent = &it, isUrgent
			}
		case 5: // Release
			err := c.Release()
			if peek == nil {
				if !errors.Is(err, ring.ErrNoPending) {
					t.Fatalf("Release without Peek = %v, want ErrNoPending", err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("Release() = %v", err)
			}
			if peekUrgent {
				urecvd++
			} else {
				recvd++
			}
			peek = nil
		}
	}
	st := seg.Stats()
	if st.Sent != uint64(sent) || st.UrgentSent != uint64(usent) || st.UrgentReceived != uint64(urecvd) || st.Received != uint64(recvd) {
		t.Fatalf("Stats() = %+v, want %d sent, %d received, %d urgent sent, %d urgent received", st, sent, recvd, usent, urecvd)
	}
	// Discards are applied when the consumer next looks; drain to apply.
	c.SetDeadline(time.Time{})
	p.Close()
	for {
		n, isUrgent, err := c.RecvMsg(context.Background(), buf)
		if peek != nil {
			c.Release()
			peek = nil
			continue
		}
		if err != nil {
			if len(data)+len(urgent) != 0 {
				t.Fatalf("drain: %v with %d data and %d urgent messages due", err, len(data), len(urgent))
			}
			break
		}
		expect("RecvMsg (drain)", buf[:n], isUrgent, nil)
	}
	if st := seg.Stats(); st.Discarded != uint64(discarded) || st.Flushes == 0 && discarded != 0 {
		t.Fatalf("Stats().Discarded = %d, want %d", st.Discarded, discarded)
	}
}

package main

import (
	"fmt"
	"os"
	"time"

	"github.com/shmlane/shmlane/layout"
)

var chanTransport = &transport{
	name: "chan",
	how: "a buffered Go channel of []byte between two goroutines of this process (the baseline, no process boundary): " +
		"the producer copies each message into a slot of a preallocated pool and sends the slot, one channel send per message " +
		"whatever -batch says (a send takes the channel's lock and cannot be shared by a batch); the consumer copies it out. " +
		"The channel buffers as many messages as the ring's capacity holds records.",
	check: func(*benchConfig) error { return nil },
	newCase: func(c benchCase) caseRunner {
		if c.mode == modeStream {
			return &chanStream{chanCase{c}}
		}
		return &chanPingpong{chanCase{c}}
	},
}

// slotPool is a pool of message buffers used round-robin. With a channel
// of capacity k between one producer and one consumer, k+2 slots make reuse
// safe: when the producer fills slot i, its send of message i-1 found room,
// so the consumer had received message i-k-1 and was done with every
// message before it, including i-k-2, the last user of slot i.
type slotPool struct {
	slots [][]byte
	next  int
}

func newSlotPool(size, k int) *slotPool {
	backing := make([]byte, size*(k+2))
	p := &slotPool{slots: make([][]byte, k+2)}
	for i := range p.slots {
		p.slots[i] = backing[i*size : (i+1)*size : (i+1)*size]
	}
	return p
}

// get returns the next slot.
func (p *slotPool) get() []byte {
	s := p.slots[p.next]
	if p.next++; p.next == len(p.slots) {
		p.next = 0
	}
	return s
}

// chanCase is what the channel's cases share: both sides run in this
// process, and there is nothing to set up or release outside run.
type chanCase struct{ c benchCase }

func (cc *chanCase) setup() error   { return nil }
func (cc *chanCase) close() error   { return nil }
func (cc *chanCase) pids() sidePIDs { return sidePIDs{Producer: os.Getpid(), Consumer: os.Getpid()} }

// chanStream: this goroutine produces, another consumes.
type chanStream struct{ chanCase }

func (cs *chanStream) run(w *window) (measurement, error) {
	size := cs.c.size
	k := max(cs.c.capacity/int(layout.RecordSize(size)), 1)
	pool := newSlotPool(size, k)
	ch := make(chan []byte, k)
	done := make(chan peerReport)
	go func() {
		s := newStreamCounter(size)
		for m := range ch {
			s.take(m)
		}
		done <- s.report(time.Now())
	}()

	msg := payload(size)
	w.open()
	end := time.Now().Add(cs.c.duration)
	var seq uint64
	for {
		stamp(msg, seq)
		slot := pool.get()
		copy(slot, msg)
		ch <- slot
		seq++
		if seq%64 == 0 && !time.Now().Before(end) {
			break
		}
	}
	w.close(seq)
	close(ch)
	rep := <-done
	if rep.Error != "" {
		return measurement{}, fmt.Errorf("consumer: %s", rep.Error)
	}
	if rep.Received != seq {
		return measurement{}, fmtCountError("consumer received", rep.Received, seq)
	}
	return measurement{messages: rep.Timed, seconds: rep.Seconds}, nil
}

// chanPingpong: this goroutine sends requests on one channel, another
// echoes them on a second.
type chanPingpong struct{ chanCase }

func (cp *chanPingpong) run(w *window) (measurement, error) {
	size := cp.c.size
	req, resp := make(chan []byte, 1), make(chan []byte, 1)
	// Strict alternation: one slot each way is never reused early.
	reqSlot, respSlot := make([]byte, size), make([]byte, size)
	echoed := make(chan uint64)
	go func() {
		buf := make([]byte, size)
		var n uint64
		for m := range req {
			copy(buf, m)
			copy(respSlot, buf)
			resp <- respSlot
			n++
		}
		echoed <- n
	}()

	out, in := payload(size), make([]byte, size)
	rtts := newRTTs(cp.c.duration)
	w.open()
	start := time.Now()
	end := start.Add(cp.c.duration)
	var seq uint64
	var t1 time.Time
	var err error
	for len(rtts) < cap(rtts) {
		stamp(out, seq)
		t0 := time.Now()
		copy(reqSlot, out)
		req <- reqSlot
		m := <-resp
		n := copy(in, m)
		t1 = time.Now()
		if err = checkEcho(in, n, size, seq); err != nil {
			break
		}
		rtts = append(rtts, rttSample(t1.Sub(t0)))
		seq++
		if !t1.Before(end) {
			break
		}
	}
	w.close(seq)
	close(req)
	n := <-echoed
	if err != nil {
		return measurement{}, err
	}
	if n != seq {
		return measurement{}, fmtCountError("echo goroutine received", n, seq)
	}
	return measurement{messages: seq, seconds: t1.Sub(start).Seconds(), rtts: rtts}, nil
}

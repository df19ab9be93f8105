package bench

// The out-of-band modes, which the SPSC ring runs: the producer keeps the
// data lane full (a consumer that does a little work per data message
// falls behind, so -capacity bytes stay queued), waits until the consumer
// is draining it, then measures how long an urgent message (mode urgent)
// or a flush (mode flush: the time until the first data message sent
// after the Flush arrives) takes to reach the consumer. The consumer's
// own rate on data messages gives the time the queue would take to
// drain, which is what an in-band "abort" message would wait.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/shmlane/shmlane/internal/layout"
	"github.com/shmlane/shmlane/ring"
)

// Tags of the messages of the out-of-band modes (byte 8).
const (
	oobData   = 0
	oobUrgent = 1
	oobMarker = 2 // the first data message after a flush
)

// minOOBSize is the smallest message the out-of-band modes send: a time
// stamp and a tag.
const minOOBSize = 16

// checkOOBSizes rejects sizes too small for the out-of-band modes.
func checkOOBSizes(sizes []int) error {
	for _, size := range sizes {
		if size < minOOBSize {
			return fmt.Errorf("-mode oob needs messages of at least %d bytes (a time stamp and a tag): size=%d", minOOBSize, size)
		}
	}
	return nil
}

// oobCase is an out-of-band case over the ring's link, in a segment with a
// lane; the peer runs roleOOB.
type oobCase struct {
	linkCase
	prod *ring.Producer
}

// newOOBCase returns the runner of out-of-band case c.
func newOOBCase(c *caseSpec) runner { return &oobCase{linkCase: linkCase{c: c, role: roleOOB}} }

// setup sets up the ring's link, whose producer the events need.
func (o *oobCase) setup() error {
	if err := o.linkCase.setup(); err != nil {
		return err
	}
	p, ok := o.l.local.s.(*ring.Producer)
	if !ok {
		return fmt.Errorf("out-of-band modes over %T, want the SPSC ring's producer", o.l.local.s)
	}
	o.prod = p
	return nil
}

// oobStamp writes the time (as stamp writes a sequence number) and the
// tag kind into msg.
func oobStamp(msg []byte, kind byte) {
	stamp(msg[:8], uint64(time.Now().UnixNano()))
	msg[8] = kind
}

// fill sends data messages until the ring is full.
func (o *oobCase) fill(msg []byte) error {
	o.prod.SetDeadline(time.Unix(1, 0))
	defer o.prod.SetDeadline(time.Time{})
	for {
		err := o.prod.Send(msg)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// run fills the ring, waits until the consumer drains it, sends an
// event (an urgent message, or a flush and a marker), and again, for the
// case's duration; the latencies come from the consumer's report.
func (o *oobCase) run(w *window) (measurement, error) {
	data := payload(o.c.size)
	data[8] = oobData
	ev := make([]byte, minOOBSize)
	w.open()
	end := time.Now().Add(o.c.duration)
	var sent uint64
	for {
		if err := o.fill(data); err != nil {
			return measurement{}, o.peer.explain(fmt.Errorf("fill the ring: %w", err))
		}
		if err := o.awaitDraining(o.prod.Stats().Received); err != nil {
			return measurement{}, o.peer.explain(err)
		}
		if o.c.mode == ModeUrgent {
			oobStamp(ev, oobUrgent)
			err := o.prod.SendUrgent(ev)
			if errors.Is(err, ring.ErrLaneFull) {
				continue
			}
			if err != nil {
				return measurement{}, o.peer.explain(fmt.Errorf("send urgent: %w", err))
			}
		} else {
			oobStamp(ev, oobMarker)
			if err := o.prod.Flush(); err != nil {
				return measurement{}, o.peer.explain(fmt.Errorf("flush: %w", err))
			}
			if err := o.prod.Send(ev); err != nil {
				return measurement{}, o.peer.explain(fmt.Errorf("send after flush: %w", err))
			}
		}
		sent++
		if !time.Now().Before(end) {
			break
		}
		// Let the consumer take the event before the next one.
		time.Sleep(200 * time.Microsecond)
	}
	w.close(sent)
	o.prod.Close()
	rep, err := o.peer.awaitReport()
	if err != nil {
		return measurement{}, err
	}
	if uint64(len(rep.Samples)) != sent {
		return measurement{}, countError("consumer saw events", uint64(len(rep.Samples)), sent)
	}
	o.done = true
	lat := newLatencies()
	for _, ns := range rep.Samples {
		lat.record(time.Duration(ns))
	}
	m := measurement{messages: sent, seconds: o.c.duration.Seconds(), rtts: lat}
	if rep.DataRate > 0 {
		// The queue is the ring's capacity of records of this size.
		queued := float64(o.c.capacity) / float64(layout.RecordSize(o.c.size))
		d := queued / rep.DataRate
		m.drain = &d
	}
	return m, nil
}

// awaitDraining waits until the consumer has received two more messages
// than received, its count when the ring was just filled: the previous
// event's, if that was still queued, and at least one data message. Each
// event then finds the consumer draining a full ring, however late a
// loaded machine schedules it, and the consumer's data rate has something
// to measure.
func (o *oobCase) awaitDraining(received uint64) error {
	deadline := time.Now().Add(10 * time.Second)
	for o.prod.Stats().Received < received+2 {
		if time.Now().After(deadline) {
			return fmt.Errorf("the consumer took no message from the full ring in 10s (received %d)", o.prod.Stats().Received)
		}
		time.Sleep(20 * time.Microsecond)
	}
	return nil
}

// oobRole is the slow consumer: each data message costs it a little
// work; urgent messages and flush markers are timed.
func oobRole(ps *peerSide) (peerReport, error) {
	e, err := ps.attach()
	if err != nil {
		return peerReport{}, err
	}
	defer e.close()
	c, ok := e.r.(*ring.Consumer)
	if !ok {
		return peerReport{}, fmt.Errorf("out-of-band modes over %T, want the SPSC ring's consumer", e.r)
	}
	if err := ps.ready(); err != nil {
		return peerReport{}, err
	}
	var rep peerReport
	buf := make([]byte, c.MaxMessage())
	var data uint64
	var busy time.Duration
	for {
		n, urgent, err := c.RecvMsg(context.Background(), buf)
		now := time.Now()
		if errors.Is(err, io.EOF) {
			if busy > 0 {
				rep.DataRate = float64(data) / busy.Seconds()
			}
			return rep, nil
		}
		if err != nil {
			return rep, fmt.Errorf("receive: %w", err)
		}
		if n < 9 {
			return rep, fmt.Errorf("message of %d bytes, want at least 9 (a time stamp and a tag)", n)
		}
		rep.Received++
		kind := buf[8]
		if urgent != (kind == oobUrgent) {
			return rep, fmt.Errorf("message tagged %d arrived with urgent=%v", kind, urgent)
		}
		if kind == oobData {
			// The work per message that lets the queue build up.
			for time.Since(now) < time.Microsecond {
			}
			busy += time.Since(now)
			data++
			continue
		}
		rep.Samples = append(rep.Samples, now.UnixNano()-int64(seqOf(buf[:8])))
	}
}

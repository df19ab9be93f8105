package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/shmlane/shmlane/ring"
)

// The out-of-band modes: the producer keeps the data lane of a ring full
// (a consumer that does a little work per data message falls behind, so
// -capacity bytes stay queued), waits until the consumer is draining it,
// then measures how long an urgent message
// (mode urgent) or a flush (mode flush: the time until the first data
// message sent after the Flush arrives) takes to reach the consumer. The
// consumer's own rate on data messages gives the time the queue would take
// to drain, which is what an in-band "abort" message would wait.

// oobKind tags the messages of the out-of-band modes (byte 8).
const (
	oobData   = 0
	oobUrgent = 1
	oobMarker = 2 // the first data message after a flush
)

const oobCapacity = 4096

type ringOOB struct {
	peerCase
	prod *ring.Producer
}

func (r *ringOOB) setup() error {
	if r.c.size < 16 {
		return usageErrorf("-mode oob needs messages of at least 16 bytes (a time stamp and a tag): size=%d", r.c.size)
	}
	seg, err := ring.Create(&ring.Config{Capacity: r.c.capacity, OOBCapacity: oobCapacity, Name: "shmlane-bench"})
	if err != nil {
		return err
	}
	r.onClose(seg.Close)
	f, err := seg.File()
	if err != nil {
		return err
	}
	if r.prod, err = seg.Producer(nil); err != nil {
		f.Close()
		return err
	}
	r.onClose(r.prod.Close)
	r.peer, err = startPeer(peerSpec{Role: "ring-oob", Size: r.c.size}, r.c.limit(), []*os.File{f}, func() { r.prod.Close() })
	if err != nil {
		return err
	}
	return r.peer.awaitReady()
}

func oobStamp(msg []byte, kind byte) {
	binary.LittleEndian.PutUint64(msg, uint64(time.Now().UnixNano()))
	msg[8] = kind
}

// fill sends data messages until the ring is full.
func (r *ringOOB) fill(msg []byte) error {
	r.prod.SetDeadline(time.Unix(1, 0))
	defer r.prod.SetDeadline(time.Time{})
	for {
		err := r.prod.Send(msg)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (r *ringOOB) run(w *window) (measurement, error) {
	data := payload(r.c.size)
	data[8] = oobData
	ev := make([]byte, 16)
	w.open()
	end := time.Now().Add(r.c.duration)
	var sent uint64
	for {
		if err := r.fill(data); err != nil {
			return measurement{}, r.peer.explain(fmt.Errorf("fill the ring: %w", err))
		}
		if err := r.awaitDraining(r.prod.Stats().Received); err != nil {
			return measurement{}, r.peer.explain(err)
		}
		if r.c.mode == modeUrgent {
			oobStamp(ev, oobUrgent)
			err := r.prod.SendUrgent(ev)
			if errors.Is(err, ring.ErrLaneFull) {
				continue
			}
			if err != nil {
				return measurement{}, r.peer.explain(fmt.Errorf("send urgent: %w", err))
			}
		} else {
			oobStamp(ev, oobMarker)
			if err := r.prod.Flush(); err != nil {
				return measurement{}, r.peer.explain(fmt.Errorf("flush: %w", err))
			}
			if err := r.prod.Send(ev); err != nil {
				return measurement{}, r.peer.explain(fmt.Errorf("send after flush: %w", err))
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
	r.prod.Close()
	rep, err := r.peer.awaitReport()
	if err != nil {
		return measurement{}, err
	}
	if uint64(len(rep.Samples)) != sent {
		return measurement{}, fmtCountError("consumer saw events", uint64(len(rep.Samples)), sent)
	}
	r.done = true
	m := measurement{messages: sent, seconds: r.c.duration.Seconds(), rtts: rep.Samples}
	if rep.DataRate > 0 {
		// The queue is the ring's capacity of records of this size.
		queued := float64(r.c.capacity) / float64(layoutRecordSize(r.c.size))
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
func (r *ringOOB) awaitDraining(received uint64) error {
	deadline := time.Now().Add(10 * time.Second)
	for r.prod.Stats().Received < received+2 {
		if time.Now().After(deadline) {
			return fmt.Errorf("the consumer took no message from the full ring in 10s (received %d)", r.prod.Stats().Received)
		}
		time.Sleep(20 * time.Microsecond)
	}
	return nil
}

func layoutRecordSize(n int) int { return (8 + n + 7) &^ 7 }

// ringOOBPeer is the slow consumer: each data message costs it a little
// work; urgent messages and flush markers are timed.
func ringOOBPeer(spec peerSpec, files []*os.File, ready func() error) (peerReport, error) {
	if err := checkFiles(files, 1); err != nil {
		return peerReport{}, err
	}
	seg, err := openSegment(files[0])
	if err != nil {
		return peerReport{}, err
	}
	defer seg.Close()
	c, err := seg.Consumer(nil)
	if err != nil {
		return peerReport{}, err
	}
	defer c.Close()
	if err := ready(); err != nil {
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
			return rep, fmt.Errorf("message of %d bytes", n)
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
		lat := now.UnixNano() - int64(binary.LittleEndian.Uint64(buf))
		rep.Samples = append(rep.Samples, rttSample(time.Duration(lat)))
	}
}

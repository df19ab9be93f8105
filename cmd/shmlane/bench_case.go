package main

import (
	"fmt"
	"os"
	"time"
)

// peerCase is what the cross-process cases share: the peer process, this
// side's endpoints and the order of teardown.
type peerCase struct {
	c    benchCase
	peer *peer
	// closers release this side's endpoints and segments, last first.
	closers []func() error
	// done is set when run succeeded: the peer then exits by itself.
	done     bool
	closed   bool
	closeErr error
}

// onClose registers f to run in close.
func (pc *peerCase) onClose(f func() error) { pc.closers = append(pc.closers, f) }

func (pc *peerCase) pids() sidePIDs {
	return sidePIDs{Producer: os.Getpid(), Consumer: pc.peer.pid()}
}

// close closes this side's endpoints, which ends a peer still waiting on
// them, then stops the peer: after a run that succeeded it gives the peer a
// moment to exit, otherwise it kills it at once. close is idempotent.
func (pc *peerCase) close() error {
	if pc.closed {
		return pc.closeErr
	}
	pc.closed = true
	for i := len(pc.closers) - 1; i >= 0; i-- {
		pc.closers[i]()
	}
	if pc.peer != nil {
		grace := time.Duration(0)
		if pc.done {
			grace = 5 * time.Second
		}
		pc.closeErr = pc.peer.stop(grace)
	}
	return pc.closeErr
}

// streamEnd returns a stream case's measurement once the producer sent
// sent messages and closed: it waits for the consumer's report and checks
// that every message arrived.
func (pc *peerCase) streamEnd(sent uint64) (measurement, error) {
	rep, err := pc.peer.awaitReport()
	if err != nil {
		return measurement{}, err
	}
	if rep.Received != sent {
		return measurement{}, fmtCountError("consumer received", rep.Received, sent)
	}
	pc.done = true
	return measurement{messages: rep.Timed, seconds: rep.Seconds}, nil
}

// pingpongEnd checks the echo peer's report after the round trips m
// measured.
func (pc *peerCase) pingpongEnd(m measurement) (measurement, error) {
	rep, err := pc.peer.awaitReport()
	if err != nil {
		return measurement{}, err
	}
	if rep.Received != m.messages {
		return measurement{}, fmtCountError("echo peer received", rep.Received, m.messages)
	}
	pc.done = true
	return m, nil
}

// pingpong times round trips for the case's duration: it sends a request
// stamped with its number, receives the echo and checks it, and opens w
// just before the first request and closes it after the last echo. The
// caller then closes its request side and calls pingpongEnd.
func (pc *peerCase) pingpong(w *window, send func(msg []byte) error, recv func(buf []byte) (int, error)) (measurement, error) {
	size := pc.c.size
	out, in := payload(size), make([]byte, size)
	rtts := newRTTs(pc.c.duration)
	w.open()
	start := time.Now()
	end := start.Add(pc.c.duration)
	var seq uint64
	var t1 time.Time
	for len(rtts) < cap(rtts) {
		stamp(out, seq)
		t0 := time.Now()
		if err := send(out); err != nil {
			return measurement{}, pc.peer.explain(fmt.Errorf("send request %d: %w", seq, err))
		}
		n, err := recv(in)
		t1 = time.Now()
		if err != nil {
			return measurement{}, pc.peer.explain(fmt.Errorf("receive reply %d: %w", seq, err))
		}
		if err := checkEcho(in, n, size, seq); err != nil {
			return measurement{}, err
		}
		rtts = append(rtts, rttSample(t1.Sub(t0)))
		seq++
		if !t1.Before(end) {
			break
		}
	}
	w.close(seq)
	return measurement{messages: seq, seconds: t1.Sub(start).Seconds(), rtts: rtts}, nil
}

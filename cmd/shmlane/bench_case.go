package main

import (
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

// pingpongEnd checks the echo peer's report after trips round trips.
func (pc *peerCase) pingpongEnd(trips uint64, seconds float64, rtts []uint32) (measurement, error) {
	rep, err := pc.peer.awaitReport()
	if err != nil {
		return measurement{}, err
	}
	if rep.Received != trips {
		return measurement{}, fmtCountError("echo peer received", rep.Received, trips)
	}
	pc.done = true
	return measurement{messages: trips, seconds: seconds, rtts: rtts}, nil
}

package bench

// The peers' programs. The common consumer loops, stream and echo, serve
// every link; the MPMC ring's stream, the ring's out-of-band modes and
// the hub have roles of their own, in their files.

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// Role names.
const (
	roleStream    = "stream"     // consume a stream, checking every message
	roleEcho      = "echo"       // echo every request
	roleMPMCSend  = "mpmc-send"  // one producer of an mpmc stream
	roleMPMCRecv  = "mpmc-recv"  // one consumer of an mpmc stream
	roleOOB       = "oob"        // the slow consumer of the out-of-band modes
	roleHubServer = "hub-server" // the hub's server: every connection, a goroutine each
	roleHubClient = "hub-client" // a hub client: requests on its share of the connections
)

// A role is the program a peer runs: it attaches to its side, calls
// ps.ready, does its work and returns its report. It owns ps.files and
// ps.given.
type role func(ps *peerSide) (peerReport, error)

// roles are the programs a peer runs, by name.
var roles = map[string]role{
	roleStream:    streamRole,
	roleEcho:      echoRole,
	roleMPMCSend:  mpmcSendRole,
	roleMPMCRecv:  mpmcRecvRole,
	roleOOB:       oobRole,
	roleHubServer: hubServerRole,
	roleHubClient: hubClientRole,
}

// streamRole consumes a stream until its end, copying each message out and
// checking it (see streamCounter): with RecvBatch of all that is there
// where the transport batches and the end can, one Recv each otherwise.
// It reports the count and the consumer's window.
func streamRole(ps *peerSide) (peerReport, error) {
	e, err := ps.attach()
	if err != nil {
		return peerReport{}, err
	}
	defer e.close()
	if e.r == nil {
		return peerReport{}, fmt.Errorf("consume a stream: %w", errOneWay)
	}
	if err := ps.ready(); err != nil {
		return peerReport{}, err
	}
	s := newStreamCounter(ps.spec.Size)
	br, _ := e.r.(batchReceiver)
	if ps.spec.Batch == 0 {
		br = nil
	}
	take := s.take // one method value, not one per call
	for {
		if br != nil {
			_, err = br.RecvBatch(0, take)
		} else {
			var n int
			if n, err = e.r.Recv(s.buf); err == nil {
				s.check(n)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return s.report(time.Now()), nil
			}
			return s.report(time.Now()), fmt.Errorf("receive message %d: %w", s.n, err)
		}
	}
}

// echoRole sends every request back until the requester closes, and
// reports how many it echoed.
func echoRole(ps *peerSide) (peerReport, error) {
	e, err := ps.attach()
	if err != nil {
		return peerReport{}, err
	}
	defer e.close()
	if e.s == nil || e.r == nil {
		return peerReport{}, fmt.Errorf("echo: %w", errOneWay)
	}
	if err := ps.ready(); err != nil {
		return peerReport{}, err
	}
	buf := make([]byte, ps.spec.Size)
	var rep peerReport
	for {
		n, err := e.r.Recv(buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return rep, nil
			}
			return rep, fmt.Errorf("receive request %d: %w", rep.Received, err)
		}
		if err := e.s.Send(buf[:n]); err != nil {
			return rep, fmt.Errorf("send reply %d: %w", rep.Received, err)
		}
		rep.Received++
	}
}

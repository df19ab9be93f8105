package bench

// The pipes: the bare pipe of blocking descriptors, the bare pipe in Go's
// poller that the pipe fallback is measured against, and the pipe
// fallback. Each is a pipe one way (two for pingpong), its other ends
// passed to the peer; they differ in how each side wraps its ends.

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/shmlane/shmlane/fallback"
)

var (
	pipeTransport = &Transport{
		Name: "pipe",
		How: "a pipe between two processes (the kernel's default buffer), blocking descriptors, one write(2) of exactly " +
			"the message per message and one read(2) per message (more only when a message over PIPE_BUF arrives in pieces), " +
			"whatever -batch says: each write is a system call that a batch cannot share, where the ring's batch shares one " +
			"index store. Pingpong: a pipe each way.",
		modes: bothModes,
		link:  pipeLink{mine: blockingEnd, theirs: rawPipeEnd},
	}
	rawPipeTransport = &Transport{
		Name: "rawpipe",
		How: "Write and io.ReadFull of exactly the message on os.File pipe ends " +
			"in Go's poller (the peer's end made non-blocking), no framing. Pingpong: a pipe each way.",
		modes: bothModes,
		link:  pipeLink{mine: rawPipeEnd, theirs: pollableEnd},
	}
	pipeFallbackTransport = &Transport{
		Name: "pipefb",
		How: "fallback.NewPipeSender/NewPipeReceiver over pipes passed to the " +
			"peer: length-prefixed frames, one write per message. Pingpong: a pipe each way.",
		Baseline: "rawpipe",
		modes:    bothModes,
		link:     pipeLink{mine: fallbackPipeEnd, theirs: fallbackPipeEnd},
	}
)

// pipeLink connects the sides with a pipe, and a second one back for
// pingpong. mine wraps this side's ends, theirs the peer's, in the peer.
type pipeLink struct {
	mine, theirs pipeEnd
}

// A pipeEnd wraps a pipe end: f is the write end if write is set, the
// read end otherwise. It takes ownership of f: on failure it closes it.
type pipeEnd func(f *os.File, write bool) (*end, error)

// listen makes the request pipe, and for pingpong the reply pipe, and
// wraps this side's ends; the other ends go to the peer.
func (pl pipeLink) listen(c *caseSpec, _ string, l *listener) error {
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("create pipe: %w", err)
	}
	l.files = append(l.files, reqR)
	if l.local, err = pl.mine(reqW, true); err != nil || c.mode != ModePingpong {
		return err
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("create pipe: %w", err)
	}
	l.files = append(l.files, respW)
	resp, err := pl.mine(respR, false)
	if err != nil {
		return err
	}
	l.local.r = resp.r
	return nil
}

// dial wraps the ends the peer got: the request pipe's read end, and for
// pingpong the reply pipe's write end.
func (pl pipeLink) dial(_ context.Context, _ *peerSpec, files []*os.File) (*end, error) {
	if len(files) < 1 || len(files) > 2 {
		closeFiles(files)
		return nil, fmt.Errorf("got %d pipe descriptors, want 1 (stream) or 2 (pingpong)", len(files))
	}
	e, err := pl.theirs(files[0], false)
	if err != nil || len(files) == 1 {
		closeFiles(files[1:])
		return e, err
	}
	resp, err := pl.theirs(files[1], true)
	if err != nil {
		e.close()
		return nil, err
	}
	e.s = resp.s
	return e, nil
}

// rawPipeEnd moves messages on f as it is: one Write of exactly the
// message, io.ReadFull of exactly its size.
func rawPipeEnd(f *os.File, write bool) (*end, error) {
	if write {
		return &end{s: &rawEnd{w: f}}, nil
	}
	return &end{r: &rawEnd{r: f}}, nil
}

// blockingEnd is rawPipeEnd on f in blocking mode (Fd switches a File to
// it), so that a write to a full pipe or a read from an empty one sleeps
// in the kernel, as a plain program's would, instead of failing with
// EAGAIN and going through the runtime's poller.
func blockingEnd(f *os.File, write bool) (*end, error) {
	f.Fd()
	return rawPipeEnd(f, write)
}

// pollableEnd is rawPipeEnd on f in the runtime's poller: a peer inherits
// its ends in blocking mode.
func pollableEnd(f *os.File, write bool) (*end, error) {
	pf, err := pollable(f)
	if err != nil {
		return nil, err
	}
	return rawPipeEnd(pf, write)
}

// fallbackPipeEnd wraps f in the pipe fallback's sender or receiver.
func fallbackPipeEnd(f *os.File, write bool) (*end, error) {
	var e end
	var err error
	if write {
		e.s, err = asSender(fallback.NewPipeSender(f))
	} else {
		e.r, err = asReceiver(fallback.NewPipeReceiver(f))
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &e, nil
}

// rawEnd moves messages with one Write and one read of exactly the
// message: the loop that a Go program without a library writes, on a
// pipe end, a FIFO or a socket, with no framing. It is a sender if w is
// set and a receiver if r is; on a socket both are the connection.
type rawEnd struct {
	w      io.WriteCloser
	r      io.ReadCloser
	packet bool // one Read returns one message (SOCK_SEQPACKET)
}

// Send writes msg with one Write.
func (e *rawEnd) Send(msg []byte) error {
	if e.w == nil {
		return errOneWay
	}
	_, err := e.w.Write(msg)
	return err
}

// Recv reads one packet, or exactly len(buf) bytes of a stream: the raw
// loop knows the size of every message, which is what framing tells a
// fallback's receiver.
func (e *rawEnd) Recv(buf []byte) (int, error) {
	if e.r == nil {
		return 0, errOneWay
	}
	if e.packet {
		return e.r.Read(buf)
	}
	return io.ReadFull(e.r, buf)
}

// Close closes w and r, once if they are the same.
func (e *rawEnd) Close() error { return closePair(e.w, e.r) }

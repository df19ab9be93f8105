package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

var pipeTransport = &transport{
	name: "pipe",
	how: "a pipe between two processes (the kernel's default buffer), blocking descriptors, one write(2) of exactly " +
		"the message per message and one read(2) per message (more only when a message over PIPE_BUF arrives in pieces), " +
		"whatever -batch says: each write is a system call that a batch cannot share, where the ring's batch shares one " +
		"index store. Pingpong: a pipe each way.",
	check: func(*benchConfig) error { return nil },
	newCase: func(c benchCase) caseRunner {
		if c.mode == modeStream {
			return &pipeStream{peerCase: peerCase{c: c}}
		}
		return &pipePingpong{peerCase: peerCase{c: c}}
	},
}

// blockingPipe returns a pipe whose ends are in blocking mode, so that a
// write to a full pipe or a read from an empty one sleeps in the kernel,
// as a plain program's would, instead of failing with EAGAIN and going
// through the runtime's poller. (Fd switches a File to blocking mode.)
func blockingPipe() (r, w *os.File, err error) {
	r, w, err = os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("create pipe: %w", err)
	}
	r.Fd()
	w.Fd()
	return r, w, nil
}

// pipeStream: this process writes, the peer reads.
type pipeStream struct {
	peerCase
	w *os.File
}

func (p *pipeStream) setup() error {
	r, w, err := blockingPipe()
	if err != nil {
		return err
	}
	p.w = w
	p.onClose(w.Close)
	if p.peer, err = startPeer(peerSpec{Role: "pipe-stream", Size: p.c.size}, p.c.limit(), []*os.File{r}); err != nil {
		return err
	}
	return p.peer.awaitReady()
}

func (p *pipeStream) run(w *window) (measurement, error) {
	msg := payload(p.c.size)
	w.open()
	end := time.Now().Add(p.c.duration)
	var seq uint64
	for {
		stamp(msg, seq)
		if _, err := p.w.Write(msg); err != nil {
			return measurement{}, p.peer.explain(fmt.Errorf("write message %d: %w", seq, err))
		}
		seq++
		if seq%64 == 0 && !time.Now().Before(end) {
			break
		}
	}
	w.close(seq)
	p.w.Close()
	return p.streamEnd(seq)
}

func pipeStreamPeer(spec peerSpec, files []*os.File, ready func() error) (peerReport, error) {
	if err := checkFiles(files, 1); err != nil {
		return peerReport{}, err
	}
	r := files[0]
	defer r.Close()
	if err := ready(); err != nil {
		return peerReport{}, err
	}
	s := newStreamCounter(spec.Size)
	for {
		n, err := io.ReadFull(r, s.buf)
		if errors.Is(err, io.EOF) {
			return s.report(time.Now()), nil
		}
		if err != nil {
			return s.report(time.Now()), fmt.Errorf("read message %d: %w", s.n, err)
		}
		s.check(n)
	}
}

// pipePingpong: this process writes requests to one pipe and reads the
// peer's echoes from another.
type pipePingpong struct {
	peerCase
	reqW, respR *os.File
}

func (p *pipePingpong) setup() error {
	reqR, reqW, err := blockingPipe()
	if err != nil {
		return err
	}
	respR, respW, err := blockingPipe()
	if err != nil {
		reqR.Close()
		reqW.Close()
		return err
	}
	p.reqW, p.respR = reqW, respR
	p.onClose(reqW.Close)
	p.onClose(respR.Close)
	if p.peer, err = startPeer(peerSpec{Role: "pipe-echo", Size: p.c.size}, p.c.limit(), []*os.File{reqR, respW}); err != nil {
		return err
	}
	return p.peer.awaitReady()
}

func (p *pipePingpong) run(w *window) (measurement, error) {
	send := func(msg []byte) error {
		_, err := p.reqW.Write(msg)
		return err
	}
	recv := func(buf []byte) (int, error) { return io.ReadFull(p.respR, buf) }
	m, err := p.pingpong(w, send, recv)
	if err != nil {
		return m, err
	}
	p.reqW.Close()
	return p.pingpongEnd(m)
}

func pipeEchoPeer(spec peerSpec, files []*os.File, ready func() error) (peerReport, error) {
	if err := checkFiles(files, 2); err != nil {
		return peerReport{}, err
	}
	req, resp := files[0], files[1]
	defer req.Close()
	defer resp.Close()
	if err := ready(); err != nil {
		return peerReport{}, err
	}
	buf := make([]byte, spec.Size)
	var echoed uint64
	for {
		n, err := io.ReadFull(req, buf)
		if errors.Is(err, io.EOF) {
			return peerReport{Received: echoed}, nil
		}
		if err != nil {
			return peerReport{Received: echoed}, fmt.Errorf("read request %d: %w", echoed, err)
		}
		if _, err := resp.Write(buf[:n]); err != nil {
			return peerReport{Received: echoed}, fmt.Errorf("write reply %d: %w", echoed, err)
		}
		echoed++
	}
}

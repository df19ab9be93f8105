package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/shmlane/shmlane"
	"github.com/shmlane/shmlane/fallback"
)

// The fallback pipe and the bare mechanisms the fallbacks are measured
// against. A raw transport is the loop a Go program without a library
// writes: one Write of exactly the message and io.ReadFull of exactly its
// size (one Read of a packet on a SOCK_SEQPACKET socket), no framing, no
// deadline or context bookkeeping, on the objects Go gives it for the same
// kind of descriptor (os.File, net.Conn), which wait in the runtime's
// poller as the fallbacks do. The fallback's cost is its rate against the
// raw transport's in the same run (the overhead lines under the table).
// The pipe transport is the other bare loop: blocking descriptors, a
// thread asleep in read(2), no poller; it shows what the poller costs.

var (
	pipeFallbackTransport = newMsgTransport("pipefb", "fallback.NewPipeSender/NewPipeReceiver over pipes passed to the "+
		"peer: length-prefixed frames, one write per message. Pingpong: a pipe each way.", false)
	rawPipeTransport = newMsgTransport("rawpipe", "Write and io.ReadFull of exactly the message on os.File pipe ends "+
		"in Go's poller (the peer's end made non-blocking), no framing. Pingpong: a pipe each way.", false)
	rawFIFOTransport = newMsgTransport("rawfifo", "Write and io.ReadFull of exactly the message on os.File named-pipe "+
		"ends (os.OpenFile, in Go's poller), no framing; stream only.", true)
	rawUnixTransport = newMsgTransport("rawunix", "Write and Read of one packet per message on a net.UnixConn "+
		"(SOCK_SEQPACKET), no tag byte.", false)
	rawTCPTransport = newMsgTransport("rawtcp", "Write and io.ReadFull of exactly the message on a net.TCPConn over "+
		"loopback (TCP_NODELAY, Go's default), no framing.", false)
)

func init() {
	pipeFallbackTransport.baseline = rawPipeTransport.name
	fifoTransport.baseline = rawFIFOTransport.name
	unixTransport.baseline = rawUnixTransport.name
	connFallbackTransport.baseline = rawUnixTransport.name
	tcpTransport.baseline = rawTCPTransport.name
	connTransport.baseline = ringTransport.name
	connTransport.bound = 1.1
	connTransport.batches = true
}

// fallbackEnd joins the two one-way ends of a pipe transport.
type fallbackEnd struct {
	s shmlane.Sender
	r shmlane.Receiver
}

func (e *fallbackEnd) Send(msg []byte) error {
	if e.s == nil {
		return errors.New("one-way transport")
	}
	return e.s.Send(msg)
}

func (e *fallbackEnd) Recv(buf []byte) (int, error) {
	if e.r == nil {
		return 0, errors.New("one-way transport")
	}
	return e.r.Recv(buf)
}

func (e *fallbackEnd) Close() error {
	var errs []error
	if e.s != nil {
		errs = append(errs, e.s.Close())
	}
	if e.r != nil {
		errs = append(errs, e.r.Close())
	}
	return errors.Join(errs...)
}

// pipeFallbackKind: this process sends on one pipe (and receives echoes on
// a second); the peer gets the other ends as descriptors.
var pipeFallbackKind = msgKind{
	listen: func(_ string, duplex bool) (msgListener, error) {
		reqR, reqW, err := os.Pipe()
		if err != nil {
			return msgListener{}, fmt.Errorf("create pipe: %w", err)
		}
		s, err := fallback.NewPipeSender(reqW)
		if err != nil {
			reqR.Close()
			reqW.Close()
			return msgListener{}, err
		}
		end := &fallbackEnd{s: s}
		files := []*os.File{reqR}
		if duplex {
			respR, respW, err := os.Pipe()
			if err != nil {
				reqR.Close()
				s.Close()
				return msgListener{}, fmt.Errorf("create pipe: %w", err)
			}
			r, err := fallback.NewPipeReceiver(respR)
			if err != nil {
				reqR.Close()
				s.Close()
				respR.Close()
				respW.Close()
				return msgListener{}, err
			}
			end.r = r
			files = append(files, respW)
		}
		accept := func(context.Context) (msgEnd, error) { return end, nil }
		return msgListener{files: files, accept: accept}, nil
	},
	dial: func(_ context.Context, _ string, files []*os.File) (msgEnd, error) {
		if len(files) < 1 || len(files) > 2 {
			return nil, fmt.Errorf("pipefb peer: %d descriptors, want 1 or 2", len(files))
		}
		r, err := fallback.NewPipeReceiver(files[0])
		if err != nil {
			return nil, err
		}
		end := &fallbackEnd{r: r}
		if len(files) == 2 {
			if end.s, err = fallback.NewPipeSender(files[1]); err != nil {
				r.Close()
				return nil, err
			}
		}
		return end, nil
	},
}

// rawEnd moves messages with one Write and one read of exactly the
// message.
type rawEnd struct {
	w      io.WriteCloser // nil on a one-way receiving end
	r      io.ReadCloser  // nil on a one-way sending end; w itself on a socket
	packet bool           // one Read returns one message
}

func (e *rawEnd) Send(msg []byte) error {
	if e.w == nil {
		return errors.New("one-way transport")
	}
	_, err := e.w.Write(msg)
	return err
}

// Recv reads one packet, or exactly len(buf) bytes of a stream: the raw
// loop knows the size of every message, which is what framing tells a
// fallback's receiver.
func (e *rawEnd) Recv(buf []byte) (int, error) {
	if e.r == nil {
		return 0, errors.New("one-way transport")
	}
	if e.packet {
		return e.r.Read(buf)
	}
	return io.ReadFull(e.r, buf)
}

func (e *rawEnd) Close() error {
	var errs []error
	if e.w != nil {
		errs = append(errs, e.w.Close())
	}
	if e.r != nil && any(e.r) != any(e.w) {
		errs = append(errs, e.r.Close())
	}
	return errors.Join(errs...)
}

// rawPipeKind: os.Pipe ends; the peer's, inherited in blocking mode, are
// made non-blocking so that its os.Files wait in the poller too.
var rawPipeKind = msgKind{
	listen: func(_ string, duplex bool) (msgListener, error) {
		reqR, reqW, err := os.Pipe()
		if err != nil {
			return msgListener{}, fmt.Errorf("create pipe: %w", err)
		}
		end := &rawEnd{w: reqW}
		files := []*os.File{reqR}
		if duplex {
			respR, respW, err := os.Pipe()
			if err != nil {
				reqR.Close()
				reqW.Close()
				return msgListener{}, fmt.Errorf("create pipe: %w", err)
			}
			end.r = respR
			files = append(files, respW)
		}
		accept := func(context.Context) (msgEnd, error) { return end, nil }
		return msgListener{files: files, accept: accept}, nil
	},
	dial: func(_ context.Context, _ string, files []*os.File) (msgEnd, error) {
		if len(files) < 1 || len(files) > 2 {
			return nil, fmt.Errorf("rawpipe peer: %d descriptors, want 1 or 2", len(files))
		}
		end := &rawEnd{}
		for i, f := range files {
			pf, err := pollable(f)
			if err != nil {
				for _, f := range files[i:] {
					f.Close()
				}
				end.Close()
				return nil, err
			}
			if i == 0 {
				end.r = pf
			} else {
				end.w = pf
			}
		}
		return end, nil
	},
}

// rawFIFOKind: a FIFO made as fallback.CreateFIFO makes it, opened with
// os.OpenFile, which puts a FIFO in the poller. The peer opens the read
// end without O_NONBLOCK, which waits for a writer (a read with no writer
// yet would see end of file); this side opens the write end with
// O_NONBLOCK, retrying while no reader is there yet.
var rawFIFOKind = msgKind{
	listen: func(dir string, _ bool) (msgListener, error) {
		path := filepath.Join(dir, "raw.fifo")
		if err := fallback.CreateFIFO(path); err != nil {
			return msgListener{}, err
		}
		accept := func(ctx context.Context) (msgEnd, error) {
			for {
				f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
				if err == nil {
					return &rawEnd{w: f}, nil
				}
				select {
				case <-ctx.Done():
					return nil, fmt.Errorf("open %s for writing: %w (%w)", path, err, ctx.Err())
				case <-time.After(time.Millisecond):
				}
			}
		}
		return msgListener{addr: path, accept: accept, cleanup: func() { os.Remove(path) }}, nil
	},
	dial: func(_ context.Context, addr string, _ []*os.File) (msgEnd, error) {
		f, err := os.OpenFile(addr, os.O_RDONLY, 0)
		if err != nil {
			return nil, err
		}
		return &rawEnd{r: f}, nil
	},
}

// rawSocketKind: a net.Conn of network "unixpacket" (SOCK_SEQPACKET) or
// "tcp".
func rawSocketKind(network string) msgKind {
	packet := network == "unixpacket"
	return msgKind{
		listen: func(dir string, _ bool) (msgListener, error) {
			addr := "127.0.0.1:0"
			if packet {
				addr = filepath.Join(dir, "raw.sock")
			}
			l, err := net.Listen(network, addr)
			if err != nil {
				return msgListener{}, err
			}
			accept := func(ctx context.Context) (msgEnd, error) {
				if d, ok := ctx.Deadline(); ok {
					if dl, ok := l.(interface{ SetDeadline(time.Time) error }); ok {
						dl.SetDeadline(d)
					}
				}
				c, err := l.Accept()
				if err != nil {
					return nil, err
				}
				return &rawEnd{w: c, r: c, packet: packet}, nil
			}
			return msgListener{addr: l.Addr().String(), accept: accept, cleanup: func() { l.Close() }}, nil
		},
		dial: func(ctx context.Context, addr string, _ []*os.File) (msgEnd, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &rawEnd{w: c, r: c, packet: packet}, nil
		},
	}
}

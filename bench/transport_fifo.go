package bench

// The named pipes: the FIFO fallback and the bare FIFO it is measured
// against. Both run stream only: a FIFO carries one direction.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/shmlane/shmlane/fallback"
)

var (
	fifoTransport = &Transport{
		Name: "fifo",
		How: "a named pipe (fallback.CreateFIFO), length-prefixed frames, one write per " +
			"message; stream only (one direction).",
		Baseline: "rawfifo",
		modes:    streamOnly,
		link:     fifoLink{raw: false},
	}
	rawFIFOTransport = &Transport{
		Name: "rawfifo",
		How: "Write and io.ReadFull of exactly the message on os.File named-pipe " +
			"ends (os.OpenFile, in Go's poller), no framing; stream only.",
		modes: streamOnly,
		link:  fifoLink{raw: true},
	}
)

// fifoLink makes a FIFO in the case's directory, as fallback.CreateFIFO
// makes it; this side opens it for writing once the peer runs, the peer
// for reading. raw opens it with os.OpenFile, which puts a FIFO in the
// poller, and moves bare messages (rawEnd); otherwise the fallback's
// FIFOSender and FIFOReceiver frame them.
type fifoLink struct{ raw bool }

// listen makes the FIFO; accept opens its write end once the peer runs.
func (fl fifoLink) listen(_ *caseSpec, dir string, l *listener) error {
	path := filepath.Join(dir, "bench.fifo")
	if err := fallback.CreateFIFO(path); err != nil {
		return err
	}
	l.addr = path
	l.onClose(func() error { return os.Remove(path) })
	l.accept = func(ctx context.Context) (*end, error) {
		if !fl.raw {
			s, err := asSender(fallback.OpenFIFOSender(ctx, path))
			return &end{s: s}, err
		}
		// O_NONBLOCK fails while no reader has the FIFO open yet: retry.
		for {
			f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
			if err == nil {
				return &end{s: &rawEnd{w: f}}, nil
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("open %s for writing: %w (%w)", path, err, ctx.Err())
			case <-time.After(time.Millisecond):
			}
		}
	}
	return nil
}

// dial opens the FIFO for reading; the raw peer opens it without
// O_NONBLOCK, which waits for a writer (a read with no writer yet would
// see end of file).
func (fl fifoLink) dial(ctx context.Context, spec *peerSpec, files []*os.File) (*end, error) {
	closeFiles(files)
	if !fl.raw {
		r, err := asReceiver(fallback.OpenFIFOReceiver(ctx, spec.Addr))
		return &end{r: r}, err
	}
	f, err := os.OpenFile(spec.Addr, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	return &end{r: &rawEnd{r: f}}, nil
}

package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/shmlane/shmlane"
)

func init() {
	subcommands["recv"] = runRecv
	summaries["recv"] = "print the messages received on a name"
}

// recvFlushEvery is how often recv flushes its buffered output while
// messages trickle in, so that a reader of its output is not kept waiting.
const recvFlushEvery = 50 * time.Millisecond

func runRecv(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("recv", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf connFlags
	cf.register(fs, 0, "how long to wait for the connection (0: no limit when listening; 10s with -dial)")
	dial := fs.Bool("dial", false, "dial NAME (retrying until -timeout) instead of listening on it")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: shmlane recv [flags] NAME

Recv receives messages from the process on NAME and writes each to standard
output, followed by a newline with -lines, until the sender closes. By
default it listens on NAME and takes the first sender that dials; with -dial
it dials NAME instead. While it runs, "shmlane inspect NAME" shows the
connection (when recv listens).

Flags:
`)
		fs.PrintDefaults()
	}
	name, capacity, err := parseConnFlags(fs, &cf, args)
	if err != nil {
		return err
	}
	if *dial && cf.timeout == 0 {
		cf.timeout = 10 * time.Second
	}
	c, done, err := connect(name, capacity, &cf, !*dial, stderr)
	if err != nil {
		return err
	}
	defer done()
	out := newFlushWriter(stdout)
	defer out.stop()
	if err := receive(c, out, cf.lines); err != nil {
		out.flush()
		return err
	}
	return out.flush()
}

// receive writes each message from c to out until the end of the stream.
func receive(c *shmlane.Conn, out *flushWriter, lines bool) error {
	buf := make([]byte, c.MaxMessage())
	for {
		n, err := c.Recv(buf)
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, shmlane.ErrPeerGone) {
			return fmt.Errorf("the sender exited without closing; everything it sent before was written: %w", err)
		}
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		if err := out.write(buf[:n], lines); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
}

// flushWriter is a buffered writer that a goroutine flushes every
// recvFlushEvery while it holds data.
type flushWriter struct {
	mu    sync.Mutex
	w     *bufio.Writer
	dirty bool
	err   error // sticky write error
	done  chan struct{}
	wg    sync.WaitGroup
}

func newFlushWriter(w io.Writer) *flushWriter {
	f := &flushWriter{w: bufio.NewWriterSize(w, 256<<10), done: make(chan struct{})}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		t := time.NewTicker(recvFlushEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				f.mu.Lock()
				if f.dirty && f.err == nil {
					f.err = f.w.Flush()
					f.dirty = false
				}
				f.mu.Unlock()
			case <-f.done:
				return
			}
		}
	}()
	return f
}

func (f *flushWriter) write(p []byte, newline bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if _, err := f.w.Write(p); err != nil {
		f.err = err
		return err
	}
	if newline {
		if err := f.w.WriteByte('\n'); err != nil {
			f.err = err
			return err
		}
	}
	f.dirty = true
	return nil
}

func (f *flushWriter) flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = f.w.Flush()
		f.dirty = false
	}
	return f.err
}

// stop ends the flushing goroutine.
func (f *flushWriter) stop() {
	close(f.done)
	f.wg.Wait()
}

package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/shmlane/shmlane"
	"github.com/shmlane/shmlane/ring"
)

func init() {
	subcommands["send"] = runSend
	summaries["send"] = "send standard input to a name, as lines or chunks"
}

// closeLinger bounds the wait, when the connection fell back to the
// socket, for room to queue the end marker at Close (see shmlane.Conn's
// Close): a slow receiver still gets a clean end of file.
const closeLinger = time.Minute

// connFlags are the flags send and recv share.
type connFlags struct {
	lines    bool
	timeout  time.Duration
	fallback bool
	capacity string
	dir      string
	shm      bool // refuse the socket fallback
}

func (cf *connFlags) register(fs *flag.FlagSet, defaultTimeout time.Duration, timeoutDoc string) {
	fs.BoolVar(&cf.lines, "lines", false, "one message per line, without its newline")
	fs.DurationVar(&cf.timeout, "timeout", defaultTimeout, timeoutDoc)
	fs.BoolVar(&cf.fallback, "fallback", false, "use the socket instead of shared memory (ForceFallback)")
	fs.StringVar(&cf.capacity, "capacity", "", "ring `size` in each direction, a power of two (suffixes k, M); default 1M")
	fs.StringVar(&cf.dir, "dir", "", "runtime `directory` of the socket (default $XDG_RUNTIME_DIR/shmlane, /run/shmlane for root, /tmp/shmlane-UID)")
	fs.BoolVar(&cf.shm, "require-shm", false, "fail instead of falling back to the socket when shared memory cannot be used (RequireSharedMemory)")
}

// parseConnFlags parses args and returns the name.
func parseConnFlags(fs *flag.FlagSet, cf *connFlags, args []string) (name string, capacity int, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", 0, err
		}
		return "", 0, &usageError{msg: err.Error(), reported: true}
	}
	if fs.NArg() != 1 {
		return "", 0, usageErrorf("want exactly one NAME, got %d arguments", fs.NArg())
	}
	name = fs.Arg(0)
	if err := shmlane.CheckName(name); err != nil {
		return "", 0, usageErrorf("%v", err)
	}
	if cf.capacity != "" {
		capacity, err = parseBytes(cf.capacity)
		if err != nil || capacity < ring.MinCapacity || capacity > ring.MaxCapacity || capacity&(capacity-1) != 0 {
			return "", 0, usageErrorf("-capacity must be a power of two in [%d, %d] bytes: capacity=%q", ring.MinCapacity, ring.MaxCapacity, cf.capacity)
		}
	}
	if cf.timeout < 0 {
		return "", 0, usageErrorf("-timeout must not be negative: timeout=%v", cf.timeout)
	}
	if cf.shm && cf.fallback {
		return "", 0, usageErrorf("-require-shm and -fallback exclude each other")
	}
	return name, capacity, nil
}

// connect dials name (retrying until the timeout while no listener is up)
// or listens on it and accepts one dialer (waiting up to the timeout, or
// for ever if it is zero). The listener, if any, stays open until the
// returned close func runs, so that "shmlane inspect" can reach the
// connection.
func connect(name string, capacity int, cf *connFlags, listen bool, stderr io.Writer) (*shmlane.Conn, func(), error) {
	ctx := context.Background()
	if cf.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cf.timeout)
		defer cancel()
	}
	if !listen {
		c, err := shmlane.Dial(ctx, name, &shmlane.DialOptions{
			Capacity: capacity, ForceFallback: cf.fallback, RuntimeDir: cf.dir, WaitForListener: true,
			RequireSharedMemory: cf.shm,
		})
		if err != nil {
			return nil, nil, err
		}
		reportFallback(c, cf, stderr)
		return c, func() { c.Close() }, nil
	}
	l, err := shmlane.Listen(name, &shmlane.ListenOptions{
		Capacity: capacity, ForceFallback: cf.fallback, RuntimeDir: cf.dir,
		RequireSharedMemory: cf.shm,
	})
	if err != nil {
		return nil, nil, err
	}
	for {
		c, err := l.Accept(ctx)
		if errors.Is(err, shmlane.ErrPeerRefused) || errors.Is(err, shmlane.ErrHandshake) {
			// One failed attempt: report it and wait for the next dialer.
			fmt.Fprintf(stderr, "shmlane: %v\n", err)
			continue
		}
		if err != nil {
			l.Close()
			return nil, nil, err
		}
		reportFallback(c, cf, stderr)
		return c, func() { c.Close(); l.Close() }, nil
	}
}

// reportFallback says on stderr that c fell back to the socket, and why,
// unless -fallback asked for it. The reason may come from the peer: it is
// quoted.
func reportFallback(c *shmlane.Conn, cf *connFlags, stderr io.Writer) {
	if c.FellBack() && !cf.fallback {
		fmt.Fprintf(stderr, "shmlane: no shared memory, using the %s socket: %q (-require-shm refuses this)\n", c.Transport(), c.FallbackReason())
	}
}

func runSend(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf connFlags
	cf.register(fs, 10*time.Second, "how long to wait for the connection (0: no limit)")
	listen := fs.Bool("listen", false, "listen on NAME and wait for the receiver to dial, instead of dialing")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: shmlane send [flags] NAME

Send reads standard input and sends it to the process on NAME. By default it
dials NAME, retrying until -timeout while no listener is up yet; with -listen
it listens on NAME and waits for one receiver. With -lines each line is a
message, without its newline; otherwise the input goes in chunks of at most
the connection's largest message, as the reads return them. At the end of
input it closes the connection: the receiver gets end of file after the
last message.

Flags:
`)
		fs.PrintDefaults()
	}
	name, capacity, err := parseConnFlags(fs, &cf, args)
	if err != nil {
		return err
	}
	c, done, err := connect(name, capacity, &cf, *listen, stderr)
	if err != nil {
		return err
	}
	defer done()
	if cf.lines {
		err = sendLines(c, os.Stdin)
	} else {
		err = sendChunks(c, os.Stdin)
	}
	if err != nil {
		return err
	}
	c.SetDeadline(time.Now().Add(closeLinger))
	if err := c.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

// sendChunks sends each read of in as a message.
func sendChunks(c *shmlane.Conn, in io.Reader) error {
	buf := make([]byte, c.MaxMessage())
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if serr := c.Send(buf[:n]); serr != nil {
				return fmt.Errorf("send: %w", serr)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read input: %w", err)
		}
	}
}

// sendLines sends each line of in, without its newline, as a message. A
// last line without a newline is sent too.
func sendLines(c *shmlane.Conn, in io.Reader) error {
	max := c.MaxMessage()
	r := bufio.NewReaderSize(in, 64<<10)
	var long []byte // a line longer than r's buffer, gathered
	for lineNo := 1; ; lineNo++ {
		chunk, err := r.ReadSlice('\n')
		for errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, chunk...)
			if len(long) > max {
				return fmt.Errorf("line %d is longer than the connection's largest message (%d bytes)", lineNo, max)
			}
			chunk, err = r.ReadSlice('\n')
		}
		line := chunk
		if len(long) > 0 {
			line = append(long, chunk...)
			long = long[:0]
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("read input: %w", err)
		}
		if err == io.EOF && len(line) == 0 {
			return nil
		}
		line, _ = bytesCutNewline(line)
		if len(line) > max {
			return fmt.Errorf("line %d is %d bytes, longer than the connection's largest message (%d bytes)", lineNo, len(line), max)
		}
		if serr := c.Send(line); serr != nil {
			return fmt.Errorf("send line %d: %w", lineNo, serr)
		}
		if err == io.EOF {
			return nil
		}
	}
}

// bytesCutNewline drops a final '\n'.
func bytesCutNewline(b []byte) ([]byte, bool) {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		return b[:n-1], true
	}
	return b, false
}

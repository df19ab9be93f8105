package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/shmlane/shmlane"
)

func init() {
	subcommands["inspect"] = runInspect
	summaries["inspect"] = "show the rings of a listener's live connections"
}

func runInspect(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the listener's answer")
	dir := fs.String("dir", "", "runtime `directory` of the socket (default $XDG_RUNTIME_DIR/shmlane, /run/shmlane for root, /tmp/shmlane-UID)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: shmlane inspect [flags] NAME

Inspect asks the listener on NAME for its live connections and prints, for
each ring connection and each direction, the segment's header (magic,
version, capacity, size, creator pid), the ring's indices (head, tail), its
fill level and its counters, and its out-of-band lane (capacity, urgent
messages sent and received, flushes, data messages and bytes discarded by
flushes); for a connection that fell back to the socket, why, and per
direction the counters the listener keeps (the dialer's own are not known
to it). The listener answers on its socket, after checking this process's
credentials like any peer's, by passing read-only descriptors of the
segments; inspect reads them and changes nothing.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return &usageError{msg: err.Error(), reported: true}
	}
	if fs.NArg() != 1 {
		return usageErrorf("want exactly one NAME, got %d arguments", fs.NArg())
	}
	if *timeout <= 0 {
		return usageErrorf("-timeout must be positive: timeout=%v", *timeout)
	}
	name := fs.Arg(0)
	if err := shmlane.CheckName(name); err != nil {
		return usageErrorf("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	info, err := shmlane.Inspect(ctx, name, &shmlane.DialOptions{RuntimeDir: *dir})
	if err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	if *asJSON {
		if err := writeInspectJSON(w, info); err != nil {
			return err
		}
	} else {
		printInspect(w, info)
	}
	return w.Flush()
}

// writeInspectJSON writes the report as indented JSON, with the
// snake_case keys of the shmlane.ListenerInfo's tags. The peer's text
// (the transport, the fallback reason) cannot reach the terminal raw:
// encoding/json escapes C0 controls and replaces invalid UTF-8, and
// escapeNonPrint escapes what it leaves (DEL, C1 controls such as CSI,
// bidirectional overrides).
func writeInspectJSON(w io.Writer, info *shmlane.ListenerInfo) error {
	if info.Conns == nil {
		cp := *info
		cp.Conns = []shmlane.ConnInfo{} // "conns": [] rather than null
		info = &cp
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(info); err != nil {
		return err
	}
	_, err := w.Write(escapeNonPrint(buf.Bytes()))
	return err
}

// escapeNonPrint rewrites, in encoding/json's output, each rune that
// strconv.Quote would escape and the encoder left as it is as a \uXXXX
// escape (a surrogate pair above U+FFFF). Outside strings JSON has only
// ASCII punctuation, digits, letters and whitespace, none of them such a
// rune, so the result is the same JSON value.
func escapeNonPrint(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		keep := r != 0x7f // the encoder escaped the other ASCII controls
		if r >= utf8.RuneSelf {
			keep = n > 1 && strconv.IsPrint(r) // an invalid byte (n == 1) becomes \ufffd
		}
		if keep {
			if out != nil {
				out = append(out, b[i:i+n]...)
			}
			i += n
			continue
		}
		if out == nil {
			out = append(make([]byte, 0, len(b)+64), b[:i]...)
		}
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		} else {
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		i += n
	}
	if out == nil {
		return b
	}
	return out
}

// printInspect writes the report for a person to read. Every string in
// it that came from the listener or its peers (the transport, the
// fallback reason, which a dialer chooses, the segment errors) and the
// name and socket path are printed quoted, as strconv.Quote does
// (fmt's %q), so control characters, escape sequences, newlines and
// invalid UTF-8 reach the terminal escaped and cannot forge lines.
func printInspect(w io.Writer, info *shmlane.ListenerInfo) {
	fmt.Fprintf(w, "listener %q: pid %d, uid %d, socket %q, %d connection%s\n",
		info.Name, info.PID, info.UID, info.Path, len(info.Conns), plural(len(info.Conns)))
	for _, c := range info.Conns {
		fmt.Fprintf(w, "\nconnection %d: %q, dialer pid %d uid %d\n", c.ID, c.Transport, c.DialerPID, c.DialerUID)
		if c.FallbackReason != "" {
			fmt.Fprintf(w, "  fell back to the socket: %q\n", c.FallbackReason)
			fmt.Fprintf(w, "  out-of-band lane %s\n", laneSize(c.OOBCapacity, "socket send buffer"))
			fmt.Fprintf(w, "  listener → dialer: listener sent %d messages (%d bytes), %d urgent, %d flushes\n",
				c.Sent, c.SentBytes, c.UrgentSent, c.Flushes)
			fmt.Fprintf(w, "  dialer → listener: listener received %d messages (%d bytes), %d urgent, discarded %d messages (%d bytes)\n",
				c.Received, c.ReceivedBytes, c.UrgentReceived, c.Discarded, c.DiscardedBytes)
			continue
		}
		if c.SegmentErr != "" {
			fmt.Fprintf(w, "  segments unreadable: %q\n", c.SegmentErr)
		}
		printSegment(w, "listener → dialer", c.ToDialer)
		printSegment(w, "dialer → listener", c.ToListener)
	}
}

func printSegment(w io.Writer, dir string, s *shmlane.SegmentInfo) {
	if s == nil {
		return
	}
	var magic [8]byte
	binary.NativeEndian.PutUint64(magic[:], s.Magic)
	st := s.Stats
	fill := 0.0
	if st.Capacity > 0 {
		fill = 100 * float64(st.Used()) / float64(st.Capacity)
	}
	fmt.Fprintf(w, "  %s\n", dir)
	fmt.Fprintf(w, "    segment   magic %q version %d features %#x capacity %d size %d creator pid %d\n",
		bytes.TrimRight(magic[:], "\x00"), s.Version, s.Features, s.Capacity, s.Size, s.CreatorPID)
	fmt.Fprintf(w, "    indices   head %d tail %d fill %d bytes (%.1f%%)\n", st.Head, st.Tail, st.Used(), fill)
	fmt.Fprintf(w, "    producer  pid %d closed %s sent %d messages (%d bytes) wakes %d sleeps %d\n",
		st.ProducerPID, yesNo(st.ProducerClosed), st.Sent, st.SentBytes, st.ProducerWakes, st.ProducerSleeps)
	fmt.Fprintf(w, "    consumer  pid %d closed %s received %d messages (%d bytes) wakes %d sleeps %d\n",
		st.ConsumerPID, yesNo(st.ConsumerClosed), st.Received, st.ReceivedBytes, st.ConsumerWakes, st.ConsumerSleeps)
	if st.OOBCapacity == 0 {
		fmt.Fprintf(w, "    oob       none\n")
		return
	}
	fmt.Fprintf(w, "    oob       capacity %d urgent sent %d received %d flushes %d discarded %d messages (%d bytes)\n",
		st.OOBCapacity, st.UrgentSent, st.UrgentReceived, st.Flushes, st.Discarded, st.DiscardedBytes)
}

// laneSize describes an out-of-band lane's size.
func laneSize(n uint64, what string) string {
	if n == 0 {
		return "none"
	}
	return fmt.Sprintf("%d bytes each way (%s)", n, what)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

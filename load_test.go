//go:build linux

package shmlane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The listener under load: silent and stalled dialers, limits, leaks.

// openSilent connects n sockets to the listener of name that never send
// anything, and closes them at the end of the test.
func openSilent(t testing.TB, dir, name string, n int) {
	t.Helper()
	addr := &net.UnixAddr{Name: filepath.Join(dir, name+".sock"), Net: "unixpacket"}
	conns := make([]*net.UnixConn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.DialUnix("unixpacket", nil, addr)
		if err != nil {
			t.Fatalf("silent connection %d of %d: %v", len(conns)+1, n, err)
		}
		conns = append(conns, c)
	}
}

// openStalled runs n handshakes up to the listener's offer of the rings
// and leaves them there: dialers that take the rings and go quiet.
func openStalled(t testing.TB, dir, name string, n int) {
	t.Helper()
	for range n {
		uc := fakeDial(t, dir, name)
		must(t, writePacket(uc, newHello(kindDial).encode("")))
		h, _, files, err := readPacket(uc, 2)
		must(t, err)
		closeAll(files)
		if h.Kind != kindRing {
			t.Fatalf("listener sent %s, want ring", kindName(h.Kind))
		}
	}
}

// waitPending waits until the listener has admitted n sockets that are
// not yet accepted.
func waitPending(t testing.TB, l *Listener, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		got := l.pending.total
		l.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the listener admitted %d sockets within 10 s, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// roundTrip dials l, accepts, and sends a message each way; it returns the
// time all that took.
func roundTrip(t testing.TB, l *Listener, dir, name string, opts *DialOptions) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if opts == nil {
		opts = &DialOptions{}
	}
	opts.RuntimeDir = dir
	start := time.Now()
	type result struct {
		c   *Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		for {
			c, err := l.Accept(ctx)
			if errors.Is(err, ErrHandshake) || errors.Is(err, ErrPeerRefused) {
				continue // a report about another dialer
			}
			accepted <- result{c, err}
			return
		}
	}()
	client, err := Dial(ctx, name, opts)
	must(t, err)
	defer client.Close()
	r := <-accepted
	must(t, r.err)
	defer r.c.Close()
	buf := make([]byte, 8)
	must(t, client.Send([]byte("ping")))
	if n, err := r.c.Recv(buf); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("Recv() = %q, %v", buf[:n], err)
	}
	must(t, r.c.Send([]byte("pong")))
	if n, err := client.Recv(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("Recv() = %q, %v", buf[:n], err)
	}
	return time.Since(start)
}

// TestSilentDialersDoNotDelay opens 1,000 silent connections and 10
// handshakes stalled after the listener's offer, then dials: the
// legitimate Dial, Accept and round trip complete without waiting for any
// of them (a head-of-line queue would make it wait for the handshake
// timeout, 5 s).
func TestSilentDialersDoNotDelay(t *testing.T) {
	const silent, stalled = 1000, 10
	dir := t.TempDir()
	l, err := Listen("busy", &ListenOptions{RuntimeDir: dir, Capacity: 64 << 10})
	must(t, err)
	defer l.Close()
	openSilent(t, dir, "busy", silent)
	openStalled(t, dir, "busy", stalled)
	waitPending(t, l, silent+stalled)
	best := time.Hour
	for i := range 3 {
		d := roundTrip(t, l, dir, "busy", nil)
		t.Logf("dial %d with %d silent and %d stalled dialers: Dial+Accept+round trip %v", i, silent, stalled, d)
		if d > time.Second {
			t.Errorf("dial %d took %v: held up behind the silent dialers", i, d)
		}
		best = min(best, d)
	}
	if best > 100*time.Millisecond {
		t.Errorf("best of 3 dials took %v, want under 100 ms", best)
	}
}

// TestListenerLimits: dialers beyond a limit are refused at once with
// ErrListenerBusy, naming the limit, and the slot comes back when a
// connection closes.
func TestListenerLimits(t *testing.T) {
	t.Run("handshakes", func(t *testing.T) {
		dir := t.TempDir()
		l, err := Listen("lim", &ListenOptions{RuntimeDir: dir, MaxHandshakes: 3, MaxHandshakesPerUID: 3})
		must(t, err)
		defer l.Close()
		openSilent(t, dir, "lim", 3)
		waitPending(t, l, 3)
		busy(t, l, dir, "lim", "3 handshakes in progress, the listener's limit (ListenOptions.MaxHandshakes)")
	})
	t.Run("handshakes-per-uid", func(t *testing.T) {
		dir := t.TempDir()
		l, err := Listen("lim", &ListenOptions{RuntimeDir: dir, MaxHandshakes: 10, MaxHandshakesPerUID: 2})
		must(t, err)
		defer l.Close()
		openSilent(t, dir, "lim", 2)
		waitPending(t, l, 2)
		busy(t, l, dir, "lim", fmt.Sprintf("uid %d has 2 handshakes in progress, the listener's limit per uid (ListenOptions.MaxHandshakesPerUID)", os.Geteuid()))
	})
	t.Run("conns", func(t *testing.T) {
		dir := t.TempDir()
		l, err := Listen("lim", &ListenOptions{RuntimeDir: dir, MaxConns: 2, MaxConnsPerUID: 2})
		must(t, err)
		defer l.Close()
		s1, c1 := acceptDial(t, l, dir, "lim")
		acceptDial(t, l, dir, "lim")
		busy(t, l, dir, "lim", "2 connections open, the listener's limit (ListenOptions.MaxConns)")
		s1.Close()
		c1.Close()
		roundTrip(t, l, dir, "lim", nil)
	})
	t.Run("options", func(t *testing.T) {
		for _, o := range []ListenOptions{{MaxHandshakes: -1}, {MaxConnsPerUID: -1}, {MaxCapacity: 3000}, {Capacity: 1 << 20, MaxCapacity: 64 << 10}} {
			o.RuntimeDir = t.TempDir()
			if l, err := Listen("lim", &o); err == nil {
				l.Close()
				t.Errorf("Listen(%+v) succeeded", o)
			}
		}
	})
}

// busy dials l and checks that it is refused at once, saying why, and
// that Accept reports it.
func busy(t *testing.T, l *Listener, dir, name, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, name, &DialOptions{RuntimeDir: dir})
	if !errors.Is(err, ErrListenerBusy) || !errors.Is(err, ErrHandshake) {
		t.Fatalf("Dial() = %v, want ErrListenerBusy", err)
	}
	errContains(t, "Dial()", err, why)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the refusal took %v", d)
	}
	for {
		_, err := l.Accept(ctx)
		if errors.Is(err, ErrListenerBusy) {
			errContains(t, "Accept()", err, why)
			return
		}
		if err == nil || ctx.Err() != nil {
			t.Fatalf("Accept() = %v, want the report of the refusal", err)
		}
	}
}

// TestMaxCapacity: the listener cuts a dialer's capacity to MaxCapacity,
// and by default to DefaultMaxCapacity.
func TestMaxCapacity(t *testing.T) {
	for _, tc := range []struct{ max, dial, want int }{
		{64 << 10, 1 << 20, 64 << 10},
		{0, 1 << 30, DefaultMaxCapacity},
		{0, 8 << 20, 8 << 20},
	} {
		server, client := newPair(t, mode{listen: ListenOptions{MaxCapacity: tc.max}, dial: DialOptions{Capacity: tc.dial}, transport: "ring"})
		for _, c := range []*Conn{server, client} {
			if st := c.Stats(); st.Send.Capacity != uint64(tc.want) || st.Recv.Capacity != uint64(tc.want) {
				t.Errorf("max %d, dialer %d: capacities %d and %d, want %d", tc.max, tc.dial, st.Send.Capacity, st.Recv.Capacity, tc.want)
			}
		}
	}
}

// TestDialHandshakeTimeout: a listener that accepts and never answers
// cannot keep Dial waiting past the handshake timeout, even with a
// context that has no deadline.
func TestDialHandshakeTimeout(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(dir, "mute.sock"), Net: "unixpacket"})
	must(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	for _, tc := range []struct {
		timeout, want time.Duration
	}{
		{200 * time.Millisecond, 200 * time.Millisecond},
		{0, DefaultHandshakeTimeout},
	} {
		if tc.timeout == 0 && testing.Short() {
			continue
		}
		start := time.Now()
		_, err := Dial(context.Background(), "mute", &DialOptions{RuntimeDir: dir, HandshakeTimeout: tc.timeout})
		d := time.Since(start)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Dial() = %v, want a timeout", err)
		}
		if tc.timeout != 0 {
			_, err := Inspect(context.Background(), "mute", &DialOptions{RuntimeDir: dir, HandshakeTimeout: tc.timeout})
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Inspect() = %v, want a timeout", err)
			}
		}
		errContains(t, "Dial()", err, fmt.Sprintf("within %v (DialOptions.HandshakeTimeout)", tc.want))
		if d < tc.want || d > tc.want+5*time.Second {
			t.Errorf("Dial() gave up after %v, want about %v", d, tc.want)
		}
	}
}

// resources counts what a connection holds in this process: descriptors,
// goroutines and memfd mappings.
type resources struct{ fds, goroutines, memfds int }

func countResources(t testing.TB) resources {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	maps, err := os.ReadFile("/proc/self/maps")
	must(t, err)
	return resources{fds: len(fds), goroutines: runtime.NumGoroutine(), memfds: strings.Count(string(maps), "/memfd:")}
}

// TestDialCloseNoLeak runs 5,000 dial/accept/close cycles and checks that
// descriptors, goroutines and memfd mappings come back to where they were.
func TestDialCloseNoLeak(t *testing.T) {
	cycles := 5000
	if testing.Short() {
		cycles = 500
	}
	dir := t.TempDir()
	l, err := Listen("leak", &ListenOptions{RuntimeDir: dir, Capacity: 4096})
	must(t, err)
	defer l.Close()
	cycle := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		accepted := make(chan *Conn, 1)
		go func() {
			c, err := l.Accept(ctx)
			if err != nil {
				t.Error(err)
			}
			accepted <- c
		}()
		c, err := Dial(ctx, "leak", &DialOptions{RuntimeDir: dir})
		must(t, err)
		s := <-accepted
		if s == nil {
			t.FailNow()
		}
		must(t, c.Close())
		must(t, s.Close())
	}
	for range 20 { // warm up: the poller, timers and such
		cycle()
	}
	// The count sees a live connection's mappings: the two segments,
	// mapped by both ends.
	base := countResources(t).memfds
	s, c := acceptDial(t, l, dir, "leak")
	if got := countResources(t).memfds; got != base+4 {
		t.Fatalf("memfd mappings with one connection open: %d, want %d", got, base+4)
	}
	s.Close()
	c.Close()
	before := countResources(t)
	start := time.Now()
	for range cycles {
		cycle()
	}
	t.Logf("%d cycles in %v (%.0f connections per second)", cycles, time.Since(start), float64(cycles)/time.Since(start).Seconds())
	// The pidfd watchers end when their endpoint closes: give them a
	// moment.
	var after resources
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		after = countResources(t)
		if after.fds <= before.fds && after.goroutines <= before.goroutines && after.memfds <= before.memfds || time.Now().After(deadline) {
			break
		}
	}
	if after.fds > before.fds || after.goroutines > before.goroutines || after.memfds > before.memfds {
		t.Errorf("after %d cycles: %+v, before: %+v", cycles, after, before)
	}
	t.Logf("before %+v, after %+v", before, after)
}

// BenchmarkDialAccept measures connections per second through Listen and
// Dial: Dial, Accept and Close of both ends, in shared-memory mode with
// 4 KiB rings.
func BenchmarkDialAccept(b *testing.B) {
	for _, m := range []struct {
		name     string
		fallback bool
	}{{"ring", false}, {"fallback", true}} {
		b.Run(m.name, func(b *testing.B) {
			dir := b.TempDir()
			l, err := Listen("bench", &ListenOptions{RuntimeDir: dir, Capacity: 4096})
			must(b, err)
			defer l.Close()
			ctx := context.Background()
			accepted := make(chan *Conn, 64)
			go func() {
				for {
					c, err := l.Accept(ctx)
					if err != nil {
						close(accepted)
						return
					}
					accepted <- c
				}
			}()
			b.ReportAllocs()
			for b.Loop() {
				c, err := Dial(ctx, "bench", &DialOptions{RuntimeDir: dir, ForceFallback: m.fallback})
				must(b, err)
				s := <-accepted
				c.Close()
				s.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
		})
	}
}

// BenchmarkDialWithSilent measures a legitimate Dial, Accept and round
// trip while N silent connections and 10 stalled handshakes are open.
func BenchmarkDialWithSilent(b *testing.B) {
	for _, n := range []int{0, 1000} {
		b.Run(fmt.Sprintf("silent=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			l, err := Listen("bench", &ListenOptions{RuntimeDir: dir, Capacity: 64 << 10, HandshakeTimeout: time.Hour})
			must(b, err)
			defer l.Close()
			openSilent(b, dir, "bench", n)
			stalled := 0
			if n > 0 {
				stalled = 10
				openStalled(b, dir, "bench", stalled)
			}
			waitPending(b, l, n+stalled)
			for b.Loop() {
				roundTrip(b, l, dir, "bench", nil)
			}
		})
	}
}

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// runRows runs the default configuration as edit changes it, and
// returns its rows and its notes.
func runRows(t *testing.T, edit func(cfg *Config)) ([]Result, string) {
	t.Helper()
	var notes bytes.Buffer
	cfg := DefaultConfig()
	cfg.Duration, cfg.Log = 20*time.Millisecond, &notes
	edit(cfg)
	rows, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v; notes:\n%s", err, notes.String())
	}
	return rows, notes.String()
}

// transports returns the transports called names.
func transports(t *testing.T, names ...string) []*Transport {
	t.Helper()
	var ts []*Transport
	for _, name := range names {
		tr := Lookup(name)
		if tr == nil {
			t.Fatalf("Lookup(%q) = nil", name)
		}
		ts = append(ts, tr)
	}
	return ts
}

// rowName names a row in failures.
func rowName(r Result) string { return r.Transport + " " + r.Mode }

// TestRunRows runs the default transports at two sizes: every row has
// positive figures, round trips only in pingpong, the ring's ratio 1, and
// a batch for the ring's stream only.
func TestRunRows(t *testing.T) {
	rows, _ := runRows(t, func(c *Config) { c.Sizes, c.Capacity = []int{8, 1024}, 64<<10 })
	if len(rows) != 12 {
		t.Fatalf("got %d rows, want 12 (3 transports × 2 sizes × 2 modes)", len(rows))
	}
	for _, r := range rows {
		if r.Messages < 1 || r.MsgsPerSec <= 0 || r.Seconds <= 0 {
			t.Errorf("%s: messages=%v msgs_per_sec=%v seconds=%v, want all positive", rowName(r), r.Messages, r.MsgsPerSec, r.Seconds)
		}
		pingpong := r.Mode == ModePingpong
		rtts := []*int64{r.RTTP50, r.RTTP99, r.RTTP999, r.RTTMax}
		if slices.Contains(rtts, nil) != !pingpong || !pingpong && slices.ContainsFunc(rtts, func(p *int64) bool { return p != nil }) {
			t.Errorf("%s: rtt p50, p99, p99.9, max = %v, want four numbers for pingpong only", rowName(r), rtts)
		}
		if pingpong && (*r.RTTP50 <= 0 || *r.RTTP50 > *r.RTTP99 || *r.RTTP99 > *r.RTTP999 || *r.RTTP999 > *r.RTTMax) {
			t.Errorf("%s: rtt p50 %v, p99 %v, p99.9 %v, max %v: want positive and ordered", rowName(r), *r.RTTP50, *r.RTTP99, *r.RTTP999, *r.RTTMax)
		}
		// The ring counts its futex sleeps, the pipe and the channel
		// have no such counter.
		if wantSleeps := pingpong && r.Transport == "ring"; (r.SleepsPerRT != nil) != wantSleeps || wantSleeps && *r.SleepsPerRT < 0 {
			t.Errorf("%s: sleeps_per_rt = %v, want a number >= 0 for the ring's pingpong only", rowName(r), r.SleepsPerRT)
		}
		if r.RoundsSpread != nil || r.RoundsRange != nil {
			t.Errorf("%s: rounds_spread %v, rounds_range %v after one round, want none", rowName(r), r.RoundsSpread, r.RoundsRange)
		}
		// Null where the eBPF probe cannot run (not root), numbers where
		// it can: a pipe pays at least about one system call per message.
		sc := r.SyscallsPerMsg
		switch {
		case sc.Producer == nil && sc.Consumer == nil:
		case sc.Producer == nil || sc.Consumer == nil || *sc.Producer < 0 || *sc.Consumer < 0:
			t.Errorf("%s: syscalls_per_msg = %v, %v, want two numbers >= 0 or two nulls", rowName(r), sc.Producer, sc.Consumer)
		case r.Transport == "pipe" && (*sc.Producer < 0.5 || *sc.Consumer < 0.5):
			t.Errorf("%s: syscalls_per_msg = %v, %v, want about 1 or more per message on each side", rowName(r), *sc.Producer, *sc.Consumer)
		}
		if r.Transport == "ring" && (r.RingRatio == nil || *r.RingRatio != 1) {
			t.Errorf("%s: ring_ratio = %v, want 1", rowName(r), r.RingRatio)
		}
		wantBatch := 0
		if r.Transport == "ring" && !pingpong {
			wantBatch = 32
		}
		if r.Batch != wantBatch {
			t.Errorf("%s: batch = %v, want %v", rowName(r), r.Batch, wantBatch)
		}
	}
}

// TestRunInterrupt kills the peer of a running case, and cancels a run:
// the case must end with an error that says so, and leave no peer behind.
func TestRunInterrupt(t *testing.T) {
	for _, tc := range []struct {
		transport string
		cancel    bool
	}{{"ring", false}, {"pipe", false}, {"ring", true}} {
		t.Run(tc.transport+map[bool]string{false: "/kill", true: "/cancel"}[tc.cancel], func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			cfg := DefaultConfig()
			cfg.Duration, cfg.Transports, cfg.Sizes, cfg.Modes = 10*time.Second, transports(t, tc.transport), []int{64}, []string{ModeStream}
			done := make(chan error, 1)
			go func() {
				_, err := Run(ctx, cfg)
				done <- err
			}()
			deadline := time.Now().Add(5 * time.Second)
			for livePeerCount() == 0 {
				if time.Now().After(deadline) {
					t.Fatal("no peer started")
				}
				time.Sleep(time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			want := "killed by the test"
			if tc.cancel {
				cancel(errors.New(want))
			} else {
				killPeers(want)
			}
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Run = %v, want an error saying %q", err, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run still running 10s after its peer was killed")
			}
			if n := livePeerCount(); n != 0 {
				t.Errorf("%d peers left running", n)
			}
		})
	}
}

// livePeerCount is the number of peers started and not yet stopped.
func livePeerCount() int {
	livePeers.Lock()
	defer livePeers.Unlock()
	return len(livePeers.set)
}

// TestPrepare checks that Prepare names the rule and the value of what it
// rejects, and what it drops for several producers or consumers.
func TestPrepare(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"batch", func(c *Config) { c.Batch = 0 }, "-batch must be in [1, 4096]: batch=0"},
		{"rounds", func(c *Config) { c.Rounds = 101 }, "-rounds must be in [1, 100]: rounds=101"},
		{"duration", func(c *Config) { c.Duration = 0 }, "-duration must be positive: duration=0s"},
		{"capacity", func(c *Config) { c.Capacity = 3000 }, "power of two in [4096, 1073741824] bytes: capacity=3000"},
		{"size", func(c *Config) { c.Sizes = []int{64, 0} }, "size=0"},
		{"mode", func(c *Config) { c.Modes = []string{"sideways"} }, `unknown mode "sideways"`},
		{"largest", func(c *Config) { c.Capacity, c.Sizes = 64<<10, []int{40000} }, "size 40000 is over the ring's largest message"},
		{"oob size", func(c *Config) { c.Modes, c.Sizes = []string{ModeUrgent}, []int{8} }, "-mode oob needs messages of at least 16 bytes"},
		{"several, no mpmc", func(c *Config) { c.Producers = 2 }, "only the mpmc transport runs several producers or consumers"},
		{"several, pingpong", func(c *Config) {
			c.Transports, c.Consumers, c.Modes = []*Transport{mpmcTransport}, 2, []string{ModePingpong}
		}, "-mode pingpong runs with -producers 1 -consumers 1 only"},
		{"producers", func(c *Config) { c.Transports, c.Producers = []*Transport{mpmcTransport}, 0 }, "producers=0"},
		{"no case", func(c *Config) { c.Transports, c.Modes = []*Transport{fifoTransport}, []string{ModePingpong} }, "no case to run"},
	} {
		cfg := DefaultConfig()
		tc.edit(cfg)
		if err := cfg.Prepare(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Prepare() = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}

	var notes bytes.Buffer
	cfg := DefaultConfig()
	cfg.Transports, cfg.Producers, cfg.Log = transports(t, "ring", "pipe", "mpmc"), 2, &notes
	if err := cfg.Prepare(); err != nil {
		t.Fatalf("Prepare() = %v, want mpmc stream kept", err)
	}
	if got := names(cfg.Transports); !slices.Equal(got, []string{"mpmc"}) || !slices.Equal(cfg.Modes, []string{ModeStream}) {
		t.Errorf("transports %q modes %q, want [mpmc] [stream]", got, cfg.Modes)
	}
	for _, want := range []string{"skipping ring, pipe: only mpmc runs several producers or consumers", "skipping mpmc pingpong"} {
		if !strings.Contains(notes.String(), want) {
			t.Errorf("notes lack %q:\n%s", want, notes.String())
		}
	}
}

// TestLatencies checks the histogram's figures against samples whose
// quantiles are known: exact below 2048 ns, within 0.1% above, and the
// values out of range clamped.
func TestLatencies(t *testing.T) {
	l := newLatencies()
	if s := l.summary(); s != nil {
		t.Errorf("summary of no latencies = %+v, want nil", *s)
	}
	for v := 100; v >= 1; v-- {
		l.record(time.Duration(v))
	}
	l.record(1 << 20)
	l.record(1 << 21)
	s := l.summary()
	if s == nil || s.P50 != 51 || !within(s.P99, 1<<20) || !within(s.P999, 1<<21) || !within(s.Max, 1<<21) {
		t.Errorf("summary = %+v, want p50 51, p99 %d, p99.9 and max %d (within 0.1%%)", s, 1<<20, 1<<21)
	}

	clamped := newLatencies()
	clamped.record(-time.Microsecond)
	clamped.record(time.Minute)
	if s := clamped.summary(); clamped.count() != 2 || s.P50 != 0 || !within(s.Max, int64(maxLatency)) {
		t.Errorf("after -1µs and 1m: count %d, summary %+v, want 2, p50 0 and max %v", clamped.count(), s, maxLatency)
	}
}

// within reports whether got is want to three significant digits.
func within(got, want int64) bool { return math.Abs(float64(got-want)) <= float64(want)/1000 }

func TestStampRoundTrip(t *testing.T) {
	for _, size := range []int{1, 3, 8, 64} {
		msg := make([]byte, size)
		for _, seq := range []uint64{0, 1, 255, 256, 1<<40 + 7} {
			stamp(msg, seq)
			if got, want := seqOf(msg), seq&seqMask(size); got != want {
				t.Errorf("size %d: seqOf(stamp(%d)) = %d, want %d", size, seq, got, want)
			}
		}
	}
}

// TestMessageTransports runs the name- and address-based transports
// briefly: every case completes with every message accounted for.
func TestMessageTransports(t *testing.T) {
	rows, _ := runRows(t, func(c *Config) {
		c.Sizes, c.Transports = []int{64}, transports(t, "conn", "connfb", "pipefb", "unix", "tcp", "fifo", "rawpipe", "rawfifo", "rawunix", "rawtcp")
	})
	if len(rows) != 18 {
		t.Errorf("%d rows, want 18 (10 stream + 8 pingpong: the FIFOs are one-way)", len(rows))
	}
	for _, r := range rows {
		if r.MsgsPerSec <= 0 {
			t.Errorf("%s: msgs_per_sec = %v", rowName(r), r.MsgsPerSec)
		}
	}
}

// TestMPMC runs the MPMC ring with one producer and one consumer beside
// the SPSC ring, in both modes, and with several of each, where the other
// transports and pingpong are dropped with a note.
func TestMPMC(t *testing.T) {
	rows, _ := runRows(t, func(c *Config) { c.Sizes, c.Transports = []int{64}, transports(t, "ring", "mpmc") })
	var got []string
	for _, r := range rows {
		got = append(got, r.Mode+" "+r.Transport)
		if r.Producers != 1 || r.Consumers != 1 || r.Messages < 1 {
			t.Errorf("%s: producers=%v consumers=%v messages=%v, want 1, 1 and some", rowName(r), r.Producers, r.Consumers, r.Messages)
		}
		if r.Transport == "mpmc" && r.RingRatio == nil {
			t.Errorf("%s: no ring_ratio beside the ring", rowName(r))
		}
	}
	if want := []string{"stream ring", "stream mpmc", "pingpong ring", "pingpong mpmc"}; !slices.Equal(got, want) {
		t.Errorf("rows = %q, want %q", got, want)
	}

	for _, size := range []int{64, 7} { // 7: too short to carry a producer's index
		t.Run(fmt.Sprintf("2x3/size=%d", size), func(t *testing.T) {
			rows, notes := runRows(t, func(c *Config) {
				c.Sizes, c.Transports = []int{size}, transports(t, "ring", "pipe", "mpmc")
				c.Producers, c.Consumers, c.Batch = 2, 3, 8
			})
			if len(rows) != 1 || rows[0].Transport != "mpmc" || rows[0].Mode != ModeStream {
				t.Fatalf("rows = %v, want one, mpmc stream", rows)
			}
			r := rows[0]
			if r.Producers != 2 || r.Consumers != 3 || r.Batch != 8 || r.Messages < 1 {
				t.Errorf("producers=%v consumers=%v batch=%v messages=%v, want 2, 3, 8 and some", r.Producers, r.Consumers, r.Batch, r.Messages)
			}
			for _, want := range []string{"skipping ring, pipe: only mpmc runs several producers or consumers", "skipping mpmc pingpong"} {
				if !strings.Contains(notes, want) {
					t.Errorf("notes lack %q:\n%s", want, notes)
				}
			}
		})
	}
}

func TestCheckMPMCTotals(t *testing.T) {
	sent := []uint64{4, 3}
	for _, tc := range []struct {
		name         string
		counts, sums []uint64
		ok           bool
	}{
		{"all once", []uint64{4, 3}, []uint64{0 + 1 + 2 + 3, 0 + 1 + 2}, true},
		{"one lost", []uint64{3, 3}, []uint64{0 + 1 + 2, 0 + 1 + 2}, false},
		{"one lost, another twice", []uint64{4, 3}, []uint64{0 + 1 + 2 + 2, 0 + 1 + 2}, false},
		{"one twice", []uint64{4, 4}, []uint64{0 + 1 + 2 + 3, 0 + 1 + 2 + 2}, false},
	} {
		err := checkMPMCTotals(sent, tc.counts, tc.sums)
		if (err == nil) != tc.ok {
			t.Errorf("%s: checkMPMCTotals = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	// Sums wrap modulo 2^64 on the consumers' side and here alike.
	n := uint64(1)<<33 + 1
	if err := checkMPMCTotals([]uint64{n}, []uint64{n}, []uint64{n * (n - 1) / 2}); err != nil {
		t.Errorf("large count: %v", err)
	}
}

func TestMPMCTally(t *testing.T) {
	msg := func(producer, seq uint64) []byte {
		b := make([]byte, 16)
		stamp(b, producer<<mpmcIndexShift|seq)
		return b
	}
	good := newMPMCTally(16, 2)
	for _, m := range [][]byte{msg(0, 0), msg(1, 0), msg(0, 2), msg(1, 5), msg(0, 3)} {
		good.take(m)
	}
	if good.err != nil || good.n != 5 || !slices.Equal(good.counts, []uint64{3, 2}) || !slices.Equal(good.sums, []uint64{5, 5}) {
		t.Errorf("err=%v n=%d counts=%v sums=%v, want nil, 5, [3 2], [5 5]", good.err, good.n, good.counts, good.sums)
	}
	for _, tc := range []struct {
		name string
		msgs [][]byte
	}{
		{"repeated", [][]byte{msg(0, 0), msg(0, 1), msg(0, 1)}},
		{"out of order", [][]byte{msg(1, 4), msg(1, 3)}},
		{"unknown producer", [][]byte{msg(2, 0)}},
		{"short", [][]byte{msg(0, 0)[:15]}},
	} {
		tl := newMPMCTally(16, 2)
		for _, m := range tc.msgs {
			tl.take(m)
		}
		if tl.err == nil {
			t.Errorf("%s: no error", tc.name)
		} else {
			t.Logf("%s: %v", tc.name, tl.err)
		}
	}
}

// TestWindow checks where every runner puts its measurement window:
// opened once and closed once, after the messages it counts (stream: all
// that were sent, one more than the timed ones; pingpong: the round trips)
// and before anything is closed (the peers are still running).
func TestWindow(t *testing.T) {
	type seen struct {
		opened, closed int
		msgs           uint64
		alive          bool
	}
	var log []*seen
	saved := windowObservers
	t.Cleanup(func() { windowObservers = saved })
	windowObservers = append(slices.Clone(saved), func(c *caseSpec, pids sidePIDs) func(uint64) func(*Result) {
		s := &seen{opened: 1}
		log = append(log, s)
		return func(msgs uint64) func(*Result) {
			s.closed++
			s.msgs = msgs
			s.alive = livePeerCount() > 0
			return nil
		}
	})
	rows, _ := runRows(t, func(c *Config) {
		c.Sizes, c.Transports, c.Batch = []int{64}, transports(t, "ring", "pipe", "chan", "mpmc", "unix"), 5
	})
	if len(log) != len(rows) {
		t.Fatalf("%d windows for %d cases", len(log), len(rows))
	}
	for i, r := range rows {
		s := log[i]
		want := r.Messages
		if r.Mode == ModeStream {
			want++
		}
		if s.opened != 1 || s.closed != 1 || s.msgs != want || !s.alive {
			t.Errorf("%s: window opened %d, closed %d times after %d messages (peers running: %v), want 1, 1, %d, true", rowName(r), s.opened, s.closed, s.msgs, s.alive, want)
		}
	}
}

// TestOOB runs the out-of-band modes briefly with a small queue.
func TestOOB(t *testing.T) {
	rows, _ := runRows(t, func(c *Config) {
		c.Modes, c.Duration, c.Sizes, c.Capacity = []string{ModeUrgent, ModeFlush}, 50*time.Millisecond, []int{64}, 256<<10
	})
	if len(rows) != 2 || rows[0].Mode != ModeUrgent || rows[1].Mode != ModeFlush {
		t.Fatalf("rows = %v, want urgent and flush for the ring", rows)
	}
	for _, r := range rows {
		if r.RTTP50 == nil || r.DrainSeconds == nil || r.Messages < 1 {
			t.Errorf("%s: rtt_p50_ns=%v drain_seconds=%v messages=%v", rowName(r), r.RTTP50, r.DrainSeconds, r.Messages)
		}
	}
}

// TestHotPathAllocs checks that the stream loops allocate nothing per
// message: stamping and Send, or stamping a batch and SendBatch, on the
// producer's side, RecvBatch with the consumers' checks on the other (a
// peer in a goroutine of this process, counted by AllocsPerRun too), over
// the SPSC and the MPMC ring.
func TestHotPathAllocs(t *testing.T) {
	const size, batchLen = 64, 32
	for _, tc := range []struct {
		name  string
		mpmc  bool
		batch int
	}{{"ring/Send", false, 1}, {"ring/SendBatch", false, batchLen}, {"mpmc/SendBatch", true, batchLen}} {
		t.Run(tc.name, func(t *testing.T) {
			var l *testLink
			if tc.mpmc {
				l = openMPMCConsumer(t, size)
			} else {
				l = openLink(t, ringTransport, size, true)
			}
			batch := newBatch(tc.batch, size)
			var seq uint64
			allocs := testing.AllocsPerRun(2000, func() {
				var err error
				if stampBatch(batch, seq, 0); tc.batch == 1 {
					err = l.s.Send(batch[0])
					seq++
				} else {
					var n int
					n, err = l.s.(batchSender).SendBatch(batch)
					seq += uint64(n)
				}
				if err != nil {
					t.Fatal(err)
				}
			})
			if err := l.finish(seq); err != nil {
				t.Fatal(err)
			}
			if allocs != 0 {
				t.Errorf("allocations per call of %d messages = %v, want 0", tc.batch, allocs)
			}
		})
	}
}

// openMPMCConsumer runs one mpmc stream consumer (roleMPMCRecv) in a
// goroutine over a new MPMC segment, and returns a link whose sender is a
// producer on it (index 0 of 1); its finish checks the consumer's counts
// and sums as well.
func openMPMCConsumer(tb testing.TB, size int) *testLink {
	tb.Helper()
	c := &caseSpec{transport: mpmcTransport, mode: ModeStream, size: size, capacity: 1 << 16, producers: 1, consumers: 1, inProcess: true}
	lc := &linkCase{c: c, role: roleMPMCRecv}
	tb.Cleanup(func() { lc.close() })
	rl := ringLink{mpmc: true}
	seg, err := rl.create(c)
	if err != nil {
		tb.Fatal(err)
	}
	lc.l.onClose(seg.Close)
	f, err := seg.File()
	if err != nil {
		tb.Fatal(err)
	}
	p, err := rl.producer(seg, 0)
	if err != nil {
		f.Close()
		tb.Fatal(err)
	}
	lc.l.local = &end{s: p}
	if lc.peer, err = startPeer(peerSpec{Role: roleMPMCRecv, Size: size, Producers: 1}, c, []*os.File{f}, nil, nil); err != nil {
		tb.Fatal(err)
	}
	if err := lc.peer.awaitReady(); err != nil {
		tb.Fatal(err)
	}
	return &testLink{lc: lc, s: lc.l.local.s, check: func(rep peerReport, sent uint64) error {
		return checkMPMCTotals([]uint64{sent}, rep.Counts, rep.Sums)
	}}
}

// TestOverhead runs every transport that has a baseline beside it, over
// two rounds, and checks the baselines, bounds and ratios.
func TestOverhead(t *testing.T) {
	rows, _ := runRows(t, func(c *Config) {
		c.Sizes, c.Modes, c.Transports, c.Rounds = []int{64}, []string{ModeStream}, OverheadTransports(), 2
	})
	want := map[string]string{"conn": "ring", "pipefb": "rawpipe", "fifo": "rawfifo", "unix": "rawunix", "connfb": "rawunix", "tcp": "rawtcp"}
	var got []string
	for _, r := range rows {
		got = append(got, r.Transport)
		if r.Rounds != 2 {
			t.Errorf("%s: rounds = %v, want 2", r.Transport, r.Rounds)
		}
		if (r.Transport == "ring" || r.Transport == "conn") != (r.Batch == 32) {
			t.Errorf("%s: batch = %v, want 32 for ring and conn only", r.Transport, r.Batch)
		}
		base, ok := want[r.Transport]
		if !ok {
			if r.Baseline != "" {
				t.Errorf("%s: baseline = %v, want none", r.Transport, r.Baseline)
			}
			continue
		}
		bound := 1.3
		if r.Transport == "conn" {
			bound = 1.1
		}
		if r.Baseline != base || r.BaselineBound != bound || len(r.BaselineRatios) != 2 || r.BaselineRatio == nil || *r.BaselineRatio <= 0 {
			t.Errorf("%s: baseline=%v bound=%v ratio=%v ratios=%v, want %s, %v, a positive ratio and 2 rounds", r.Transport, r.Baseline, r.BaselineBound, r.BaselineRatio, r.BaselineRatios, base, bound)
		}
	}
	wantOrder := []string{"ring", "conn", "pipe", "rawpipe", "pipefb", "rawfifo", "fifo", "rawunix", "unix", "connfb", "rawtcp", "tcp"}
	if !slices.Equal(got, wantOrder) {
		t.Errorf("transports = %q, want %q", got, wantOrder)
	}
}

// TestMedianRows checks the choice of each case's row over rounds and the
// per-round overhead ratios.
func TestMedianRows(t *testing.T) {
	p50 := func(ns int64) *int64 { return &ns }
	row := func(tr, mode string, rate float64, rtt *int64) Result {
		return Result{Transport: tr, Mode: mode, Size: 64, MsgsPerSec: rate, RTTP50: rtt}
	}
	rounds := [][]Result{
		{row("rawunix", ModeStream, 100, nil), row("unix", ModeStream, 50, nil), row("rawunix", ModePingpong, 1, p50(10)), row("unix", ModePingpong, 1, p50(30))},
		{row("rawunix", ModeStream, 300, nil), row("unix", ModeStream, 250, nil), row("rawunix", ModePingpong, 1, p50(20)), row("unix", ModePingpong, 1, p50(22))},
		{row("rawunix", ModeStream, 200, nil), row("unix", ModeStream, 180, nil), row("rawunix", ModePingpong, 1, p50(40)), row("unix", ModePingpong, 1, p50(44))},
	}
	results := medianRows(rounds)
	setBaselineRatios(rounds, results)
	for i, want := range []struct {
		rate   float64
		p50    int64
		ratio  float64
		ratios []float64
	}{
		{rate: 200},
		{rate: 180, ratio: 1.2, ratios: []float64{2, 1.2, 200.0 / 180}},
		{p50: 20},
		{p50: 30, ratio: 1.1, ratios: []float64{3, 1.1, 1.1}},
	} {
		r := results[i]
		if r.MsgsPerSec != want.rate && r.RTTP50 == nil || r.RTTP50 != nil && *r.RTTP50 != want.p50 || r.Rounds != 3 {
			t.Errorf("row %d (%s %s): msgs/s %v p50 %v rounds %d, want the median round: %v %v 3", i, r.Transport, r.Mode, r.MsgsPerSec, r.RTTP50, r.Rounds, want.rate, want.p50)
		}
		if want.ratios == nil {
			if r.Baseline != "" || r.BaselineRatio != nil {
				t.Errorf("row %d (%s): baseline %q ratio %v, want none", i, r.Transport, r.Baseline, r.BaselineRatio)
			}
			continue
		}
		if r.Baseline != "rawunix" || r.BaselineRatio == nil || math.Abs(*r.BaselineRatio-want.ratio) > 1e-9 || len(r.BaselineRatios) != 3 {
			t.Fatalf("row %d (%s %s): baseline %q ratio %v ratios %v, want rawunix, %v, %v", i, r.Transport, r.Mode, r.Baseline, r.BaselineRatio, r.BaselineRatios, want.ratio, want.ratios)
		}
		for k, x := range want.ratios {
			if math.Abs(r.BaselineRatios[k]-x) > 1e-9 {
				t.Errorf("row %d round %d: ratio %v, want %v", i, k, r.BaselineRatios[k], x)
			}
		}
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of 1..4 = %v, want 2.5", m)
	}
}

// TestRoundsSpread checks the spread of a case's rounds on its headline
// figure: over SpreadLimit where the rounds disagree, under it where they
// are close, none for one round or a round without its figure.
func TestRoundsSpread(t *testing.T) {
	ns := func(v int64) *int64 { return &v }
	stream := func(rate float64) Result { return Result{Transport: "ring", Mode: ModeStream, MsgsPerSec: rate} }
	pingpong := func(p50 int64) Result {
		return Result{Transport: "ring", Mode: ModePingpong, MsgsPerSec: 1, RTTP50: ns(p50)}
	}
	for _, tc := range []struct {
		name   string
		rounds []Result
		lo, hi float64 // 0, 0: no spread
	}{
		{"pingpong bimodal", []Result{pingpong(400), pingpong(1600), pingpong(450)}, 400, 1600},
		{"pingpong close", []Result{pingpong(400), pingpong(430), pingpong(410)}, 400, 430},
		{"stream bimodal", []Result{stream(3e6), stream(1e6), stream(2.9e6)}, 1e6, 3e6},
		{"stream close", []Result{stream(3e6), stream(2.6e6)}, 2.6e6, 3e6},
		{"one round", []Result{pingpong(400)}, 0, 0},
		{"no figure", []Result{stream(3e6), stream(0)}, 0, 0},
	} {
		rounds := make([][]Result, len(tc.rounds))
		for k, r := range tc.rounds {
			rounds[k] = []Result{r}
		}
		r := medianRows(rounds)[0]
		if tc.hi == 0 {
			if r.RoundsSpread != nil || r.RoundsRange != nil {
				t.Errorf("%s: rounds_spread set: %v, rounds_range %v; want neither", tc.name, r.RoundsSpread != nil, r.RoundsRange)
			}
			continue
		}
		if r.RoundsSpread == nil || math.Abs(*r.RoundsSpread-tc.hi/tc.lo) > 1e-9 || !slices.Equal(r.RoundsRange, []float64{tc.lo, tc.hi}) {
			t.Errorf("%s: rounds_spread %v, rounds_range %v, want %v and [%v %v]", tc.name, r.RoundsSpread, r.RoundsRange, tc.hi/tc.lo, tc.lo, tc.hi)
			continue
		}
		if disagree := *r.RoundsSpread > SpreadLimit; disagree != strings.HasSuffix(tc.name, "bimodal") {
			t.Errorf("%s: spread %.2f over the limit %v: %v", tc.name, *r.RoundsSpread, SpreadLimit, disagree)
		}
	}
}

// TestPeerSpecRoundTrip checks that what a peer decodes from its
// environment is the spec its case encoded, the spin included.
func TestPeerSpecRoundTrip(t *testing.T) {
	for _, want := range []peerSpec{
		{Role: roleEcho, Transport: "ring", Size: 64, Files: 2, Spin: -1},
		{Role: roleHubClient, Size: HubMessageSize, Files: 9, Index: 500, Duration: time.Second, Spin: 10 * time.Microsecond},
	} {
		v, err := encodePeerSpec(want)
		if err != nil {
			t.Fatalf("encodePeerSpec(%+v): %v", want, err)
		}
		if got, err := decodePeerSpec(v); err != nil || got != want {
			t.Errorf("decodePeerSpec(%s) = %+v, %v; want %+v", v, got, err, want)
		}
	}
	if _, err := decodePeerSpec(`{"role": 1}`); err == nil || !strings.Contains(err.Error(), peerEnv) {
		t.Errorf("decodePeerSpec of a bad spec: %v, want an error naming %s", err, peerEnv)
	}
}

// TestSpinReachesPeer starts a ring stream's consumer in a peer process
// with a SpinTime and watches it wait on the empty ring: with a negative
// one it sleeps at once; with an hour's, it is still spinning, with no
// sleep counted, after a moment.
func TestSpinReachesPeer(t *testing.T) {
	for _, tc := range []struct {
		spin  time.Duration
		sleep bool
	}{{-1, true}, {time.Hour, false}} {
		t.Run(tc.spin.String(), func(t *testing.T) {
			c := &caseSpec{transport: ringTransport, mode: ModeStream, size: 64, capacity: 1 << 16, batch: 1, producers: 1, consumers: 1,
				duration: time.Minute, spin: tc.spin}
			lc := &linkCase{c: c, role: roleStream}
			t.Cleanup(func() { lc.close() })
			if err := lc.setup(); err != nil {
				t.Fatalf("set up: %v", err)
			}
			if pid := lc.peer.pid(); pid == os.Getpid() {
				t.Fatalf("consumer in this process (pid %d), want a peer process", pid)
			}
			sleeps := lc.l.local.sleeps
			deadline := time.Now().Add(200 * time.Millisecond)
			if tc.sleep {
				deadline = time.Now().Add(5 * time.Second)
			}
			for sleeps() == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if got := sleeps(); (got > 0) != tc.sleep {
				t.Errorf("the peer's consumer slept %d times waiting on an empty ring with spin %v; want it asleep: %v", got, tc.spin, tc.sleep)
			}
		})
	}
}

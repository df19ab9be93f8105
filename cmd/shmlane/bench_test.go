package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shmlane/shmlane/ring"
)

// TestBenchJSON runs every transport and mode briefly, with the peers in
// child processes, and checks the JSON report.
func TestBenchJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "-duration", "20ms", "-sizes", "8,1k", "-capacity", "64k", "-json"}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("run(%q) = %d; stderr:\n%s", args, code, stderr.String())
	}
	var rows []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &rows); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, stdout.String())
	}
	if len(rows) != 12 {
		t.Fatalf("got %d rows, want 12 (3 transports × 2 sizes × 2 modes)", len(rows))
	}
	progress := 0
	for line := range strings.Lines(stderr.String()) {
		if strings.HasPrefix(line, "[") {
			progress++
		}
	}
	if n := progress; n != 12 {
		t.Errorf("got %d progress lines on stderr, want 12:\n%s", n, stderr.String())
	}
	for _, row := range rows {
		name := row["transport"].(string) + " " + row["mode"].(string)
		for _, key := range []string{"transport", "mode", "size", "producers", "consumers", "messages", "seconds", "msgs_per_sec", "mb_per_sec", "rtt_p50_ns", "rtt_p99_ns", "syscalls_per_msg", "ring_ratio"} {
			if _, ok := row[key]; !ok {
				t.Errorf("%s: no %q field", name, key)
			}
		}
		if row["messages"].(float64) < 1 || row["msgs_per_sec"].(float64) <= 0 || row["seconds"].(float64) <= 0 {
			t.Errorf("%s: messages=%v msgs_per_sec=%v seconds=%v, want all positive", name, row["messages"], row["msgs_per_sec"], row["seconds"])
		}
		pingpong := row["mode"] == modePingpong
		if (row["rtt_p50_ns"] != nil) != pingpong || (row["rtt_p99_ns"] != nil) != pingpong {
			t.Errorf("%s: rtt_p50_ns=%v rtt_p99_ns=%v, want numbers for pingpong only", name, row["rtt_p50_ns"], row["rtt_p99_ns"])
		}
		if pingpong && row["rtt_p50_ns"].(float64) > row["rtt_p99_ns"].(float64) {
			t.Errorf("%s: p50 %v > p99 %v", name, row["rtt_p50_ns"], row["rtt_p99_ns"])
		}
		// Null where the eBPF probe cannot run (not root), numbers where
		// it can: a pipe pays at least about one system call per message.
		sc, ok := row["syscalls_per_msg"].(map[string]any)
		prod, pok := sc["producer"].(float64)
		cons, cok := sc["consumer"].(float64)
		switch {
		case !ok || len(sc) != 2:
			t.Errorf("%s: syscalls_per_msg = %v, want {producer, consumer}", name, row["syscalls_per_msg"])
		case sc["producer"] == nil && sc["consumer"] == nil:
		case !pok || !cok || prod < 0 || cons < 0:
			t.Errorf("%s: syscalls_per_msg = %v, want two numbers >= 0 or two nulls", name, row["syscalls_per_msg"])
		case row["transport"] == "pipe" && (prod < 0.5 || cons < 0.5):
			t.Errorf("%s: syscalls_per_msg = %v, want about 1 or more per message on each side", name, row["syscalls_per_msg"])
		}
		if row["transport"] == "ring" && row["ring_ratio"] != 1.0 {
			t.Errorf("%s: ring_ratio = %v, want 1", name, row["ring_ratio"])
		}
		wantBatch := 0.0 // absent
		if row["transport"] == "ring" && !pingpong {
			wantBatch = 32
		}
		if b, _ := row["batch"].(float64); b != wantBatch {
			t.Errorf("%s: batch = %v, want %v", name, row["batch"], wantBatch)
		}
	}
}

func TestBenchTable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "-duration", "20ms", "-sizes", "64", "-transports", "pipe,ring", "-mode", "pingpong"}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("run(%q) = %d; stderr:\n%s", args, code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"machine:", "ring/x", "p50 RTT", "ring: ", "pipe: "} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	for _, tr := range []string{"pipe", "ring"} {
		found := false
		for line := range strings.Lines(out) {
			if f := strings.Fields(line); len(f) == 10 && f[0] == "pingpong" && f[1] == "64B" && f[2] == tr && strings.HasSuffix(f[5], "µs") {
				found = true
			}
		}
		if !found {
			t.Errorf("table has no pingpong 64B %s row with RTTs:\n%s", tr, out)
		}
	}
	if strings.Contains(out, "chan: ") {
		t.Errorf("table's footer describes chan, which did not run:\n%s", out)
	}
}

// TestBenchInterrupt kills the peer of a running case: the case must end
// with an error that says so, and leave no peer behind.
func TestBenchInterrupt(t *testing.T) {
	for _, tr := range []string{"ring", "pipe"} {
		t.Run(tr, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				var stdout, stderr bytes.Buffer
				done <- runBench([]string{"-duration", "10s", "-transports", tr, "-sizes", "64", "-mode", "stream"}, &stdout, &stderr)
			}()
			deadline := time.Now().Add(5 * time.Second)
			for livePeerCount() == 0 {
				if time.Now().After(deadline) {
					t.Fatal("no peer started")
				}
				time.Sleep(time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			killPeers("killed by the test")
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "killed by the test") {
					t.Errorf("runBench = %v, want an error saying the peer was killed by the test", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("runBench still running 10s after its peer was killed")
			}
			if n := livePeerCount(); n != 0 {
				t.Errorf("%d peers left running", n)
			}
		})
	}
}

func livePeerCount() int {
	livePeers.Lock()
	defer livePeers.Unlock()
	return len(livePeers.set)
}

func TestQuantiles(t *testing.T) {
	var samples []uint32
	for v := uint32(1); v <= 100; v++ {
		samples = append(samples, v)
	}
	samples = append(samples, 1<<20, 1<<21) // beyond the fine buckets
	slices.Reverse(samples)
	got := quantiles(samples, 0, 0.5, 0.99, 1)
	want := []int64{1, 51, 1 << 20, 1 << 21}
	if !slices.Equal(got, want) {
		t.Errorf("quantiles = %v, want %v", got, want)
	}
	if got := quantiles(nil, 0.5); !slices.Equal(got, []int64{0}) {
		t.Errorf("quantiles(nil) = %v, want [0]", got)
	}
}

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

// TestBenchMessageTransports runs the name- and address-based transports
// briefly: every case completes with every message accounted for.
func TestBenchMessageTransports(t *testing.T) {
	rows, _ := benchJSON(t, "-duration", "20ms", "-sizes", "64", "-transports", "conn,connfb,pipefb,unix,tcp,fifo,rawpipe,rawfifo,rawunix,rawtcp")
	if len(rows) != 18 {
		t.Errorf("%d rows, want 18 (10 stream + 8 pingpong: the FIFOs are one-way)", len(rows))
	}
	for _, row := range rows {
		if row["msgs_per_sec"].(float64) <= 0 {
			t.Errorf("%v %v: msgs_per_sec = %v", row["transport"], row["mode"], row["msgs_per_sec"])
		}
	}
}

// benchJSON runs bench with args and -json and returns its rows and
// stderr.
func benchJSON(t *testing.T, args ...string) ([]map[string]any, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args = append(append([]string{"bench"}, args...), "-json")
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("run(%q) = %d; stderr:\n%s", args, code, stderr.String())
	}
	var rows []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &rows); err != nil {
		t.Fatalf("%q: output is not a JSON array: %v\n%s", args, err, stdout.String())
	}
	return rows, stderr.String()
}

// TestBenchMPMC runs the MPMC ring with one producer and one consumer
// beside the SPSC ring, in both modes, and with several of each, where
// the other transports and pingpong are skipped with a note.
func TestBenchMPMC(t *testing.T) {
	rows, _ := benchJSON(t, "-duration", "20ms", "-sizes", "64", "-transports", "ring,mpmc")
	var got []string
	for _, row := range rows {
		got = append(got, row["mode"].(string)+" "+row["transport"].(string))
		if row["producers"] != 1.0 || row["consumers"] != 1.0 || row["messages"].(float64) < 1 {
			t.Errorf("%v %v: producers=%v consumers=%v messages=%v, want 1, 1 and some", row["mode"], row["transport"], row["producers"], row["consumers"], row["messages"])
		}
		if row["transport"] == "mpmc" && row["ring_ratio"] == nil {
			t.Errorf("%v mpmc: no ring_ratio beside the ring", row["mode"])
		}
	}
	if want := []string{"stream ring", "stream mpmc", "pingpong ring", "pingpong mpmc"}; !slices.Equal(got, want) {
		t.Errorf("rows = %q, want %q", got, want)
	}

	for _, size := range []string{"64", "7"} { // 7: too short to carry a producer's index
		t.Run("2x3/size="+size, func(t *testing.T) {
			rows, stderr := benchJSON(t, "-duration", "20ms", "-sizes", size, "-transports", "ring,pipe,mpmc", "-producers", "2", "-consumers", "3", "-batch", "8")
			if len(rows) != 1 || rows[0]["transport"] != "mpmc" || rows[0]["mode"] != modeStream {
				t.Fatalf("rows = %v, want one, mpmc stream", rows)
			}
			row := rows[0]
			if row["producers"] != 2.0 || row["consumers"] != 3.0 || row["batch"] != 8.0 || row["messages"].(float64) < 1 {
				t.Errorf("producers=%v consumers=%v batch=%v messages=%v, want 2, 3, 8 and some", row["producers"], row["consumers"], row["batch"], row["messages"])
			}
			for _, want := range []string{"skipping ring, pipe: only mpmc runs several producers or consumers", "skipping mpmc pingpong"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}

	for _, args := range [][]string{
		{"-transports", "ring,pipe", "-producers", "2"},
		{"-transports", "mpmc", "-consumers", "2", "-mode", "pingpong"},
		{"-transports", "mpmc", "-producers", "0"},
		{"-transports", "fifo", "-mode", "pingpong"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"bench"}, args...), &stdout, &stderr); code != 2 {
			t.Errorf("bench %q = exit %d, want 2 (nothing can run); stderr:\n%s", args, code, stderr.String())
		}
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

// TestBenchWindow checks where every runner puts its measurement window:
// opened once and closed once, after the messages it counts (stream: all
// that were sent, one more than the timed ones; pingpong: the round trips)
// and before anything is closed (the peers are still running).
func TestBenchWindow(t *testing.T) {
	type seen struct {
		opened, closed int
		msgs           uint64
		alive          bool
	}
	var log []*seen
	saved := windowObservers
	t.Cleanup(func() { windowObservers = saved })
	windowObservers = append(slices.Clone(saved), func(c benchCase, pids sidePIDs) func(uint64) func(*caseResult) {
		s := &seen{opened: 1}
		log = append(log, s)
		return func(msgs uint64) func(*caseResult) {
			s.closed++
			s.msgs = msgs
			s.alive = livePeerCount() > 0 || c.transport == chanTransport
			return nil
		}
	})
	rows, _ := benchJSON(t, "-duration", "20ms", "-sizes", "64", "-transports", "ring,pipe,chan,mpmc,unix", "-batch", "5")
	if len(log) != len(rows) {
		t.Fatalf("%d windows for %d cases", len(log), len(rows))
	}
	for i, row := range rows {
		s, name := log[i], row["transport"].(string)+" "+row["mode"].(string)
		want := uint64(row["messages"].(float64))
		if row["mode"] == modeStream {
			want++
		}
		if s.opened != 1 || s.closed != 1 || s.msgs != want || !s.alive {
			t.Errorf("%s: window opened %d, closed %d times after %d messages (peers running: %v), want 1, 1, %d, true", name, s.opened, s.closed, s.msgs, s.alive, want)
		}
	}
}

// TestBenchOOB runs the out-of-band modes briefly with a small queue.
func TestBenchOOB(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "-mode", "oob", "-duration", "50ms", "-sizes", "64", "-capacity", "256k", "-json"}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("run(%q) = %d; stderr:\n%s", args, code, stderr.String())
	}
	var rows []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &rows); err != nil {
		t.Fatalf("output is not a JSON array: %v", err)
	}
	if len(rows) != 2 || rows[0]["mode"] != modeUrgent || rows[1]["mode"] != modeFlush {
		t.Fatalf("rows = %v, want urgent and flush for the ring", rows)
	}
	for _, row := range rows {
		if row["rtt_p50_ns"] == nil || row["drain_seconds"] == nil || row["messages"].(float64) < 1 {
			t.Errorf("%v: rtt_p50_ns=%v drain_seconds=%v messages=%v", row["mode"], row["rtt_p50_ns"], row["drain_seconds"], row["messages"])
		}
	}
}

// TestBenchHotPathAllocs checks that the stream loops allocate nothing per
// message: stamping a batch and SendBatch on the producer's side, RecvBatch
// with the consumers' checks on the other (a goroutine of this process,
// counted by AllocsPerRun too), over the SPSC and the MPMC ring.
func TestBenchHotPathAllocs(t *testing.T) {
	const size, batchLen = 64, 32
	for _, mpmc := range []bool{false, true} {
		name := map[bool]string{false: "ring", true: "mpmc"}[mpmc]
		t.Run(name, func(t *testing.T) {
			cfg := &ring.Config{Capacity: 1 << 16}
			var (
				seg    *ring.Segment
				err    error
				send   func([][]byte) (int, error)
				closeP func() error
				recv   func() error
			)
			if mpmc {
				seg, err = ring.CreateMPMC(cfg)
			} else {
				seg, err = ring.Create(cfg)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer seg.Close()
			var check func() error
			if mpmc {
				p, err := seg.MPMCProducer(nil)
				if err != nil {
					t.Fatal(err)
				}
				c, err := seg.MPMCConsumer(nil)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				tally := newMPMCTally(size, 1)
				take := tally.take
				send, closeP = p.SendBatch, p.Close
				recv = func() error { _, err := c.RecvBatch(0, take); return err }
				check = func() error { return tally.err }
			} else {
				p, err := seg.Producer(nil)
				if err != nil {
					t.Fatal(err)
				}
				c, err := seg.Consumer(nil)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				s := newStreamCounter(size)
				take := s.take
				send, closeP = p.SendBatch, p.Close
				recv = func() error { _, err := c.RecvBatch(0, take); return err }
				check = func() error { return s.err }
			}
			done := make(chan error, 1)
			go func() {
				for {
					if err := recv(); err != nil {
						if errors.Is(err, io.EOF) {
							err = nil
						}
						done <- err
						return
					}
				}
			}()
			batch := newBatch(batchLen, size)
			var seq uint64
			allocs := testing.AllocsPerRun(2000, func() {
				stampBatch(batch, seq, 0)
				n, err := send(batch)
				if err != nil {
					t.Fatal(err)
				}
				seq += uint64(n)
			})
			closeP()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if err := check(); err != nil {
				t.Fatal(err)
			}
			if allocs != 0 {
				t.Errorf("allocations per batch of %d = %v, want 0", batchLen, allocs)
			}
		})
	}
}

// TestBenchOverhead runs the overhead preset: every fallback beside its
// bare mechanism and the connection beside the ring at -batch 1, over two
// rounds, and checks the ratios in the JSON and the table.
func TestBenchOverhead(t *testing.T) {
	rows, _ := benchJSON(t, "-duration", "20ms", "-sizes", "64", "-mode", "stream", "-transports", "overhead", "-rounds", "2")
	want := map[string]string{"conn": "ring", "pipefb": "rawpipe", "fifo": "rawfifo", "unix": "rawunix", "connfb": "rawunix", "tcp": "rawtcp"}
	var got []string
	for _, row := range rows {
		tr := row["transport"].(string)
		got = append(got, tr)
		if row["rounds"] != 2.0 {
			t.Errorf("%s: rounds = %v, want 2", tr, row["rounds"])
		}
		if (tr == "ring" || tr == "conn") != (row["batch"] == 32.0) {
			t.Errorf("%s: batch = %v, want 32 for ring and conn only", tr, row["batch"])
		}
		base, ok := want[tr]
		if !ok {
			if row["baseline"] != nil {
				t.Errorf("%s: baseline = %v, want none", tr, row["baseline"])
			}
			continue
		}
		ratios, _ := row["baseline_ratios"].([]any)
		ratio, _ := row["baseline_ratio"].(float64)
		bound := 1.3
		if tr == "conn" {
			bound = 1.1
		}
		if row["baseline"] != base || row["baseline_bound"] != bound || len(ratios) != 2 || ratio <= 0 {
			t.Errorf("%s: baseline=%v bound=%v ratio=%v ratios=%v, want %s, %v, a positive ratio and 2 rounds", tr, row["baseline"], row["baseline_bound"], row["baseline_ratio"], row["baseline_ratios"], base, bound)
		}
	}
	wantOrder := []string{"ring", "conn", "pipe", "rawpipe", "pipefb", "rawfifo", "fifo", "rawunix", "unix", "connfb", "rawtcp", "tcp"}
	if !slices.Equal(got, wantOrder) {
		t.Errorf("transports = %q, want %q", got, wantOrder)
	}

	// The table: an overhead line per compared row.
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "-duration", "20ms", "-sizes", "64", "-transports", "ring,conn,rawunix,unix", "-batch", "8"}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("run(%q) = %d; stderr:\n%s", args, code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"overhead:", "stream       64B  unix     vs rawunix  ", "pingpong     64B  conn     vs ring     ", "(bound 1.3×: ", "(bound 1.1×: "} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// TestMedianRows checks the choice of each case's row over rounds and the
// per-round overhead ratios.
func TestMedianRows(t *testing.T) {
	p50 := func(ns int64) *int64 { return &ns }
	row := func(tr, mode string, rate float64, rtt *int64) caseResult {
		return caseResult{Transport: tr, Mode: mode, Size: 64, MsgsPerSec: rate, RTTP50: rtt}
	}
	rounds := [][]caseResult{
		{row("rawunix", modeStream, 100, nil), row("unix", modeStream, 50, nil), row("rawunix", modePingpong, 1, p50(10)), row("unix", modePingpong, 1, p50(30))},
		{row("rawunix", modeStream, 300, nil), row("unix", modeStream, 250, nil), row("rawunix", modePingpong, 1, p50(20)), row("unix", modePingpong, 1, p50(22))},
		{row("rawunix", modeStream, 200, nil), row("unix", modeStream, 180, nil), row("rawunix", modePingpong, 1, p50(40)), row("unix", modePingpong, 1, p50(44))},
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

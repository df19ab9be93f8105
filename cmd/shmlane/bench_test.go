package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
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
// and the MPMC ring briefly: every case completes with every message
// accounted for.
func TestBenchMessageTransports(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "-duration", "20ms", "-sizes", "64", "-transports", "conn,connfb,unix,tcp,fifo", "-json"},
		{"bench", "-duration", "20ms", "-sizes", "64", "-transports", "mpmc", "-producers", "2", "-consumers", "2", "-json"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 0 {
			t.Fatalf("run(%q) = %d; stderr:\n%s", args, code, stderr.String())
		}
		var rows []map[string]any
		if err := json.Unmarshal(stdout.Bytes(), &rows); err != nil {
			t.Fatalf("%q: output is not a JSON array: %v", args, err)
		}
		want := 9 // 5 stream + 4 pingpong (fifo is one-way)
		if args[6] == "mpmc" {
			want = 1
		}
		if len(rows) != want {
			t.Errorf("%q: %d rows, want %d", args, len(rows), want)
		}
		for _, row := range rows {
			if row["msgs_per_sec"].(float64) <= 0 {
				t.Errorf("%q: %v %v: msgs_per_sec = %v", args, row["transport"], row["mode"], row["msgs_per_sec"])
			}
			if row["transport"] == "mpmc" && (row["producers"] != 2.0 || row["consumers"] != 2.0) {
				t.Errorf("mpmc row: producers=%v consumers=%v, want 2 and 2", row["producers"], row["consumers"])
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"bench", "-transports", "ring", "-producers", "2"}, &stdout, &stderr); code != 2 {
		t.Errorf("bench -transports ring -producers 2 = exit %d, want 2 (only mpmc runs several producers)", code)
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

package main

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/shmlane/shmlane/bench"
)

// TestBenchJSON runs the default transports briefly, end to end with the
// peers in child processes, and checks the shape of the JSON report and
// the progress lines.
func TestBenchJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "-duration", "20ms", "-sizes", "8", "-capacity", "64k", "-json"}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("run(%q) = %d; stderr:\n%s", args, code, stderr.String())
	}
	var rows []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &rows); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, stdout.String())
	}
	if len(rows) != 6 {
		t.Fatalf("got %d rows, want 6 (3 transports × 2 modes)", len(rows))
	}
	progress := 0
	for line := range strings.Lines(stderr.String()) {
		if strings.HasPrefix(line, "[") {
			progress++
		}
	}
	if progress != 6 {
		t.Errorf("got %d progress lines on stderr, want 6:\n%s", progress, stderr.String())
	}
	for _, row := range rows {
		name := row["transport"].(string) + " " + row["mode"].(string)
		for _, key := range []string{"transport", "mode", "size", "producers", "consumers", "capacity", "messages", "seconds", "msgs_per_sec", "mb_per_sec",
			"rtt_p50_ns", "rtt_p99_ns", "rtt_p999_ns", "rtt_max_ns", "sleeps_per_rt", "rounds_spread", "syscalls_per_msg", "ring_ratio"} {
			if _, ok := row[key]; !ok {
				t.Errorf("%s: no %q field", name, key)
			}
		}
		pingpong := row["mode"] == "pingpong"
		for _, key := range []string{"rtt_p50_ns", "rtt_p99_ns", "rtt_p999_ns", "rtt_max_ns"} {
			if _, isNumber := row[key].(float64); isNumber != pingpong {
				t.Errorf("%s: %s = %v, want a number for pingpong only", name, key, row[key])
			}
		}
		if _, isNumber := row["sleeps_per_rt"].(float64); isNumber != (pingpong && row["transport"] == "ring") {
			t.Errorf("%s: sleeps_per_rt = %v, want a number for the ring's pingpong only", name, row["sleeps_per_rt"])
		}
		if sc, ok := row["syscalls_per_msg"].(map[string]any); !ok || len(sc) != 2 {
			t.Errorf("%s: syscalls_per_msg = %v, want {producer, consumer}", name, row["syscalls_per_msg"])
		}
		if row["transport"] == "ring" && row["ring_ratio"] != 1.0 {
			t.Errorf("%s: ring_ratio = %v, want 1", name, row["ring_ratio"])
		}
		if b, ok := row["batch"]; ok != (row["transport"] == "ring" && row["mode"] == "stream") || ok && b != 32.0 {
			t.Errorf("%s: batch = %v, want 32 for the ring's stream, absent otherwise", name, b)
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
	for _, want := range []string{"machine:", "spin 50µs (the default)", "ring/x", "p50 RTT   p99 RTT p99.9 RTT   max RTT sleep/rt", "ring: ", "pipe: "} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	for _, tr := range []string{"pipe", "ring"} {
		found := false
		for line := range strings.Lines(out) {
			f := strings.Fields(line)
			if len(f) != 13 || f[0] != "pingpong" || f[1] != "64B" || f[2] != tr {
				continue
			}
			found = true
			for _, rtt := range f[5:9] {
				if !strings.HasSuffix(rtt, "s") {
					t.Errorf("%s row: RTT column %q, want a latency", tr, rtt)
				}
			}
			if sleeps := f[9]; (sleeps == "-") != (tr == "pipe") {
				t.Errorf("%s row: sleep/rt %q, want - for the pipe only", tr, sleeps)
			}
		}
		if !found {
			t.Errorf("table has no pingpong 64B %s row of 13 columns:\n%s", tr, out)
		}
	}
	if strings.Contains(out, "chan: ") {
		t.Errorf("table's footer describes chan, which did not run:\n%s", out)
	}
}

// TestBenchOverheadTable checks the overhead lines under the table: one
// per row compared with its baseline, with its bound.
func TestBenchOverheadTable(t *testing.T) {
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

// TestBenchUsage checks the command lines that can run nothing: exit
// status 2, and the reason on stderr.
func TestBenchUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-transports", "ring,pipe", "-producers", "2"}, "only the mpmc transport runs several producers"},
		{[]string{"-transports", "mpmc", "-consumers", "2", "-mode", "pingpong"}, "-mode pingpong runs with -producers 1 -consumers 1 only"},
		{[]string{"-transports", "mpmc", "-producers", "0"}, "-producers and -consumers must be in [1, 32]"},
		{[]string{"-transports", "fifo", "-mode", "pingpong"}, "no case to run"},
		{[]string{"-batch", "0"}, "-batch must be in [1, 4096]: batch=0"},
		{[]string{"-rounds", "101"}, "-rounds must be in [1, 100]"},
		{[]string{"-mode", "oob", "-sizes", "8"}, "-mode oob needs messages of at least 16 bytes"},
		{[]string{"-capacity", "1X"}, `capacity="1X"`},
		{[]string{"-spin", "1x"}, `invalid value "1x" for flag -spin`},
		{[]string{"-conns", "10"}, `-conns applies to -mode hub only: mode="both"`},
		{[]string{"-mode", "hub", "-sizes", "64"}, "-sizes does not apply to -mode hub"},
		{[]string{"-mode", "hub", "-conns", "0"}, "-conns must be in [1, 100000]: conns=0"},
		{[]string{"-mode", "hub", "-capacity", "5000"}, "capacity=5000"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"bench"}, tc.args...), &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("bench %q = exit %d, want 2 and stderr containing %q; stderr:\n%s", tc.args, code, tc.want, stderr.String())
		}
	}
}

// TestBenchSpin runs the ring's pingpong with -spin -1: both sides sleep
// at once, so that round trips take futex sleeps, and the header says so.
func TestBenchSpin(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "-duration", "50ms", "-sizes", "64", "-transports", "ring", "-mode", "pingpong", "-spin", "-1"}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("run(%q) = %d; stderr:\n%s", args, code, stderr.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "no spin (-spin -1ns: a side sleeps at once)") {
		t.Errorf("header does not report -spin -1:\n%s", out)
	}
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) == 13 && f[2] == "ring" {
			// The requester finds no echo when it calls Recv, every time.
			if x, err := strconv.ParseFloat(f[9], 64); err != nil || x < 0.5 {
				t.Errorf("sleep/rt = %q with -spin -1, want at least 0.5:\n%s", f[9], out)
			}
			return
		}
	}
	t.Errorf("table has no ring row:\n%s", out)
}

// TestSpreadWarning checks the warning for rounds that disagree: its
// figures for pingpong and stream, and none for close rounds or one.
func TestSpreadWarning(t *testing.T) {
	ns := func(v int64) *int64 { return &v }
	spread := func(x float64) *float64 { return &x }
	for _, tc := range []struct {
		name string
		r    bench.Result
		want string
	}{
		{"pingpong", bench.Result{Transport: "ring", Mode: "pingpong", Size: 64, RTTP50: ns(420), RoundsSpread: spread(4.1), RoundsRange: []float64{400, 1640}},
			"warning: pingpong 64B ring: rounds disagree 4.1x (p50 RTT 0.40µs..1.64µs): the machine is noisy or the case is bimodal"},
		{"stream", bench.Result{Transport: "pipe", Mode: "stream", Size: 1024, RoundsSpread: spread(2.5), RoundsRange: []float64{4e5, 1e6}},
			"warning: stream 1KiB pipe: rounds disagree 2.5x (msgs/s 400.0k..1.00M): the machine is noisy or the case is bimodal"},
		{"close", bench.Result{Transport: "ring", Mode: "pingpong", Size: 64, RTTP50: ns(420), RoundsSpread: spread(1.9), RoundsRange: []float64{400, 760}}, ""},
		{"one round", bench.Result{Transport: "ring", Mode: "pingpong", Size: 64, RTTP50: ns(420)}, ""},
	} {
		if got := bench.SpreadWarning(tc.r); got != tc.want {
			t.Errorf("%s: spreadWarning = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestBenchHub runs the hub briefly with -json: the server's threads are
// counted, requests flow and their wake latencies are ordered.
func TestBenchHub(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"bench", "-mode", "hub", "-conns", "50", "-duration", "300ms", "-json"}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("run(%q) = %d; stderr:\n%s", args, code, stderr.String())
	}
	var r bench.HubResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("output is not a hub report: %v\n%s", err, stdout.String())
	}
	if r.Conns != 50 || r.Capacity != 4096 || r.ThreadsIdle < 1 || r.ThreadsMax < r.ThreadsIdle || r.MsgsPerSec <= 0 {
		t.Errorf("conns %d, capacity %d, threads idle %d max %d, %v msgs/s: want 50, 4096, at least 1, at least idle, positive", r.Conns, r.Capacity, r.ThreadsIdle, r.ThreadsMax, r.MsgsPerSec)
	}
	if w := []int64{r.WakeP50, r.WakeP99, r.WakeP999, r.WakeMax}; w[0] <= 0 || w[0] > w[1] || w[1] > w[2] || w[2] > w[3] {
		t.Errorf("wake p50, p99, p99.9, max = %v ns, want positive and ordered", w)
	}
	for _, key := range []string{"threads_idle", "threads_max", "wake_p50_ns", "wake_p99_ns", "wake_p999_ns", "wake_max_ns", "msgs_per_sec"} {
		if !strings.Contains(stdout.String(), `"`+key+`"`) {
			t.Errorf("JSON lacks %q:\n%s", key, stdout.String())
		}
	}
}

// TestPrintHub checks the hub's report for a given result.
func TestPrintHub(t *testing.T) {
	var out bytes.Buffer
	cfg := bench.DefaultHubConfig()
	printHub(&out, cfg, &bench.HubResult{Conns: 1000, Clients: 2, Capacity: 4096, ThreadsIdle: 1012, ThreadsMax: 1015,
		Messages: 3600, Seconds: 2, MsgsPerSec: 1800, WakeP50: 25300, WakeP99: 88200, WakeP999: 140000, WakeMax: 1200000})
	for _, want := range []string{
		"hub: 1000 connections over 2 client processes, rings of 4KiB each way, 1s, spin 50µs (the default)\n",
		"server threads   idle 1012, max 1015\n",
		"wake to receive  p50 25.30µs, p99 88.20µs, p99.9 140.00µs, max 1.20ms\n",
		"messages         3600 in 2.00s: 1.8k msgs/s\n",
		"CLOCK_MONOTONIC",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
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
		for _, key := range []string{"transport", "mode", "size", "producers", "consumers", "capacity", "messages", "seconds", "msgs_per_sec", "mb_per_sec", "rtt_p50_ns", "rtt_p99_ns", "syscalls_per_msg", "ring_ratio"} {
			if _, ok := row[key]; !ok {
				t.Errorf("%s: no %q field", name, key)
			}
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
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append([]string{"bench"}, tc.args...), &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("bench %q = exit %d, want 2 and stderr containing %q; stderr:\n%s", tc.args, code, tc.want, stderr.String())
		}
	}
}

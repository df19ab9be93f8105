package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestMain runs the startup hooks as main does: the bench's peer processes
// are copies of this test binary.
func TestMain(m *testing.M) {
	for _, hook := range startupHooks {
		hook()
	}
	os.Exit(m.Run())
}

func TestRunExitStatus(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		want       int
		wantStderr string
	}{
		{nil, 2, "Commands:"},
		{[]string{"help"}, 0, "bench"},
		{[]string{"help", "bench"}, 0, "-transports"},
		{[]string{"bench", "-h"}, 0, "-duration"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"bench", "-nosuchflag"}, 2, "flag provided but not defined"},
		{[]string{"bench", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"bench", "-transports", "ring,carrier-pigeon"}, 2, `unknown transport "carrier-pigeon"`},
		{[]string{"bench", "-producers", "2"}, 2, "only the mpmc transport runs several producers"},
		{[]string{"bench", "-consumers", "3"}, 2, "only the mpmc transport runs several producers"},
		{[]string{"bench", "-sizes", "64,0"}, 2, "-sizes"},
		{[]string{"bench", "-sizes", "64,big"}, 2, "-sizes"},
		{[]string{"bench", "-mode", "sideways"}, 2, "-mode"},
		{[]string{"bench", "-duration", "0s"}, 2, "-duration"},
		{[]string{"bench", "-capacity", "3000"}, 2, "power of two"},
		{[]string{"bench", "-capacity", "64k", "-sizes", "40000"}, 2, "largest message"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := run(tc.args, &stdout, &stderr); got != tc.want {
				t.Errorf("run(%q) = %d, want %d; stderr:\n%s", tc.args, got, tc.want, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("run(%q) stderr = %q, want it to contain %q", tc.args, stderr.String(), tc.wantStderr)
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"64", 64, true},
		{"16k", 16 << 10, true},
		{"16K", 16 << 10, true},
		{"4KiB", 4 << 10, true},
		{"1M", 1 << 20, true},
		{"1MiB", 1 << 20, true},
		{"1G", 1 << 30, true},
		{"", 0, false},
		{"k", 0, false},
		{"-1", 0, false},
		{"1.5M", 0, false},
		{"99999999999G", 0, false},
	} {
		got, err := parseBytes(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

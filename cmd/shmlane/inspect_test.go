package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/shmlane/shmlane"
	"github.com/shmlane/shmlane/ring"
)

// hostileInfo is a report whose peer-supplied strings try to take over the
// terminal: escape sequences, carriage returns, forged lines and invalid
// UTF-8.
func hostileInfo() *shmlane.ListenerInfo {
	const evil = "\x1b[2J\x1b]0;pwned\x07\r\nconnection 99: ring\n\xff\x7f\u202e\u009b2J\U000e0001"
	seg := &shmlane.SegmentInfo{
		Magic: 0x454e414c4d4853, Version: 1, Capacity: 4096, Size: 16384, CreatorPID: 7,
		Stats: ring.Stats{Capacity: 4096, Head: 10, Tail: 20, ProducerPID: 7, ConsumerPID: 8, OOBCapacity: 4096},
	}
	return &shmlane.ListenerInfo{
		Name: "live" + evil,
		Path: "/run/shmlane/live.sock" + evil,
		PID:  1, UID: 2,
		Conns: []shmlane.ConnInfo{
			{ID: 1, Transport: "unix" + evil, FallbackReason: "forced\x1b[2J\nconnection 99: ring\r" + evil, DialerPID: 3, DialerUID: 4},
			{ID: 2, Transport: "ring" + evil, SegmentErr: "bad\x1b[2J" + evil, ToDialer: seg, ToListener: seg, DialerPID: 5, DialerUID: 6},
		},
	}
}

// checkTerminalSafe fails the test if out could do anything to a
// terminal but print: a control byte other than the newlines the printer
// writes (ESC, CR, BEL, DEL...), invalid UTF-8, or a rune that
// strconv.Quote escapes (C1 controls such as CSI, bidirectional
// overrides, tags).
func checkTerminalSafe(t *testing.T, what string, out []byte) {
	t.Helper()
	for i, b := range out {
		if (b < 0x20 && b != '\n') || b == 0x7f {
			t.Fatalf("%s: output byte %d is %#x, a control character: %q", what, i, b, out)
		}
	}
	if !utf8.Valid(out) {
		t.Fatalf("%s: output is not valid UTF-8: %q", what, out)
	}
	for _, r := range string(out) {
		if r != '\n' && !strconv.IsPrint(r) {
			t.Fatalf("%s: output holds unprintable rune %U: %q", what, r, out)
		}
	}
}

func TestInspectPrintEscapesPeerText(t *testing.T) {
	var buf bytes.Buffer
	printInspect(&buf, hostileInfo())
	out := buf.Bytes()
	t.Logf("printInspect:\n%s", out)
	checkTerminalSafe(t, "printInspect", out)
	s := string(out)
	for _, want := range []string{
		`\x1b[2J`, `\r`, `\n`, `\xff`, `\x7f`, `\u202e`, `\u009b2J`, `\U000e0001`,
		`connection 1: "unix\x1b[2J`,
		`fell back to the socket: "forced\x1b[2J\nconnection 99: ring\r`,
		`segments unreadable: "bad\x1b[2J`,
		`connection 2: "ring\x1b[2J`,
		`listener "live\x1b[2J`,
		`socket "/run/shmlane/live.sock\x1b[2J`,
		`magic "SHMLANE"`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Every line is one the printer wrote: none was forged by a peer's newline.
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "connection 99") {
			t.Errorf("a peer forged the line %q", line)
		}
	}
	if n := strings.Count(s, "\nconnection "); n != 2 {
		t.Errorf("output has %d connection lines, want 2", n)
	}
}

func TestInspectJSONKeys(t *testing.T) {
	var buf bytes.Buffer
	if err := writeInspectJSON(&buf, hostileInfo()); err != nil {
		t.Fatal(err)
	}
	out := buf.Bytes()
	checkTerminalSafe(t, "writeInspectJSON", out)
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	for _, k := range []string{"name", "path", "pid", "uid", "conns"} {
		if _, ok := m[k]; !ok {
			t.Errorf("top level lacks %q: %s", k, out)
		}
	}
	conns, _ := m["conns"].([]any)
	if len(conns) != 2 {
		t.Fatalf("conns = %v, want 2 connections", m["conns"])
	}
	fb, _ := conns[0].(map[string]any)
	for _, k := range []string{"id", "transport", "fallback_reason", "dialer_pid", "dialer_uid", "oob_capacity", "sent_bytes", "discarded_bytes"} {
		if _, ok := fb[k]; !ok {
			t.Errorf("fallback connection lacks %q", k)
		}
	}
	for _, k := range []string{"to_dialer", "to_listener", "segment_err"} {
		if _, ok := fb[k]; ok {
			t.Errorf("fallback connection has %q, want it omitted", k)
		}
	}
	if got, want := fb["fallback_reason"], hostileInfo().Conns[0].FallbackReason; got != strings.ToValidUTF8(want, "\uFFFD") {
		t.Errorf("fallback_reason = %q, want %q", got, want)
	}
	rc, _ := conns[1].(map[string]any)
	if _, ok := rc["fallback_reason"]; ok {
		t.Errorf("ring connection has fallback_reason, want it omitted")
	}
	if _, ok := rc["segment_err"]; !ok {
		t.Errorf("ring connection lacks segment_err")
	}
	for _, dir := range []string{"to_dialer", "to_listener"} {
		seg, _ := rc[dir].(map[string]any)
		for _, k := range []string{"magic", "version", "capacity", "oob_capacity", "size", "creator_pid", "stats"} {
			if _, ok := seg[k]; !ok {
				t.Errorf("%s lacks %q", dir, k)
			}
		}
		st, _ := seg["stats"].(map[string]any)
		for _, k := range []string{"producer_pid", "consumer_pid", "head", "tail", "producer_closed", "sent_bytes", "producer_wakes", "consumer_sleeps", "urgent_received"} {
			if _, ok := st[k]; !ok {
				t.Errorf("%s.stats lacks %q", dir, k)
			}
		}
		if st["producer_pid"] != 7.0 {
			t.Errorf("%s.stats.producer_pid = %v, want 7", dir, st["producer_pid"])
		}
	}
	// No key anywhere is in Go's CamelCase.
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if strings.ToLower(k) != k || strings.ContainsAny(k, " -") {
					t.Errorf("key %s.%s is not snake_case", path, k)
				}
				walk(path+"."+k, e)
			}
		case []any:
			for _, e := range v {
				walk(path+"[]", e)
			}
		}
	}
	walk("", m)
}

func TestInspectJSONNoConns(t *testing.T) {
	var buf bytes.Buffer
	if err := writeInspectJSON(&buf, &shmlane.ListenerInfo{Name: "idle"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"conns": []`) {
		t.Errorf("JSON of a listener with no connections lacks \"conns\": []:\n%s", buf.String())
	}
}

func TestEscapeNonPrint(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"a": "plain é ✓"}` + "\n", `{"a": "plain é ✓"}` + "\n"},
		{"\"\x7f\"", `"\u007f"`},
		{"\"\u009b2J\"", `"\u009b2J"`},
		{"\"\u202e\u2028\"", `"\u202e\u2028"`},
		{"\"\U000e0001\"", `"\udb40\udc01"`},
		{"\"\xff\"", `"\ufffd"`},
		{"\"\ufffd\"", "\"\ufffd\""}, // a real U+FFFD is printable
	} {
		got := string(escapeNonPrint([]byte(tc.in)))
		if got != tc.want {
			t.Errorf("escapeNonPrint(%q) = %q, want %q", tc.in, got, tc.want)
		}
		var a, b any
		if json.Unmarshal([]byte(tc.in), &a) == nil {
			if err := json.Unmarshal([]byte(got), &b); err != nil {
				t.Errorf("escapeNonPrint(%q) = %q, not JSON: %v", tc.in, got, err)
			} else if !reflect.DeepEqual(a, b) {
				t.Errorf("escapeNonPrint(%q) decodes to %q, want %q", tc.in, b, a)
			}
		}
	}
}

package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestHub runs a small hub briefly: the server's threads are counted,
// every request is echoed (RunHub checks the counts), and the wake
// latencies are ordered and positive.
func TestHub(t *testing.T) {
	cfg := DefaultHubConfig()
	cfg.Conns, cfg.Duration = 50, 300*time.Millisecond
	res, err := RunHub(context.Background(), cfg)
	if err != nil {
		t.Fatalf("RunHub: %v", err)
	}
	t.Logf("%+v", *res)
	if res.ThreadsIdle < 1 || res.ThreadsMax < res.ThreadsIdle {
		t.Errorf("threads idle %d, max %d: want at least 1, and max at least idle", res.ThreadsIdle, res.ThreadsMax)
	}
	if res.Messages < 1 || res.MsgsPerSec <= 0 || res.Seconds < cfg.Duration.Seconds() {
		t.Errorf("messages %d, %v msgs/s in %vs: want some, over at least %v", res.Messages, res.MsgsPerSec, res.Seconds, cfg.Duration)
	}
	if w := []int64{res.WakeP50, res.WakeP99, res.WakeP999, res.WakeMax}; w[0] <= 0 || w[0] > w[1] || w[1] > w[2] || w[2] > w[3] {
		t.Errorf("wake p50, p99, p99.9, max = %v: want positive and ordered", w)
	}
	if res.Conns != 50 || res.Clients != 2 || res.Capacity != 4096 {
		t.Errorf("conns %d, clients %d, capacity %d: want 50, 2, 4096", res.Conns, res.Clients, res.Capacity)
	}
	if n := livePeerCount(); n != 0 {
		t.Errorf("%d peers left running", n)
	}
}

// TestHubPrepare checks that the hub names the rule and the value of
// what it rejects.
func TestHubPrepare(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*HubConfig)
		want string
	}{
		{"conns", func(c *HubConfig) { c.Conns = 0 }, "-conns must be in [1, 100000]: conns=0"},
		{"clients", func(c *HubConfig) { c.Conns, c.Clients = 1, 2 }, "at most -conns: clients=2 conns=1"},
		{"duration", func(c *HubConfig) { c.Duration = -time.Second }, "-duration must be positive: duration=-1s"},
		{"capacity", func(c *HubConfig) { c.Capacity = 5000 }, "-capacity must be a power of two in [4096, 1073741824] bytes: capacity=5000"},
	} {
		cfg := DefaultHubConfig()
		tc.edit(cfg)
		if _, err := RunHub(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: RunHub() = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// TestHubMessages checks that the server takes a request for what it is,
// and rejects one of another connection, out of sequence or truncated.
func TestHubMessages(t *testing.T) {
	msg := make([]byte, HubMessageSize)
	before := nanotime()
	putHubMsg(msg, 7, 3)
	if stamp, err := checkHubMsg(msg, 7, 3); err != nil || stamp < before || stamp > nanotime() {
		t.Errorf("checkHubMsg(request 3 of connection 7) = %d, %v; want a stamp taken by putHubMsg and no error", stamp, err)
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		conn int
		seq  uint32
	}{
		{"other connection", msg, 8, 3},
		{"out of sequence", msg, 7, 4},
		{"truncated", msg[:12], 7, 3},
	} {
		if _, err := checkHubMsg(tc.msg, tc.conn, tc.seq); err == nil {
			t.Errorf("%s: checkHubMsg = nil, want an error", tc.name)
		}
	}
}

// TestProcessThreads reads this process's thread count: at least one,
// and an error for a process that does not exist.
func TestProcessThreads(t *testing.T) {
	if n, err := processThreads(os.Getpid()); err != nil || n < 1 {
		t.Errorf("processThreads(self) = %d, %v; want at least 1", n, err)
	}
	if _, err := processThreads(1 << 30); err == nil {
		t.Error("processThreads(1<<30) = nil error, want one: no such process")
	}
}

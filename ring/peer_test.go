package ring

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	helpers["sendthendie"] = func() error {
		seg, err := helperSegment()
		if err != nil {
			return err
		}
		p, err := seg.Producer(nil)
		if err != nil {
			return err
		}
		n := helperInt(0)
		for i := 0; i < n; i++ {
			if err := p.Send([]byte(fmt.Sprint(i))); err != nil {
				return err
			}
		}
		// Half-written record: reserved, filled, never committed.
		b, err := p.Reserve(100)
		if err != nil {
			return err
		}
		copy(b, "partial")
		syscall.Kill(syscall.Getpid(), syscall.SIGKILL)
		select {}
	}
	helpers["exit"] = func() error { return nil }
	helpers["attachthendie"] = func() error {
		seg, err := helperSegment()
		if err != nil {
			return err
		}
		if _, err := seg.Consumer(nil); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
		syscall.Kill(syscall.Getpid(), syscall.SIGKILL)
		select {}
	}
}

func TestPeerGone(t *testing.T) {
	t.Run("ProducerKilled", func(t *testing.T) {
		seg, err := Create(&Config{Capacity: 1 << 16})
		if err != nil {
			t.Fatal(err)
		}
		defer seg.Close()
		c, err := seg.Consumer(&Options{SpinTime: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		const n = 1000
		cmd := startHelper(t, seg, "sendthendie", itoa(n))
		if err := c.WatchPeer(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 128)
		for i := 0; i < n; i++ {
			m, err := c.Recv(buf)
			if err != nil || string(buf[:m]) != fmt.Sprint(i) {
				t.Fatalf("Recv() = %q, %v; want %q", buf[:m], err, fmt.Sprint(i))
			}
		}
		start := time.Now()
		_, err = c.Recv(buf)
		if !errors.Is(err, ErrPeerGone) {
			t.Fatalf("Recv() after the committed messages = %v, want ErrPeerGone", err)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("ErrPeerGone after %v, want within 1s", el)
		}
		cmd.Wait()
	})
	t.Run("ConsumerKilledWhileFull", func(t *testing.T) {
		seg, err := Create(&Config{Capacity: 1 << 12})
		if err != nil {
			t.Fatal(err)
		}
		defer seg.Close()
		p, err := seg.Producer(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		fill(t, p)
		cmd := startHelper(t, seg, "attachthendie")
		if err := p.WatchPeer(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		p.SetDeadline(time.Now().Add(20 * time.Second))
		start := time.Now()
		if err := p.Send(make([]byte, 100)); !errors.Is(err, ErrPeerGone) {
			t.Fatalf("Send() on a full ring whose consumer died = %v, want ErrPeerGone", err)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("ErrPeerGone after %v", el)
		}
		cmd.Wait()
	})
	t.Run("AlreadyGone", func(t *testing.T) {
		_, p, _ := newRing(t, 4096, nil, nil)
		cmd := startHelper(t, p.seg, "exit")
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		if err := p.WatchPeer(cmd.Process.Pid); err != nil {
			t.Fatalf("WatchPeer(dead pid) = %v, want nil", err)
		}
		if err := p.Send(nil); !errors.Is(err, ErrPeerGone) {
			t.Errorf("Send() = %v, want ErrPeerGone", err)
		}
	})
}

// TestWatchPeerPidfd watches the peer through a pidfd that the caller
// keeps: the endpoint works on its own duplicate, so closing the caller's
// does not stop the watch, and the peer's death gives ErrPeerGone.
func TestWatchPeerPidfd(t *testing.T) {
	seg, err := Create(&Config{Capacity: 1 << 12})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	p, err := seg.Producer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	fill(t, p)
	cmd := startHelper(t, seg, "attachthendie")
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Skipf("skipping: pidfd_open: %v", err)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	if err := p.WatchPeerPidfd(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := p.WatchPeerPidfd(f); err == nil {
		t.Error("a second watch succeeded")
	}
	p.SetDeadline(time.Now().Add(20 * time.Second))
	if err := p.Send(make([]byte, 100)); !errors.Is(err, ErrPeerGone) {
		t.Fatalf("Send() on a full ring whose consumer died = %v, want ErrPeerGone", err)
	}
	cmd.Wait()
}

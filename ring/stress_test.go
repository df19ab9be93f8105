package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

// Stress messages: a size drawn from a PRNG seeded by the test, payload
// bytes taken from a shared pseudo-random pool at a place that depends on
// the sequence number, and, when there is room, the sequence number and a
// CRC-32C of the rest in the first 12 bytes. The consumer regenerates each
// expected message from its own sequence count, so a lost, duplicated,
// reordered or corrupted message is caught at once.

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	stressPool = func() []byte {
		r := rand.New(rand.NewPCG(1, 2))
		b := make([]byte, 1<<17)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}()
)

const stressMaxSize = 4096

type stressGen struct{ r *rand.Rand }

func newStressGen(seed uint64) stressGen { return stressGen{rand.New(rand.NewPCG(seed, 0x5eed))} }

// next fills buf with message seq and returns it.
func (g stressGen) next(seq uint64, buf []byte) []byte {
	n := g.r.IntN(stressMaxSize + 1)
	off := (seq * 7919) % uint64(len(stressPool)-stressMaxSize)
	m := buf[:n]
	copy(m, stressPool[off:off+uint64(n)])
	if n >= 12 {
		binary.LittleEndian.PutUint64(m, seq)
		binary.LittleEndian.PutUint32(m[8:], crc32.Checksum(m[12:], castagnoli))
	}
	return m
}

func checkStress(seq uint64, got, want []byte) error {
	if len(got) != len(want) {
		return fmt.Errorf("message %d: %d bytes, want %d (lost, duplicated or reordered)", seq, len(got), len(want))
	}
	if len(got) >= 12 {
		if s := binary.LittleEndian.Uint64(got); s != seq {
			return fmt.Errorf("message %d carries sequence number %d", seq, s)
		}
		if c := crc32.Checksum(got[12:], castagnoli); c != binary.LittleEndian.Uint32(got[8:]) {
			return fmt.Errorf("message %d: checksum %#x, header says %#x", seq, c, binary.LittleEndian.Uint32(got[8:]))
		}
	}
	if string(got) != string(want) {
		return fmt.Errorf("message %d: payload differs", seq)
	}
	return nil
}

func spinOption(mode string) *Options {
	if mode == "sleep" {
		return &Options{SpinTime: -1}
	}
	return nil
}

func init() {
	helpers["stressprod"] = func() error {
		seg, err := helperSegment()
		if err != nil {
			return err
		}
		p, err := seg.Producer(spinOption(helperArg(2)))
		if err != nil {
			return err
		}
		n := uint64(helperInt(0))
		g := newStressGen(uint64(helperInt(1)))
		buf := make([]byte, stressMaxSize)
		for seq := uint64(0); seq < n; seq++ {
			if err := p.Send(g.next(seq, buf)); err != nil {
				return fmt.Errorf("send %d: %w", seq, err)
			}
		}
		return p.Close()
	}
}

func stressCount(t *testing.T) int {
	if testing.Short() || raceEnabled {
		// The race detector slows every memory access down tenfold.
		return 1_000_000
	}
	return 10_000_000
}

// TestStressCrossProcess streams random-size messages from a child
// producer to this process through a 64 KiB ring, which wraps hundreds of
// thousands of times, in spin mode and in sleep mode (both sides sleep on
// the futex as soon as they have to wait).
func TestStressCrossProcess(t *testing.T) {
	for _, mode := range []string{"spin", "sleep"} {
		t.Run(mode, func(t *testing.T) {
			n := stressCount(t)
			seed := uint64(time.Now().UnixNano())
			seg, err := Create(&Config{Capacity: 1 << 16})
			if err != nil {
				t.Fatal(err)
			}
			defer seg.Close()
			c, err := seg.Consumer(spinOption(mode))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			cmd := startHelper(t, seg, "stressprod", itoa(n), fmt.Sprint(seed), mode)
			defer cmd.Process.Kill()
			c.SetDeadline(time.Now().Add(5 * time.Minute))
			g := newStressGen(seed)
			want := make([]byte, stressMaxSize)
			buf := make([]byte, stressMaxSize)
			start := time.Now()
			for seq := uint64(0); ; seq++ {
				m, err := c.Recv(buf)
				if err == io.EOF {
					if seq != uint64(n) {
						t.Fatalf("io.EOF after %d messages, want %d", seq, n)
					}
					break
				}
				if err != nil {
					t.Fatalf("Recv() message %d: %v", seq, err)
				}
				if err := checkStress(seq, buf[:m], g.next(seq, want)); err != nil {
					t.Fatal(err)
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("producer: %v", err)
			}
			st := seg.Stats()
			if st.Sent != uint64(n) || st.Received != uint64(n) || st.SentBytes != st.ReceivedBytes {
				t.Errorf("Stats() = %+v, want %d sent and received", st, n)
			}
			t.Logf("%d messages in %v (%d laps); stats %+v", n, time.Since(start).Round(time.Millisecond), st.Tail/st.Capacity, st)
		})
	}
}

func init() {
	helpers["burstcons"] = func() error {
		seg, err := helperSegment()
		if err != nil {
			return err
		}
		// A spin budget far longer than the burst: this consumer never
		// sleeps while the producer sends.
		c, err := seg.Consumer(&Options{SpinTime: time.Duration(helperInt(1)) * time.Millisecond})
		if err != nil {
			return err
		}
		buf := make([]byte, 64)
		for i := 0; ; i++ {
			_, err := c.Recv(buf)
			if err == io.EOF {
				if i != helperInt(0) {
					return fmt.Errorf("got %d messages, want %s", i, helperArg(0))
				}
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
}

// TestNoWakeWhileSpinning: a burst to a spinning consumer issues no
// FUTEX_WAKE at all; a sleeping consumer is woken by exactly one.
func TestNoWakeWhileSpinning(t *testing.T) {
	t.Run("Spinning", func(t *testing.T) {
		seg, err := Create(&Config{Capacity: 1 << 16})
		if err != nil {
			t.Fatal(err)
		}
		defer seg.Close()
		p, err := seg.Producer(nil)
		if err != nil {
			t.Fatal(err)
		}
		const burst = 100000
		cmd := startHelper(t, seg, "burstcons", itoa(burst), "20000")
		defer cmd.Process.Kill()
		// Wait until the consumer attached and started spinning.
		for seg.Stats().ConsumerPID == 0 {
			time.Sleep(time.Millisecond)
		}
		msg := make([]byte, 64)
		for i := 0; i < burst; i++ {
			if err := p.Send(msg); err != nil {
				t.Fatal(err)
			}
		}
		st := seg.Stats()
		p.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("consumer: %v", err)
		}
		if st.ProducerWakes != 0 || st.ConsumerSleeps != 0 {
			t.Errorf("after a %d-message burst to a spinning consumer: %d wakes issued, %d consumer sleeps; want 0 and 0", burst, st.ProducerWakes, st.ConsumerSleeps)
		}
	})
	t.Run("Sleeping", func(t *testing.T) {
		seg, err := Create(&Config{Capacity: 1 << 16})
		if err != nil {
			t.Fatal(err)
		}
		defer seg.Close()
		p, err := seg.Producer(nil)
		if err != nil {
			t.Fatal(err)
		}
		cmd := startHelper(t, seg, "burstcons", "1", "0")
		defer cmd.Process.Kill()
		deadline := time.Now().Add(10 * time.Second)
		for seg.Stats().ConsumerSleeps == 0 || seg.consumerSide().waiting.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("consumer never went to sleep")
			}
			time.Sleep(time.Millisecond)
		}
		if err := p.Send([]byte("wake up")); err != nil {
			t.Fatal(err)
		}
		for seg.Stats().Received == 0 {
			if time.Now().After(deadline) {
				t.Fatal("sleeping consumer was not woken")
			}
			time.Sleep(time.Millisecond)
		}
		if st := seg.Stats(); st.ProducerWakes != 1 {
			t.Errorf("ProducerWakes = %d, want 1", st.ProducerWakes)
		}
		p.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("consumer: %v", err)
		}
	})
}

func init() {
	helpers["garbagehead"] = func() error {
		seg, err := helperSegment()
		if err != nil {
			return err
		}
		p, err := seg.Producer(nil)
		if err != nil {
			return err
		}
		p.SetDeadline(time.Now().Add(10 * time.Second))
		for {
			err := p.Send(make([]byte, 200))
			if errors.Is(err, ErrCorrupt) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("Send() = %v, want ErrCorrupt eventually", err)
			}
		}
	}
}

// TestGarbageIndexCrossProcess: the consumer's process writes garbage into
// the live head index; the producer in the other process gets ErrCorrupt
// (and exits cleanly rather than panicking or overwriting unread data).
func TestGarbageIndexCrossProcess(t *testing.T) {
	seg, err := Create(&Config{Capacity: 1 << 12})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	c, err := seg.Consumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cmd := startHelper(t, seg, "garbagehead", "")
	defer cmd.Process.Kill()
	buf := make([]byte, 256)
	if _, err := c.Recv(buf); err != nil {
		t.Fatal(err)
	}
	seg.consumerSide().pos.Store(0xdead_beef_dead_beef)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("producer: %v", err)
	}
	_ = os.Getpid
}

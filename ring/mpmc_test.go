package ring

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MPMC messages: producer index (u32), sequence number (u32), CRC-32C of
// the rest (u32), then 0..mpmcMaxExtra bytes taken from the stress pool;
// the size and the bytes follow from (producer, sequence), so any consumer
// can check a message on its own.

const mpmcMaxExtra = 244

func mpmcMessage(buf []byte, prod, seq uint32) []byte {
	h := uint64(prod)*0x9E3779B97F4A7C15 ^ uint64(seq)*0xBF58476D1CE4E5B9
	n := 12 + int(h%(mpmcMaxExtra+1))
	off := (h >> 16) % uint64(len(stressPool)-mpmcMaxExtra)
	m := buf[:n]
	copy(m[12:], stressPool[off:])
	binary.LittleEndian.PutUint32(m, prod)
	binary.LittleEndian.PutUint32(m[4:], seq)
	binary.LittleEndian.PutUint32(m[8:], crc32.Checksum(m[12:], castagnoli))
	return m
}

// checkMPMC verifies a received message and returns its producer and
// sequence number.
func checkMPMC(m []byte, want []byte) (prod, seq uint32, err error) {
	if len(m) < 12 {
		return 0, 0, fmt.Errorf("message of %d bytes, shorter than its header", len(m))
	}
	prod, seq = binary.LittleEndian.Uint32(m), binary.LittleEndian.Uint32(m[4:])
	if c := crc32.Checksum(m[12:], castagnoli); c != binary.LittleEndian.Uint32(m[8:]) {
		return prod, seq, fmt.Errorf("message %d/%d: checksum %#x, header says %#x (torn or corrupt)", prod, seq, c, binary.LittleEndian.Uint32(m[8:]))
	}
	if w := mpmcMessage(want, prod, seq); string(w) != string(m) {
		return prod, seq, fmt.Errorf("message %d/%d differs from what was sent", prod, seq)
	}
	return prod, seq, nil
}

// sharedBitmap is a memfd-backed bitmap the consumer processes mark each
// (producer, sequence) in, to prove every message arrived exactly once.
type sharedBitmap struct {
	f    *os.File
	mem  []byte
	bits []atomic.Uint64
}

func newSharedBitmap(t testing.TB, nbits int) *sharedBitmap {
	fd, err := unix.MemfdCreate("bitmap", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "bitmap")
	size := (nbits + 63) / 64 * 8
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	b, err := mapBitmap(f, size)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mapBitmap(f *os.File, size int) (*sharedBitmap, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	return &sharedBitmap{f: f, mem: mem, bits: unsafe.Slice((*atomic.Uint64)(unsafe.Pointer(&mem[0])), size/8)}, nil
}

// mark sets bit i and reports whether it was already set.
func (b *sharedBitmap) mark(i int) bool {
	w, bit := &b.bits[i/64], uint64(1)<<(i%64)
	return w.Or(bit)&bit != 0
}

func (b *sharedBitmap) missing(n int) (count, first int) {
	first = -1
	for i := 0; i < n; i++ {
		if b.bits[i/64].Load()&(1<<(i%64)) == 0 {
			if first < 0 {
				first = i
			}
			count++
		}
	}
	return count, first
}

func init() {
	helpers["mpmcprod"] = func() error {
		f := os.NewFile(3, "segment")
		seg, err := OpenMPMC(f)
		if err != nil {
			return err
		}
		p, err := seg.MPMCProducer(nil)
		if err != nil {
			return err
		}
		prod, n := uint32(helperInt(0)), uint32(helperInt(1))
		buf := make([]byte, 12+mpmcMaxExtra)
		for seq := uint32(0); seq < n; seq++ {
			if err := p.Send(mpmcMessage(buf, prod, seq)); err != nil {
				return fmt.Errorf("send %d/%d: %w", prod, seq, err)
			}
		}
		return p.Close()
	}
	helpers["mpmccons"] = func() error {
		seg, err := OpenMPMC(os.NewFile(3, "segment"))
		if err != nil {
			return err
		}
		nprod, per, ordered := helperInt(0), helperInt(1), helperArg(2) == "ordered"
		bm, err := mapBitmap(os.NewFile(4, "bitmap"), (nprod*per+63)/64*8)
		if err != nil {
			return err
		}
		c, err := seg.MPMCConsumer(nil)
		if err != nil {
			return err
		}
		next := make([]uint32, nprod)
		buf := make([]byte, c.MaxMessage())
		want := make([]byte, 12+mpmcMaxExtra)
		for {
			m, err := c.Recv(buf)
			if err == io.EOF {
				return c.Close()
			}
			if err != nil {
				return err
			}
			prod, seq, err := checkMPMC(buf[:m], want)
			if err != nil {
				return err
			}
			if int(prod) >= nprod || int(seq) >= per {
				return fmt.Errorf("message %d/%d out of range", prod, seq)
			}
			if bm.mark(int(prod)*per + int(seq)) {
				return fmt.Errorf("message %d/%d received twice", prod, seq)
			}
			if ordered {
				if seq != next[prod] {
					return fmt.Errorf("producer %d: message %d arrived when %d was due", prod, seq, next[prod])
				}
				next[prod]++
			}
		}
	}
}

func mpmcCount(t *testing.T) int {
	if testing.Short() || raceEnabled {
		return 200_000
	}
	return 10_000_000
}

// startMPMCHelper starts a helper with the segment at fd 3 and extra files
// after it.
func startMPMCHelper(t *testing.T, seg *Segment, role string, extra []*os.File, args ...string) *exec.Cmd {
	t.Helper()
	f, err := seg.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // open until the caller has started cmd
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+role)
	for i, a := range args {
		cmd.Env = append(cmd.Env, fmt.Sprintf("SHMLANE_ARG%d=%s", i, a))
	}
	cmd.ExtraFiles = append([]*os.File{f}, extra...)
	cmd.Stderr = os.Stderr
	return cmd
}

// TestMPMCCrossProcess runs P producer and C consumer processes over one
// MPMC ring: the multiset received equals the multiset sent, nothing
// arrives twice, and with one consumer each producer's messages arrive in
// order.
//
// SHMLANE_MPMC_CONFIGS (e.g. "1x1,8x8") replaces the list of producer x
// consumer counts, to measure scaling on a larger machine.
func TestMPMCCrossProcess(t *testing.T) {
	configs := [][2]int{{1, 1}, {2, 2}, {4, 1}, {1, 4}, {4, 4}}
	if env := os.Getenv("SHMLANE_MPMC_CONFIGS"); env != "" {
		configs = nil
		for _, f := range strings.Split(env, ",") {
			var pc [2]int
			if _, err := fmt.Sscanf(f, "%dx%d", &pc[0], &pc[1]); err != nil || pc[0] < 1 || pc[1] < 1 {
				t.Fatalf("SHMLANE_MPMC_CONFIGS: bad entry %q, want PxC", f)
			}
			configs = append(configs, pc)
		}
	}
	for _, pc := range configs {
		np, nc := pc[0], pc[1]
		t.Run(fmt.Sprintf("%dx%d", np, nc), func(t *testing.T) {
			total := mpmcCount(t)
			per := total / np
			seg, err := CreateMPMC(&Config{Capacity: 1 << 16})
			if err != nil {
				t.Fatal(err)
			}
			defer seg.Close()
			bm := newSharedBitmap(t, np*per)
			order := "any"
			if nc == 1 {
				order = "ordered"
			}
			var cmds []*exec.Cmd
			for i := 0; i < nc; i++ {
				cmds = append(cmds, startMPMCHelper(t, seg, "mpmccons", []*os.File{bm.f}, itoa(np), itoa(per), order))
			}
			for i := 0; i < np; i++ {
				cmds = append(cmds, startMPMCHelper(t, seg, "mpmcprod", nil, itoa(i), itoa(per)))
			}
			start := time.Now()
			for _, c := range cmds {
				if err := c.Start(); err != nil {
					t.Fatal(err)
				}
				defer c.Process.Kill()
			}
			timer := time.AfterFunc(4*time.Minute, func() {
				for _, c := range cmds {
					c.Process.Kill()
				}
			})
			defer timer.Stop()
			for _, c := range cmds {
				if err := c.Wait(); err != nil {
					t.Fatalf("%s: %v (stats %+v)", c.Env[len(c.Env)-1], err, seg.MPMCStats())
				}
			}
			if n, first := bm.missing(np * per); n != 0 {
				t.Fatalf("%d messages never arrived; the first is %d/%d", n, first/per, first%per)
			}
			st := seg.MPMCStats()
			if st.Sent != uint64(np*per) || st.Received != st.Sent || st.SentBytes != st.ReceivedBytes {
				t.Errorf("MPMCStats() = %+v, want %d sent and received", st, np*per)
			}
			t.Logf("%d messages in %v; %+v", np*per, time.Since(start).Round(time.Millisecond), st)
		})
	}
}

func init() {
	helpers["mpmcvictim"] = func() error {
		seg, err := OpenMPMC(os.NewFile(3, "segment"))
		if err != nil {
			return err
		}
		p, err := seg.MPMCProducer(nil)
		if err != nil {
			return err
		}
		prod := uint32(helperInt(0))
		os.Stdout.Write([]byte("ready\n"))
		buf := make([]byte, 12+mpmcMaxExtra)
		for seq := uint32(0); ; seq++ {
			// Alternate copy sends with zero-copy reservations, so that
			// kills land between claim and commit often.
			m := mpmcMessage(buf, prod, seq)
			if seq%2 == 0 {
				if err := p.Send(m); err != nil {
					return err
				}
				continue
			}
			b, err := p.Reserve(len(m))
			if err != nil {
				return err
			}
			for i := range m { // byte by byte: a kill can tear it
				b[i] = m[i]
			}
			if err := p.Commit(); err != nil {
				return err
			}
		}
	}
}

// TestMPMCKillProducer kills producers with SIGKILL at random points, many
// times, while two other producers stream: the ring never stops, the
// survivors' messages all arrive once and in order, and nothing partial is
// ever delivered.
func TestMPMCKillProducer(t *testing.T) {
	seg, err := CreateMPMC(&Config{Capacity: 1 << 14})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	c, err := seg.MPMCConsumer(&Options{SpinTime: 200 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const steady = 2
	per := 100_000
	kills := 40
	if testing.Short() || raceEnabled {
		per, kills = 20_000, 10
	}
	type result struct {
		got    [steady]int
		victim map[uint32]uint32 // next sequence number due per victim
		err    error
	}
	resc := make(chan result, 1)
	go func() {
		r := result{victim: map[uint32]uint32{}}
		buf := make([]byte, c.MaxMessage())
		want := make([]byte, 12+mpmcMaxExtra)
		c.SetDeadline(time.Now().Add(3 * time.Minute))
		for {
			m, err := c.Recv(buf)
			if err == io.EOF || errors.Is(err, ErrPeerGone) {
				resc <- r
				return
			}
			if err != nil {
				r.err = err
				resc <- r
				return
			}
			prod, seq, err := checkMPMC(buf[:m], want)
			if err != nil {
				r.err = err
				resc <- r
				return
			}
			switch {
			case prod < steady:
				if int(seq) != r.got[prod] {
					r.err = fmt.Errorf("producer %d: message %d arrived when %d was due", prod, seq, r.got[prod])
					resc <- r
					return
				}
				r.got[prod]++
			default:
				if seq < r.victim[prod] {
					r.err = fmt.Errorf("victim %d: message %d arrived again or out of order (next due %d)", prod, seq, r.victim[prod])
					resc <- r
					return
				}
				r.victim[prod] = seq + 1
			}
		}
	}()
	var steadyCmds []*exec.Cmd
	for i := 0; i < steady; i++ {
		cmd := startMPMCHelper(t, seg, "mpmcprod", nil, itoa(i), itoa(per))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		steadyCmds = append(steadyCmds, cmd)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var wg sync.WaitGroup
	for k := 0; k < kills; k++ {
		cmd := startMPMCHelper(t, seg, "mpmcvictim", nil, itoa(100+k))
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		bufio.NewReader(out).ReadString('\n')
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		cmd.Process.Kill()
		wg.Add(1)
		go func() { defer wg.Done(); cmd.Wait() }()
	}
	wg.Wait()
	for _, cmd := range steadyCmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("steady producer: %v", err)
		}
	}
	var r result
	select {
	case r = <-resc:
	case <-time.After(3 * time.Minute):
		t.Fatalf("consumer stuck; stats %+v", seg.MPMCStats())
	}
	if r.err != nil {
		t.Fatalf("consumer: %v; stats %+v", r.err, seg.MPMCStats())
	}
	for i, n := range r.got {
		if n != per {
			t.Errorf("steady producer %d: %d messages arrived, want %d", i, n, per)
		}
	}
	st := seg.MPMCStats()
	t.Logf("%d kills, %d victims' messages arrived; stats %+v", kills, len(r.victim), st)
	if st.ProducerDeaths == 0 {
		t.Errorf("no producer deaths recorded after %d kills", kills)
	}
}

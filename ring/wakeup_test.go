//go:build linux

package ring

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shmlane/shmlane/internal/layout"
)

// stallLimit is how long a committed record may wait at head while every
// consumer sleeps. A lost wakeup shows as such a wait ending only at the
// consumers' next poll (mpmcPoll, 50 ms).
const stallLimit = 10 * time.Millisecond

// TestMPMCLostWakeup streams bursts, with random pauses between them, from
// producers to consumers that all sleep as soon as they wait (SpinTime -1
// everywhere), so that nearly every message goes through a sleep and a
// wake. A monitor samples the ring every few hundred microseconds and
// fails the test when a committed record sits at head for more than
// stallLimit while every consumer thread is asleep in FUTEX_WAIT on the
// consumers' futex word (/proc/self/task/TID/stat and .../syscall): no one
// will take it until a poll. A woken consumer that is only waiting for a
// CPU is runnable, not asleep, so a loaded machine does not fail it.
func TestMPMCLostWakeup(t *testing.T) {
	if _, err := os.ReadFile("/proc/self/syscall"); err != nil {
		t.Skipf("skipping: /proc/self/syscall is not readable (%v); the monitor needs it", err)
	}
	dur := 1500 * time.Millisecond
	if testing.Short() || raceEnabled {
		dur = 400 * time.Millisecond
	}
	for _, cfg := range []struct{ producers, consumers int }{{1, 1}, {2, 2}} {
		t.Run(fmt.Sprintf("%dx%d", cfg.producers, cfg.consumers), func(t *testing.T) {
			lostWakeupRun(t, cfg.producers, cfg.consumers, dur)
		})
	}
}

func lostWakeupRun(t *testing.T, producers, consumers int, dur time.Duration) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	seg := newMPMC(t, 16<<10)
	sleep := &Options{SpinTime: -1}
	sh := seg.mpmcShared()

	// Attach everyone first, so that no consumer sees EOF before the
	// last producer has joined.
	ps := make([]*MPMCProducer, producers)
	for i := range ps {
		ps[i] = mpmcProducer(t, seg, sleep)
	}
	cs := make([]*MPMCConsumer, consumers)
	for i := range cs {
		cs[i] = mpmcConsumer(t, seg, sleep)
	}

	tids := make([]int, consumers)
	var started, done sync.WaitGroup
	counts := make([]atomic.Uint64, producers)
	errc := make(chan error, producers+consumers)
	started.Add(consumers)
	for i, c := range cs {
		done.Add(1)
		go func() {
			defer done.Done()
			runtime.LockOSThread() // the monitor watches this thread
			tids[i] = unix.Gettid()
			started.Done()
			buf, want := make([]byte, c.MaxMessage()), make([]byte, c.MaxMessage())
			last := make([]int64, producers) // per-producer order as this consumer sees it
			for j := range last {
				last[j] = -1
			}
			for {
				n, err := c.Recv(buf)
				if err == io.EOF {
					return
				}
				if err != nil {
					errc <- fmt.Errorf("consumer %d: Recv: %w", i, err)
					return
				}
				prod, seq, err := checkMPMC(buf[:n], want)
				if err == nil && int(prod) >= producers {
					err = fmt.Errorf("message from producer %d of %d", prod, producers)
				}
				if err == nil && int64(seq) <= last[prod] {
					err = fmt.Errorf("message %d/%d after %d/%d (duplicated or reordered)", prod, seq, prod, last[prod])
				}
				if err != nil {
					errc <- fmt.Errorf("consumer %d: %w", i, err)
					return
				}
				last[prod] = int64(seq)
				counts[prod].Add(1)
			}
		}()
	}
	started.Wait()

	stop := make(chan struct{})
	var stall atomic.Pointer[string]
	var monitor sync.WaitGroup
	monitor.Add(1)
	go func() {
		defer monitor.Done()
		watchStalls(seg, tids, stop, &stall)
	}()

	sent := make([]uint32, producers)
	deadline := time.Now().Add(dur)
	var pw sync.WaitGroup
	for i, p := range ps {
		pw.Add(1)
		go func() {
			defer pw.Done()
			r := rand.New(rand.NewPCG(seed, uint64(i)))
			buf := make([]byte, p.MaxMessage())
			for time.Now().Before(deadline) {
				// Within a burst, a gap of up to 2 µs (busy) after each
				// message: the consumers keep catching up and going to
				// sleep while the producer still commits, which is where
				// a sleeper's retract and a waker's decision interleave.
				for range 1 + r.IntN(100) {
					if err := p.Send(mpmcMessage(buf, uint32(i), sent[i])); err != nil {
						errc <- fmt.Errorf("producer %d: Send: %w", i, err)
						return
					}
					sent[i]++
					for until := time.Now().Add(time.Duration(r.IntN(2000))); time.Now().Before(until); {
					}
				}
				switch r.IntN(4) {
				case 0: // straight on to the next burst
				case 1:
					runtime.Gosched()
				default:
					time.Sleep(time.Duration(r.IntN(1000)) * time.Microsecond)
				}
			}
			p.Close()
		}()
	}
	pw.Wait()
	doneCh := make(chan struct{})
	go func() { done.Wait(); close(doneCh) }()
	select {
	case <-doneCh:
	case <-time.After(30 * time.Second):
		t.Fatalf("consumers did not reach io.EOF within 30 s of the producers' Close (sleeper word %#x)", sh.cons.count.Load())
	}
	close(stop)
	monitor.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for i := range sent {
		if got := counts[i].Load(); got != uint64(sent[i]) {
			t.Errorf("producer %d: %d messages received, %d sent", i, got, sent[i])
		}
	}
	if s := stall.Load(); s != nil {
		t.Errorf("lost wakeup: %s", *s)
	}
	st := seg.MPMCStats()
	t.Logf("%d messages, consumer sleeps %d, wakes %d", st.Sent, st.ConsumerSleeps, st.ConsumerWakes)
	if st.ConsumerSleeps < 10 {
		t.Errorf("consumers slept %d times: the test did not exercise the wake path", st.ConsumerSleeps)
	}
}

// watchStalls samples head until stop is closed and stores in stall a
// description of the first committed record that waited at head longer
// than stallLimit while every consumer thread slept on the futex word.
func watchStalls(seg *Segment, tids []int, stop <-chan struct{}, stall *atomic.Pointer[string]) {
	sh := seg.mpmcShared()
	word := uintptr(unsafe.Pointer(sh.cons.seq))
	var since time.Time
	var at uint64
	for {
		select {
		case <-stop:
			return
		default:
		}
		h := sh.head.Load()
		d := layout.DecodeHeader(dataWord(seg, h).Load())
		committed := d.Type == layout.TypeData && d.Tag == layout.Tag(h)
		if committed && allAsleepOn(tids, word) {
			now := time.Now()
			if since.IsZero() || at != h {
				since, at = now, h
			} else if waited := now.Sub(since); waited > stallLimit && stall.Load() == nil {
				s := fmt.Sprintf("record at head %d committed and waiting %v with every consumer asleep (sleeper word %#x, futex word %d, wakes %d)",
					h, waited, sh.cons.count.Load(), sh.cons.seq.Load(), sh.cons.wakes.Load())
				stall.Store(&s)
			}
		} else {
			since = time.Time{}
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// allAsleepOn reports whether every thread in tids is asleep (state S) in
// a futex system call on the word at address word.
func allAsleepOn(tids []int, word uintptr) bool {
	for _, tid := range tids {
		dir := "/proc/self/task/" + strconv.Itoa(tid) + "/"
		stat, err := os.ReadFile(dir + "stat")
		if err != nil {
			return false
		}
		// The state follows the command name, which is in parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) || stat[i+2] != 'S' {
			return false
		}
		sc, err := os.ReadFile(dir + "syscall")
		if err != nil {
			return false
		}
		f := bytes.Fields(sc)
		if len(f) < 2 {
			return false
		}
		nr, err1 := strconv.Atoi(string(f[0]))
		addr, err2 := strconv.ParseUint(string(bytes.TrimPrefix(f[1], []byte("0x"))), 16, 64)
		if errors.Join(err1, err2) != nil || nr != unix.SYS_FUTEX || uintptr(addr) != word {
			return false
		}
	}
	return true
}

// TestSpinAdapts checks the spin's adaptation (waiter.adapt): waits that
// the PAUSE phase does not end halve it down to minPause, one that it
// ends restores SpinTime, every probeEvery late waits in a row one wait
// probes with PAUSE alone, and FixedSpin keeps the phase at SpinTime.
func TestSpinAdapts(t *testing.T) {
	w := waiter{spin: 64 * time.Microsecond, pauseFor: 64 * time.Microsecond}
	w.adapt(false)
	if w.pauseFor != 32*time.Microsecond {
		t.Fatalf("after one late wait the PAUSE phase is %v, want 32µs", w.pauseFor)
	}
	for range 10 {
		w.adapt(false)
	}
	if w.pauseFor != minPause {
		t.Fatalf("after 11 late waits the PAUSE phase is %v, want %v", w.pauseFor, minPause)
	}
	if w.probe {
		t.Fatal("a probe before probeEvery late waits")
	}
	for range probeEvery - 11 {
		w.adapt(false)
	}
	if !w.probe {
		t.Fatalf("no probe after %d late waits in a row", probeEvery)
	}
	w.adapt(true)
	if w.pauseFor != w.spin || w.late != 0 {
		t.Fatalf("after a wait the PAUSE phase ended: phase %v, late %d; want %v, 0", w.pauseFor, w.late, w.spin)
	}
	f := waiter{spin: 64 * time.Microsecond, pauseFor: 64 * time.Microsecond, fixed: true}
	f.adapt(false)
	if f.pauseFor != f.spin || f.probe {
		t.Fatalf("FixedSpin: phase %v, probe %v after a late wait", f.pauseFor, f.probe)
	}
}

// TestKickAfterUnmap: a kick from another goroutine (a context's
// AfterFunc, the peer watch seeing the peer exit, SetDeadline) may come
// while or after Close unmaps the segment; once unmap has run, kick and
// SetDeadline must not touch the endpoint's words. Here they are in a
// page that is really unmapped: touching it faults. (The peer watch's
// kick did, when the peer died as the endpoint closed.)
func TestKickAfterUnmap(t *testing.T) {
	mem, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	w := waiter{
		seq:     (*atomic.Uint32)(unsafe.Pointer(&mem[0])),
		waiting: (*atomic.Uint32)(unsafe.Pointer(&mem[64])),
	}
	w.waiting.Store(1)
	w.kick()
	if err := w.SetDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if w.seq.Load() != 2 {
		t.Fatalf("seq = %d after two kicks, want 2", w.seq.Load())
	}
	w.unmap()
	if err := unix.Munmap(mem); err != nil {
		t.Fatal(err)
	}
	w.kick()
	if err := w.SetDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
}

package ring

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmlane/shmlane/internal/futex"
)

// waiter is the wait strategy both rings share: a bounded spin with
// backoff, then a futex sleep announced by a waiting word that the peer
// checks after it publishes (see the memory-ordering notes in spsc.go and
// mpmc.go; the protocol is modelled in ring/model).
//
// Every word the waiter reads from the segment may have been written by a
// hostile peer, so no step trusts it to end a wait: the spin checks the
// deadline, the context and Close every 64 polls; every sleep is bounded by
// the deadline and by poll, after which closed, deadline and context are
// checked again. A wake lost because the peer rewrote the futex word (or
// never issued one) costs at most one poll interval.
type waiter struct {
	seq     *atomic.Uint32 // futex word this side sleeps on
	waiting *atomic.Uint32 // SPSC: a flag the waker clears; MPMC: sleeper count and pendingBit
	count   bool           // waiting is a count (MPMC)
	spin    time.Duration  // the longest spin (Options.SpinTime)
	// pauseFor is how long the next wait spins with PAUSE before it spins
	// yielding, adapted within [minPause, spin] (see adapt). Only the
	// endpoint's operation in progress touches it, and late and probe.
	pauseFor time.Duration
	// fixed keeps pauseFor at spin (Options.FixedSpin).
	fixed bool
	// late counts the waits in a row that the PAUSE phase did not end;
	// probe makes the next wait spin with PAUSE alone.
	late  int
	probe bool
	// poll bounds each sleep. recover, if set, runs on the slow path
	// after every sleep (the MPMC ring checks for dead peers there).
	poll       time.Duration
	recover    func() error
	sleepCount func()

	closed   atomic.Bool
	deadline atomic.Int64 // unix nanoseconds, 0 for none

	// kmu orders the kicks that come from other goroutines before the
	// endpoint's words go: unmapped is set, under it, before Close drops
	// the endpoint's reference to the mapping.
	kmu      sync.Mutex
	unmapped bool
}

// SetDeadline sets the time after which a blocked call returns an error
// wrapping os.ErrDeadlineExceeded. A zero time means no deadline; a time in
// the past makes every call that would wait return at once. A call already
// waiting sees the new deadline.
func (e *waiter) SetDeadline(t time.Time) error {
	if e.closed.Load() {
		return ErrClosed
	}
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
		if ns == 0 {
			ns = 1
		}
	}
	e.deadline.Store(ns)
	// Pairs with the waiter's Store of waiting before it reads the
	// deadline: either it sees the new deadline or we see it waiting.
	e.kmu.Lock()
	defer e.kmu.Unlock()
	if !e.unmapped && e.waiting.Load() != 0 {
		e.kickLocked()
	}
	return nil
}

// kick wakes this endpoint's own waiter, if any, so that it re-checks its
// state (closed, deadline, context). It may run in any goroutine at any
// time (a context's AfterFunc, the peer watch, SetDeadline), also while or
// after the endpoint closes: it touches the segment only while kmu shows
// it mapped.
func (e *waiter) kick() {
	e.kmu.Lock()
	defer e.kmu.Unlock()
	if !e.unmapped {
		e.kickLocked()
	}
}

func (e *waiter) kickLocked() {
	e.seq.Add(1)
	futex.Wake(e.seq, 1<<30)
}

// unmap tells kick that the endpoint's words are about to be unmapped;
// it waits for a kick in progress.
func (e *waiter) unmap() {
	e.kmu.Lock()
	e.unmapped = true
	e.kmu.Unlock()
}

// The spin (see wait and adapt).
const (
	// minPause is the shortest PAUSE phase: about a round trip between
	// two cores that both run, so that a peer that does run answers
	// within it.
	minPause = time.Microsecond
	// probeEvery: after this many waits in a row that the PAUSE phase
	// did not end, one wait spins with PAUSE for the whole SpinTime, to
	// find out whether the peer runs on another CPU again.
	probeEvery = 32
)

// adapt sets the next wait's PAUSE phase from how this one ended: in the
// PAUSE phase (inPause), or later, yielding or asleep.
//
// A spin costs the CPU it holds. When the peer runs on another CPU it
// answers within a microsecond and a PAUSE spin finds the answer at once;
// when it waits for this CPU (two processes on one core, next to a busy
// one on the other: a loaded host), spinning with PAUSE only delays it,
// for the whole spin of every wait, while yielding hands it the CPU. So
// an answer found in the PAUSE phase keeps the phase at SpinTime, and each
// one found later halves it (down to minPause): the side then yields
// almost at once. Every probeEvery such waits in a row, one wait spins
// with PAUSE alone again, which brings the long phase back if the two
// sides have come to run apart.
func (e *waiter) adapt(inPause bool) {
	if e.fixed {
		return
	}
	if inPause {
		e.pauseFor = e.spin
		e.late = 0
		return
	}
	e.pauseFor = max(e.pauseFor/2, min(minPause, e.spin))
	if e.late++; e.late%probeEvery == 0 {
		e.probe = true
	}
}

// wait blocks until ready reports true or an error: it spins for up to
// e.spin, with PAUSE between polls for the first e.pauseFor and yielding
// the CPU between polls after that (see adapt), then sleeps on the futex.
// ready must be cheap and must check the peer's closed flag before it
// looks for data.
func (e *waiter) wait(ctx context.Context, ready func() (bool, error)) error {
	if e.pauseFor == 0 || e.fixed {
		e.pauseFor = e.spin
	}
	if e.spin > 0 {
		pauseFor := e.pauseFor
		if e.probe {
			pauseFor, e.probe = e.spin, false
		}
		start := time.Now()
		yielding := false
		for i := 1; ; i++ {
			if ok, err := ready(); ok || err != nil {
				if i > 1 {
					e.adapt(!yielding)
				}
				return err
			}
			if i == 1 {
				// A deadline already past returns at once (a
				// non-blocking try), after one look at the ring.
				if err := e.expired(ctx, start); err != nil {
					return err
				}
			}
			if yielding {
				yield()
			} else {
				// One PAUSE per poll: a longer backoff makes the
				// spinner late by microseconds on the line it watches.
				pause(1)
			}
			if !yielding && i%16 != 0 {
				continue
			}
			if e.closed.Load() {
				return ErrClosed
			}
			now := time.Now()
			spun := now.Sub(start)
			if spun >= e.spin {
				break
			}
			if err := e.expired(ctx, now); err != nil {
				return err
			}
			yielding = spun >= pauseFor
		}
	}
	var stop func() bool
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	if e.spin > 0 {
		e.adapt(false)
	}
	for {
		seq := e.seq.Load()
		e.announce()
		ok, err := ready()
		if ok || err != nil {
			e.retract()
			return err
		}
		if e.closed.Load() {
			e.retract()
			return ErrClosed
		}
		timeout, err := e.timeout(ctx)
		if err != nil {
			e.retract()
			return err
		}
		if timeout < 0 || timeout > e.poll {
			timeout = e.poll
		}
		if stop == nil && ctx.Done() != nil {
			stop = context.AfterFunc(ctx, e.kick)
		}
		e.sleepCount()
		err = futex.Wait(e.seq, seq, timeout)
		e.retract()
		if err != nil && !isDeadline(err) {
			return err
		}
		if e.recover != nil {
			if err := e.recover(); err != nil {
				return err
			}
		}
	}
}

// expired reports whether the deadline or the context has ended the wait.
func (e *waiter) expired(ctx context.Context, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d := e.deadline.Load(); d != 0 && now.UnixNano() >= d {
		return errDeadline
	}
	if d, ok := ctx.Deadline(); ok && !now.Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// timeout returns how long the next sleep may last (-1: no limit), or the
// error that ends the wait.
func (e *waiter) timeout(ctx context.Context) (time.Duration, error) {
	now := time.Now()
	if err := e.expired(ctx, now); err != nil {
		return 0, err
	}
	t := time.Duration(-1)
	if d := e.deadline.Load(); d != 0 {
		t = time.Duration(d - now.UnixNano())
	}
	if d, ok := ctx.Deadline(); ok {
		if left := d.Sub(now); t < 0 || left < t {
			t = left
		}
	}
	return t, nil
}

// check ends a retry loop that does not sleep (a claim that keeps failing,
// a ready condition that keeps saying yes while nothing can be taken): it
// returns ErrClosed, the deadline's or the context's error, or nil.
func (e *waiter) check(ctx context.Context) error {
	if e.closed.Load() {
		return ErrClosed
	}
	return e.expired(ctx, time.Now())
}

// backoff is one round of a retry loop that waits for another process to
// finish a step of a few instructions (a claim between its two CASes): a
// PAUSE at first, then sched_yield, then short sleeps, so that a peer that
// was descheduled there, or never finishes, costs no CPU. Every 16 rounds
// it checks closed, the deadline and the context (see check).
func (e *waiter) backoff(ctx context.Context, round int) error {
	if round%16 == 0 {
		if err := e.check(ctx); err != nil {
			return err
		}
	}
	switch {
	case round < 64:
		pause(16)
	case round < 256:
		yield()
	default:
		time.Sleep(time.Duration(min(round-255, 100)) * 10 * time.Microsecond)
	}
	return nil
}

// announce tells wakers that this side is about to sleep. The store (or
// add) is sequentially consistent: it pairs with the waker's Load of
// waiting after its own publishing store.
//
// An MPMC sleeper also clears pendingBit: a bit set before it was counted
// stands for a wake that went to others (wake(1<<30) woke only those
// asleep then; wake(1) one of them), so it must not suppress the wake this
// sleeper may need. Without this, a producer counted under a stale bit
// slept beside room that a suppressed wake announced (found by the spin
// model, mpmc-idle-producer).
func (e *waiter) announce() {
	if e.count {
		e.waiting.Add(1)
		e.waiting.And(^pendingBit)
	} else {
		e.waiting.Store(1)
	}
}

// retract undoes announce once this side is about to look at the ring.
// The MPMC count is decremented first and pendingBit cleared second, each
// in one atomic step: a waker that set the bit before the decrement saw
// this sleeper and is cleared by the And; a waker that reads the word
// after the decrement sees only the sleepers that remain, and its CAS from
// a value read before the decrement fails (see mpmcSide.wake).
func (e *waiter) retract() {
	if e.count {
		e.waiting.Add(^uint32(0))
		e.waiting.And(^pendingBit)
	} else {
		e.waiting.Store(0)
	}
}

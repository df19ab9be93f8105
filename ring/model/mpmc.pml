/*
 * mpmc.pml: the MPMC ring's sleep/wake protocol (per side: a futex word and
 * a sleeper-count word with pendingBit; Close), as ring/wait.go and
 * ring/mpmc.go implement it, with NP=2 producers and NC=2 consumers.
 *
 * Check it with ring/model/check.sh (or by hand:
 *   spin -a -DK=1 -DS=2 [-DBUG_...] mpmc.pml
 *   gcc -O2 -DSAFETY -o pan pan.c && ./pan -m1000000).
 *
 * Granularity. Every step of the sleep/wake protocol is one sync/atomic
 * operation of the Go code, one step here: on the sleeper's side the load
 * of the futex word, the announce, each load of ready(), the two steps of
 * retract, FUTEX_WAIT; on the waker's side the publishing store, the
 * load-and-CAS of the count word (see sideWake), the Add to the futex
 * word, FUTEX_WAKE. Local computation is folded into the step before it.
 * Each step names the Go statement it stands for as "file function:
 * statement". The ring operations around the protocol are coarser (see
 * the abstractions): what they decide (claimed, nothing there, no room) is
 * decided on one snapshot, where the Go code may take several loads and
 * retry a lost CAS.
 *
 * Abstractions:
 *  - The data area is S slots of one record each. A header is a type
 *    (RECL, BUSY, DATA, READING) and a position tag (hpos). RECL(p) stands
 *    for both free markers, layout.Free(p) (the initial one) and
 *    Reclaimed(tag p): "free, to be claimed next at position p"; claimAt
 *    accepts either. Positions count records and only grow.
 *  - A producer's claim attempt (MPMCProducer.claim: claimable, the load
 *    of tail, room, and claimAt's CAS of the header from Free(t) to Busy
 *    and CAS of tail) is one step, as is a consumer's (MPMCConsumer.claim:
 *    the load of head, of the header, the CAS of the header from Data to
 *    Reading and of head). A lost CAS or a stale load in Go only rounds
 *    the loop again (or backs off behind a peer between its two CASes: a
 *    busy wait, no sleep), and every "nothing to claim" / "no room" the Go
 *    code returns holds on one snapshot, so the model's claims are Go
 *    executions whose loads and CASes ran back to back. A claim that finds
 *    nothing goes to wait, whose ready() re-checks after announcing.
 *    Producers claim in order and commit in a later step, so two
 *    producers' records can be committed out of order (S >= 2).
 *  - reclaimStep is one step (finished records from reclaim, one CAS of
 *    reclaim) followed by the wake: the Go loop of passes and CASes races
 *    other reclaimers only for who advances reclaim and wakes.
 *  - Pad, Discard, batches, reservations, Peek and dead peers (the
 *    takeovers of the slow path) are left out; recoverSlow, which runs
 *    after every sleep, is kept (reap finds everyone alive).
 *  - The payload write is folded into the commit step (a plain store
 *    before the publishing CAS, to a slot nobody else reads until then).
 *    Messages are counted; with IDS each carries an id and got[] checks
 *    each id once (claims are atomic here, so a record cannot be claimed
 *    twice: the count at the end is the check that matters).
 *  - pendingBit is 128 and the count is bits 0..6 (the Go word: 1<<31 and
 *    bits 0..30).
 *  - The futex word m.seq is represented by what each sleeper can tell
 *    from it, moved[i]: set by every m.seq.Add(1) on its side, cleared
 *    when endpoint i loads the word (seq := e.seq.Load()); "moved" is
 *    "seq != the value i read", a counter that never wraps (a 32-bit word
 *    wraps after 2^32 increments, which the model leaves out).
 *  - FUTEX_WAIT is the kernel's atomic "compare the word with the value
 *    read, enqueue if equal" followed by a block until a FUTEX_WAKE
 *    dequeues it; no timeouts (the Go code bounds each sleep by mpmcPoll,
 *    50 ms, which is exactly what hid the old bug) and no spurious
 *    wakeups. FUTEX_WAKE(1) wakes any one sleeper on the word (a
 *    nondeterministic choice), FUTEX_WAKE(1<<30) all of them.
 *  - The spin phase of waiter.wait only polls ready(); it is left out
 *    (SpinTime < 0) except with CONS_SPIN / PROD_SPIN, where one side
 *    spins for ever and never sleeps (a subset of the Go behaviours that
 *    keeps the state space small while the other side's sleep is checked).
 *  - Everyone attaches before anything runs (joined = 1, nlive = 2);
 *    contexts, deadlines and Close from another goroutine are left out
 *    (each endpoint closes after its last operation).
 *
 * Parameters and variants (spin -D...):
 *  K=n, S=n   messages each producer sends, slots in the area (2, 2);
 *             K0, K1 override K for producer 0, 1
 *  CONS_SPIN, PROD_SPIN  that side polls ready() and never sleeps
 *  NO_RECOVER  leave out recoverSlow after a sleep
 *  IDS        message ids (see above)
 *  CAS_GIVES_UP  mpmcSide.wake may give up its CAS and wake anyway
 *  IDLE_PRODUCER  a producer that has sent its last message counts as
 *             idle (it may stay attached and never call Close), so the
 *             wake its Close gives its own side is no excuse for a
 *             producer left asleep with room: see the lost-wakeup property
 *  BUG_PENDING_ORDER  the old protocol: pending is a word of its own, the
 *             sleeper retracts with { pending = 0 } then { count -= 1 },
 *             the waker does { if count != 0 } then { if
 *             pending.Swap(1) == 0: seq += 1, FUTEX_WAKE }
 *  BUG_STALE_BIT  announce does not clear pendingBit (the code before the
 *             model found mpmc-idle-producer): a producer that announces
 *             while a wake to others is pending is counted under the stale
 *             bit; a reclaim's wake is suppressed and nobody passes it on
 *  BUG_CLOSE_PENDING  closeMPMC sets pendingBit on the other side's word
 *             before it wakes it (the old "other.pending.Store(1)")
 *
 * Properties:
 *  - no invalid end state: every process ends (producers after their sends
 *    and Close, consumers at EOF and Close); a process asleep forever is an
 *    invalid end state;
 *  - every message is received (nrecv at the end), once (see IDS);
 *  - consumers' EOF comes only after every message was received (the
 *    count is checked when the last consumer has closed);
 *  - lost wakeup (the Monitor at the end): no reachable state where every
 *    live process of a side is blocked in FUTEX_WAIT, the side's wait
 *    condition holds, and no wake to that side is in flight. "Live": a
 *    consumer until it closes after EOF; a producer until its Close's kick
 *    (IDLE_PRODUCER: until its last Send returns). The wait condition: for
 *    consumers, ready() would return true or EOF (a committed Data record
 *    at head, or every producer gone, or a non-Busy header below tail);
 *    for producers, every consumer gone, or room at tail, or a finished
 *    record at reclaim that a reclaimStep would pass. A wake is in flight
 *    (wk[side] > 0) from the store that can make the condition true (a
 *    commit, the decrement of nlive in Close, a finish, a reclaim CAS, the
 *    kick's Add) to the end of the wake decision that follows it.
 */

#ifndef K
#define K 2		/* messages each producer sends */
#endif
#ifndef K0
#define K0 K		/* messages producer 0 sends */
#endif
#ifndef K1
#define K1 K		/* messages producer 1 sends */
#endif
#define NMSG (K0 + K1)
#ifndef S
#define S 2		/* slots (records) in the data area */
#endif
#define NP 2
#define NC 2
#define PROD 0
#define CONS 1
#define PB 128		/* pendingBit */
#define CNT 127		/* ^pendingBit: the sleeper count */

#define OK		0
#define EOF		1	/* errEOF */
#define EPEERCLOSED	2	/* ErrPeerClosed */

mtype = { RECL, BUSY, DATA, READING };

/* ---- shared memory (the segment) ---- */
mtype hst[S];		/* header type of each slot */
byte  hpos[S];		/* header position tag */
#ifdef IDS
byte  msg[S];		/* payload: message id, 1..NMSG */
#endif
byte  tail, head, reclaim;	/* SlotMPMCTail, SlotMPMCHead, SlotMPMCReclaim */
/* per side, [PROD] and [CONS] (mpmcSide) */
byte  cw[2];		/* sleeper count and pendingBit: m.count */
#ifdef BUG_PENDING_ORDER
bit   pend[2];		/* the old separate pending word */
#endif
byte  nlive[2];		/* m.nlive (m.joined is 1 throughout) */
byte  tab[2];		/* live entries in m.table (what reap counts; [PROD] only) */

/* ---- the futex words and the kernel, [side*2 + index] ---- */
bit   moved[4];		/* m.seq moved since endpoint i loaded it */
bit   asleep[4];	/* endpoint i is enqueued in FUTEX_WAIT */

/* ---- ghosts and process state the monitor reads ---- */
bit   live[4];		/* see "Live" above, [side*2 + index] */
byte  wk[2];		/* wakes in flight to each side */
#ifdef IDS
bit   got[NMSG + 1];	/* message ids received */
#endif
byte  nrecv;		/* messages received */
byte  cdone;		/* consumers that ended */

/* m.seq.Add(1) on side s's futex word */
inline seqAdd(s) {
	d_step { moved[s * 2] = 1; moved[s * 2 + 1] = 1 }
}

/* futex.Wake(m.seq, n) on side s's word: one sleeper (any) or all; dec is
 * 1 when it ends a wake in flight. */
inline futexWake(s, all, dec) {
	atomic {
		if
		:: all -> asleep[s * 2] = 0; asleep[s * 2 + 1] = 0
		:: !all && asleep[s * 2] -> asleep[s * 2] = 0
		:: !all && asleep[s * 2 + 1] -> asleep[s * 2 + 1] = 0
		:: else
		fi;
		wk[s] = wk[s] - dec
	}
}

/* futex.Wait(e.seq, seq, timeout) for endpoint i of side s:
 * futex/futex_linux.go Wait: "if word.Load() != val { return nil }" and the
 * syscall, which enqueues only if the word still holds val, then blocks. */
inline futexWait(s, i) {
	atomic {
		if
		:: moved[s * 2 + i]	/* the word changed since it was loaded */
		:: else -> asleep[s * 2 + i] = 1; asleep[s * 2 + i] == 0
		fi
	}
}

/* mpmc.go mpmcSide.wake(n) on side s (all: n = 1<<30), after a store that
 * incremented wk[s]. Locals: wok.
 *
 * The loop "v := m.count.Load(); ...; if !m.count.CompareAndSwap(v,
 * v|pendingBit) { continue }" is one step: the CAS succeeds only on the
 * word the load read, so a successful round is a load and a CAS that ran
 * back to back, and a failed one only rounds again. What the merge loses
 * is the way out after 4 failed CASes (wake without setting the bit); the
 * second option below adds it wherever it could happen (a sleeper counted,
 * the bit clear), more often than it can, which only adds wakes. */
inline sideWake(s, all) {
#ifndef BUG_PENDING_ORDER
	/* mpmc.go mpmcSide.wake: v := m.count.Load();
	   if v&^pendingBit == 0 || v&pendingBit != 0 { return };
	   if try < 4 && !m.count.CompareAndSwap(v, v|pendingBit) { continue } */
	atomic {
		if
		:: (cw[s] & CNT) != 0 && (cw[s] & PB) == 0 -> cw[s] = cw[s] | PB; wok = 1
#ifdef CAS_GIVES_UP
		:: (cw[s] & CNT) != 0 && (cw[s] & PB) == 0 -> wok = 1	/* try == 4 */
#endif
		:: else -> wk[s]--
		fi
	};
	if
	:: wok ->
		wok = 0;
		/* mpmc.go mpmcSide.wake: m.seq.Add(1) */
		seqAdd(s);
		/* mpmc.go mpmcSide.wake: futex.Wake(m.seq, n) */
		futexWake(s, all, 1)
	:: else
	fi
#else
	/* old mpmc.go mpmcSide.wake: if m.count.Load() != 0 */
	d_step {
		if
		:: cw[s] != 0 -> wok = 1
		:: else -> wok = 0; wk[s]--
		fi
	};
	/* old mpmc.go mpmcSide.wake: && m.pending.Swap(1) == 0 */
	if
	:: wok ->
		d_step {
			if
			:: pend[s] == 0 -> pend[s] = 1
			:: else -> wok = 0; wk[s]--
			fi
		}
	:: else
	fi;
	if
	:: wok ->
		/* old mpmc.go mpmcSide.wake: m.seq.Add(1) */
		seqAdd(s);
		/* old mpmc.go mpmcSide.wake: futex.Wake(m.seq, n) */
		futexWake(s, all, 1);
		wok = 0
	:: else
	fi
#endif
}

/* mpmc.go mpmcSide.wakeAll: m.seq.Add(1); futex.Wake(m.seq, 1<<30) */
inline wakeAll(s, dec) {
	seqAdd(s);
	futexWake(s, 1, dec)
}

/* wait.go waiter.announce */
inline announce(s) {
	/* wait.go waiter.announce: e.waiting.Add(1) */
	d_step { cw[s] = cw[s] + 1 };
#if !defined(BUG_PENDING_ORDER) && !defined(BUG_STALE_BIT) && !defined(BUG_CLOSE_PENDING)
	/* wait.go waiter.announce: e.waiting.And(^pendingBit) */
	d_step { cw[s] = cw[s] & CNT }
#endif
}

/* wait.go waiter.retract */
inline retract(s) {
#ifndef BUG_PENDING_ORDER
	/* wait.go waiter.retract: e.waiting.Add(^uint32(0)) */
	d_step { assert((cw[s] & CNT) > 0); cw[s] = cw[s] - 1 };
	/* wait.go waiter.retract: e.waiting.And(^pendingBit) */
	d_step { cw[s] = cw[s] & CNT }
#else
	/* old wait.go waiter.retract: e.pending.Store(0) */
	pend[s] = 0;
	/* old wait.go waiter.retract: e.waiting.Add(^uint32(0)) */
	d_step { assert(cw[s] > 0); cw[s] = cw[s] - 1 }
#endif
}

/* mpmc.go mpmc.reclaimStep, any caller (see the abstractions): from
 * reclaim, over the records below head whose header is Reclaimed
 * (mpmc.go mpmc.finished: case layout.TypeReclaimed), one
 * e.sh.reclaim.CompareAndSwap(r, end); then
 * "if advanced { e.sh.prod.wake(1 << 30) }". Options, folded into the
 * same step:
 *  fin: called after finish, whose wake in flight (wk[PROD]) ends here,
 *       or goes on as the reclaim's;
 *  chk: MPMCProducer.room's reload after it, "p.reclaimCache =
 *       p.sh.reclaim.Load(); return t+need <= ..." (made before the wake
 *       instead of after: the same as a Go run where a reclaim CAS by
 *       someone else comes after that load), sets rdy;
 *  rec: MPMCConsumer.recoverSlow's "if c.sh.prod.reap() == 0 {
 *       c.sh.cons.wakeAll() }" (the load of the table made here, the
 *       wakeAll after the reclaim's wake instead of before: they wake
 *       different sides).
 * Locals: e2, adv, wok. */
inline reclaimStep(fin, chk, rec) {
	d_step {
		e2 = reclaim;
		do
		:: e2 < head && hst[e2 % S] == RECL && hpos[e2 % S] == e2 + S -> e2++
		:: else -> break
		od;
		if
		:: e2 != reclaim -> reclaim = e2; wk[PROD] = wk[PROD] + 1 - fin; adv = 1
		:: else -> wk[PROD] = wk[PROD] - fin
		fi;
		e2 = 0;
		if
		:: chk -> rdy = (t < reclaim + S); t = 0
		:: else
		fi;
		if
		:: rec && tab[PROD] == 0 -> gone = 1	/* (gone: "reap() == 0" here) */
		:: else
		fi
	};
	if
	:: adv -> adv = 0; sideWake(PROD, 1)
	:: else
	fi;
	if
	:: gone -> gone = 0; wakeAll(CONS, 0)
	:: else
	fi
}

/* the ready function of mpmc.go MPMCProducer.claim, which sets rdy or err:
 *   if err := p.claimable(); err != nil { return false, err }  (p.sh.cons.gone)
 *   t := p.sh.tail.Load(); return p.room(t, p.span(t, size)), nil
 * room: p.reclaimCache = p.sh.reclaim.Load() (the cache only lags reclaim:
 * left out); the loads are one step (a stale tail only says "room" sooner). */
inline producerReady() {
	d_step {
		if
		:: nlive[CONS] == 0 -> err = EPEERCLOSED
		:: else -> t = tail; rdy = (t < reclaim + S)
		fi
	};
	if
	:: !rdy && err == OK ->
		/* mpmc.go MPMCProducer.room: p.reclaimStep(false); p.reclaimCache =
		   p.sh.reclaim.Load(); return t+need <= p.reclaimCache+p.capacity */
		reclaimStep(0, 1, 0)
	:: else -> t = 0
	fi
}

/* mpmc.go MPMCConsumer.ready, which sets rdy or err */
inline consumerReady() {
	/* mpmc.go MPMCConsumer.ready: gone := c.sh.prod.gone(errEOF) */
	gone = (nlive[PROD] == 0);
	/* mpmc.go MPMCConsumer.ready: h := c.sh.head.Load() */
	h = head;
	/* mpmc.go MPMCConsumer.ready: d := layout.DecodeHeader(c.word(h).Load()) */
	d_step {
		if
		/* case layout.TypeData: if d.Tag == layout.Tag(h) { return true, nil } */
		:: hst[h % S] == DATA && hpos[h % S] == h -> rdy = 1; h = 0; gone = 0
		/* case layout.TypeBusy: if gone != nil && h < c.sh.tail.Load() { return true, nil };
		   return c.idle(h, gone) */
		:: hst[h % S] == BUSY && !gone -> needHead = 1
		/* (both cases go on to load tail) */
		:: else -> needTail = 1
		fi
	};
	if
	:: needTail ->
		/* mpmc.go MPMCConsumer.ready: h < c.sh.tail.Load() (in the Busy case
		   with gone, or below the switch); else return false, gone */
		d_step {
			if
			:: h < tail -> rdy = 1
			:: else -> needHead = 1
			fi;
			needTail = 0
		}
	:: else
	fi;
	if
	:: needHead ->
		/* mpmc.go MPMCConsumer.idle: if c.sh.head.Load() != h { return true, nil };
		   return false, gone (a header read at a head that moved may be a
		   later lap's) */
		d_step {
			if
			:: head != h -> rdy = 1
			:: else -> err = (gone -> EOF : OK)
			fi;
			needHead = 0
		}
	:: else
	fi;
	h = 0; gone = 0
}

/* mpmc.go MPMCProducer.recoverSlow: p.sh.cons.reap() (everyone alive: no
 * effect); p.reclaimStep(true) */
inline producerRecover() {
	reclaimStep(0, 0, 0)
}

/* mpmc.go MPMCConsumer.recoverSlow: if c.sh.prod.reap() == 0 {
 * c.sh.cons.wakeAll() }; c.takeOver() (everyone alive: no effect);
 * c.reclaimStep(true) */
inline consumerRecover() {
	reclaimStep(0, 0, 1)
}

/* wait.go waiter.wait, the spin phase run for ever (SpinTime long
 * enough): for { if ok, err := ready(); ok || err != nil { return err } } */
inline spinLoop(s) {
	do
	::
		if
		:: s == PROD -> producerReady()
		:: else -> consumerReady()
		fi;
		if
		:: rdy || err != OK -> rdy = 0; break
		:: else
		fi
	od
}

/* wait.go waiter.wait with count = true, the loop after the spin phase,
 * for endpoint i of side s; err holds the result. */
inline sleepLoop(s, i) {
	do
	::
		/* wait.go waiter.wait: seq := e.seq.Load() */
		moved[s * 2 + i] = 0;
		/* wait.go waiter.wait: e.announce() */
		announce(s);
		/* wait.go waiter.wait: ok, err := ready() */
		if
		:: s == PROD -> producerReady()
		:: else -> consumerReady()
		fi;
		if
		:: rdy || err != OK ->
			/* wait.go waiter.wait: if ok || err != nil { e.retract(); return err } */
			rdy = 0;
			retract(s);
			break
		:: else
		fi;
		/* wait.go waiter.wait: if e.closed.Load() { ... } (never true here:
		   each endpoint closes after its last operation) */
		/* wait.go waiter.wait: err = futex.Wait(e.seq, seq, timeout) */
		futexWait(s, i);
		/* wait.go waiter.wait: e.retract() */
		retract(s);
#ifndef NO_RECOVER
		/* wait.go waiter.wait: if e.recover != nil { e.recover() } */
		if
		:: s == PROD -> producerRecover()
		:: else -> consumerRecover()
		fi
#endif
	od
}

/* wait.go waiter.wait for endpoint i of side s: the sleep loop, or with
 * CONS_SPIN / PROD_SPIN the spin phase for ever on that side. */
inline waitLoop(s, i) {
#if defined(CONS_SPIN) || defined(PROD_SPIN)
	if
#ifdef CONS_SPIN
	:: s == CONS -> spinLoop(s)
#endif
#ifdef PROD_SPIN
	:: s == PROD -> spinLoop(s)
#endif
	:: else -> sleepLoop(s, i)
	fi
#else
	sleepLoop(s, i)
#endif
}

/* mpmc.go mpmc.closeMPMC for endpoint i of side s; o is the other side */
inline closeMPMC(s, i, o) {
	/* mpmc.go mpmc.closeMPMC: e.closed.Store(true) (read only by this
	   endpoint's own waiters: none here, so folded into the next step);
	   e.kick() (wait.go waiter.kick: e.seq.Add(1)). The kick is a wake in
	   flight to this side; a producer stops being live here unless
	   IDLE_PRODUCER. */
	d_step { live[s * 2 + i] = 0; wk[s]++; moved[s * 2] = 1; moved[s * 2 + 1] = 1 };
	/* wait.go waiter.kick: futex.Wake(e.seq, 1<<30) */
	futexWake(s, 1, 1);
	/* mpmc.go mpmc.closeMPMC: e.mu.Lock(); finish() (nothing reserved or peeked) */
	/* mpmc.go mpmc.closeMPMC: if e.me.table[e.slot].CompareAndSwap(e.pid, 0)
	   (only the producers' table is read: by MPMCConsumer.recoverSlow) */
	if
	:: s == PROD -> tab[PROD]--
	:: else
	fi;
	/* mpmc.go mpmc.closeMPMC: e.me.nlive.Add(^uint32(0)) */
	d_step { nlive[s]--; wk[o]++ };
#ifdef BUG_CLOSE_PENDING
	/* old mpmc.go mpmc.closeMPMC: other.pending.Store(1) (here: the bit) */
	d_step { cw[o] = cw[o] | PB };
#endif
	/* mpmc.go mpmc.closeMPMC: other.wakeAll() */
	wakeAll(o, 1)
}

/* Locals every process declares (waitLoop names both sides' ready
 * functions, and every inline shares these): */
#define LOCALS \
	byte err, e2, t, h, p; \
	bit rdy, ok, wok, adv, gone, needTail, needHead, waited

proctype Producer(byte me) {	/* me: index on the producers' side */
	LOCALS;
	byte n;			/* messages sent */

	do
	:: n == (me == 0 -> K0 : K1) -> break
	:: else ->
		/* mpmc.go MPMCProducer.SendContext: t, err := p.claim(ctx, ...) */
		do	/* mpmc.go MPMCProducer.claim: for round := 1; ; round++ */
		::
			/* mpmc.go MPMCProducer.claim: p.claimable() (p.sh.cons.gone); t, err :=
			   p.loadPos(p.sh.tail, "tail"); p.room(t, need) (p.reclaimCache =
			   p.sh.reclaim.Load()); p.claimAt(t, need, hdr): w.CompareAndSwap(v, busy),
			   p.sh.tail.CompareAndSwap(t, t+size) (one step, see the abstractions) */
			d_step {
				if
				:: nlive[CONS] == 0 -> err = EPEERCLOSED
				:: else ->
					t = tail;
					if
					:: t < reclaim + S ->
						assert(hst[t % S] == RECL && hpos[t % S] == t);
						hst[t % S] = BUSY;
						tail = t + 1;
						ok = 1
					:: else
					fi
				fi
			};
			if
			:: ok || err != OK -> ok = 0; break
			:: else
			fi;
			/* mpmc.go MPMCProducer.room: p.reclaimStep(false); p.reclaimCache =
			   p.sh.reclaim.Load(); return t+need <= ... */
			reclaimStep(0, 1, 0);
			if
			:: rdy -> rdy = 0	/* round again: claimAt */
			:: else ->
				t = 0;
				/* mpmc.go MPMCProducer.claim: err := p.wait(ctx, func() ...); continue */
				waitLoop(PROD, me);
				if
				:: err != OK -> break
				:: else
				fi
			fi
		od;
		if
		:: err != OK -> break
		:: else
		fi;
		/* mpmc.go MPMCProducer.SendContext: copy(p.data[off:...], msg) (folded);
		   mpmc.go MPMCProducer.commit: p.word(t).CompareAndSwap(busy, hdr) */
		d_step {
			assert(hst[t % S] == BUSY && hpos[t % S] == t);
#ifdef IDS
			msg[t % S] = me * K0 + n + 1;
#endif
			hst[t % S] = DATA;
			wk[CONS]++;
			t = 0
		};
		/* mpmc.go MPMCProducer.commit: p.sh.cons.wake(1) */
		sideWake(CONS, 0);
		n++
	od;
	assert(err == OK);
	n = 0;
#ifdef IDLE_PRODUCER
	/* sent its last message: from here it may idle for ever */
	live[PROD * 2 + me] = 0;
#endif
	/* mpmc.go MPMCProducer.Close: p.closeMPMC(..., &p.sh.cons) */
	closeMPMC(PROD, me, CONS)
}

proctype Consumer(byte me) {	/* me: index on the consumers' side */
	LOCALS;

	do	/* mpmc.go MPMCConsumer.RecvContext, repeatedly */
	::
		do	/* mpmc.go MPMCConsumer.await: for waited := false; ; waited = true */
		::
			/* mpmc.go MPMCConsumer.await: pos, n, size, ok, err := c.claim(ctx, true)
			   (MPMCConsumer.claim: h, err := c.loadPos(c.sh.head, "head"); v :=
			   w.Load(); case layout.TypeData: w.CompareAndSwap(v, Reading),
			   c.sh.head.CompareAndSwap(h, h+size); one step, see the abstractions;
			   anything else at head: return ok=false) */
			d_step {
				h = head;
				if
				:: hst[h % S] == DATA && hpos[h % S] == h ->
					hst[h % S] = READING;
					head = h + 1;
					p = h;
					/* the message: received once */
#ifdef IDS
					assert(msg[h % S] >= 1 && msg[h % S] <= NMSG && !got[msg[h % S]]);
					got[msg[h % S]] = 1;
#endif
					nrecv++;
					ok = 1
				:: else ->
					/* case layout.TypeBusy: h < tail && c.sh.prod.left() would discard
					   it: never, producers commit before they close */
					assert(hst[h % S] != BUSY || h >= tail || nlive[PROD] != 0)
				fi;
				h = 0
			};
			if
			:: ok ->
				ok = 0;
				/* mpmc.go MPMCConsumer.await: if ok && waited &&
				   layout.DecodeHeader(c.word(c.sh.head.Load()).Load()).Type == layout.TypeData */
				if
				:: waited ->
					/* (the two loads in one step: this wake is an extra,
					   and a stale head only adds or drops an extra) */
					d_step {
						if
						:: hst[head % S] == DATA -> wok = 1; wk[CONS]++
						:: else
						fi;
						waited = 0
					};
					if
					/* mpmc.go MPMCConsumer.await: c.sh.cons.wake(1) */
					:: wok -> wok = 0; sideWake(CONS, 0)
					:: else
					fi
				:: else
				fi;
				break
			:: else
			fi;
			/* mpmc.go MPMCConsumer.await: if waited { c.check(ctx) } (not closed) */
			/* mpmc.go MPMCConsumer.await: if err := c.wait(ctx, c.ready); err != nil { return ... } */
			waitLoop(CONS, me);
			if
			:: err != OK -> goto eof
			:: else
			fi;
			waited = 1
		od;
		/* mpmc.go MPMCConsumer.RecvContext: copy(buf, ...) (done at the claim);
		   mpmc.go MPMCConsumer.finish: c.word(pos).Store(Reclaimed(pos+capacity))
		   (a finished record: a wake to producers in flight until this
		   consumer's reclaimStep has decided) */
		atomic { hst[p % S] = RECL; hpos[p % S] = p + S; wk[PROD]++; p = 0 };	/* (atomic: a jump ends here) */
		/* mpmc.go MPMCConsumer.RecvContext: c.reclaimStep(false) */
		reclaimStep(1, 0, 0)
	od;
eof:
	assert(err == EOF);
	atomic { err = 0; waited = 0 };	/* (atomic: a jump ends here; live ends in closeMPMC) */
	/* mpmc.go MPMCConsumer.Close: c.closeMPMC(..., &c.sh.prod) */
	closeMPMC(CONS, me, PROD);
	/* every message was received */
	d_step {
		cdone++;
		if
		:: cdone == NC ->
			assert(nrecv == NMSG);
#ifdef IDS
			t = 1;
			do
			:: t <= NMSG -> assert(got[t]); t++
			:: else -> break
			od;
			t = 0
#endif
		:: else
		fi
	}
}

/* Lost wakeup (see Properties above). */
#define headReady	((hst[head % S] == DATA && hpos[head % S] == head) || nlive[PROD] == 0 || \
			 (hst[head % S] != BUSY && head < tail))
#define roomReady	(nlive[CONS] == 0 || tail < reclaim + S || \
			 (reclaim < head && hst[reclaim % S] == RECL && hpos[reclaim % S] == reclaim + S))
#define allAsleep(s)	((live[s * 2] || live[s * 2 + 1]) && \
			 (!live[s * 2] || asleep[s * 2]) && (!live[s * 2 + 1] || asleep[s * 2 + 1]))
#define lostWakeup	((allAsleep(CONS) && headReady && wk[CONS] == 0) || \
			 (allAsleep(PROD) && roomReady && wk[PROD] == 0))

/* The monitor can move only in a state where the condition holds, and
 * then fails; otherwise it stays blocked at a valid end state, so that it
 * neither hides deadlocks nor adds states. */
proctype Monitor() {
end:	atomic { lostWakeup -> assert(!lostWakeup) }
}

init {
	atomic {
		byte i;
		do
		:: i < S -> hst[i] = RECL; hpos[i] = i; i++	/* CreateMPMC: layout.Free(pos) */
		:: else -> break
		od;
		i = 0;
		nlive[PROD] = NP; tab[PROD] = NP;
		nlive[CONS] = NC;
		live[0] = 1; live[1] = 1; live[2] = 1; live[3] = 1;
		run Monitor();
		run Producer(0); run Producer(1);
		run Consumer(0); run Consumer(1)
	}
}

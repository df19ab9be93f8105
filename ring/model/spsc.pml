/*
 * spsc.pml: the SPSC ring's sleep/wake protocol (waiting flag, futex word,
 * Close), as ring/wait.go, ring/spsc.go and ring/oob.go implement it.
 *
 * Check it with ring/model/check.sh (or by hand:
 *   spin -a [-DC=1] [-DCCLOSE] [-DBUG_...] spsc.pml
 *   gcc -O2 -DSAFETY -o pan pan.c && ./pan -m100000).
 *
 * Every sync/atomic operation of the Go code is one atomic step here
 * (a plain assignment or condition, or a d_step); plain local computation
 * is folded into the steps around it. Each step names the Go statement it
 * stands for as "file function: statement".
 *
 * Abstractions:
 *  - The data ring is C slots of one record each; a slot holds 0 (the
 *    header word at head is 0: nothing published) or the message number.
 *    The Go producer keeps the header word at its tail 0 by clearing the
 *    word after each record before it publishes (spsc.go Producer.write:
 *    "*(*uint64)(unsafe.Pointer(p.word(p.tail))) = 0"); the model has the
 *    consumer clear the slot it releases, in the same step as the release
 *    store of head (only the consumer owns the slot then, and the producer
 *    never reads slots), which keeps the same invariant: a non-zero slot
 *    at head is a published record of this lap.
 *  - The urgent lane (URGENT=1) holds one record; one SendUrgent runs in
 *    its own process, concurrently with the producer's sends (it takes
 *    oobMu, never mu). Without PCLOSE the producer closes only after it
 *    returned (a program that joins its goroutines before Close); with
 *    PCLOSE, Close may run while it sends. Flush follows the same "add to
 *    events, then look at waiting" order as SendUrgent and is not
 *    modelled separately.
 *  - The spin phase of waiter.wait only polls ready() and returns; it adds
 *    no interleaving the sleep loop lacks, so it is left out (SpinTime < 0).
 *  - FUTEX_WAIT is the kernel's atomic "compare the word with the value
 *    read, enqueue if equal" followed by a block until a FUTEX_WAKE on the
 *    word; there are no timeouts and no spurious wakeups. The real code
 *    bounds every sleep by spscPoll (1 s); the protocol must not need it.
 *    Each futex word has at most one sleeper (an endpoint's operations
 *    hold its mu; Close does not sleep on the futex), so FUTEX_WAKE(n)
 *    for any n >= 1 clears that sleeper.
 *  - Contexts, deadlines and peer death (peerGone, WatchPeer) are left out.
 *
 * Variants (spin -D...):
 *  C=n, K=n   slots in the ring, messages the producer sends (default 2, 3)
 *  URGENT=0   no urgent sender
 *  CCLOSE     a second goroutine of the consumer process closes the
 *             consumer at any moment (Close while Recv may sleep): the
 *             consumer must return ErrClosed or EOF, and the producer
 *             must finish its sends or get ErrPeerClosed, never sleep on.
 *  PCLOSE     likewise a second goroutine closes the producer at any
 *             moment (Close while Send may sleep for room).
 *  BUG_WAKE_BEFORE_STORE   the waker (producer publish, consumer release)
 *             looks at the peer's waiting flag before its publishing store.
 *  BUG_CHECK_BEFORE_ANNOUNCE  the sleeper re-checks ready() before it
 *             stores waiting = 1.
 *  BUG_SEQ_LATE  the sleeper reads its futex word just before FUTEX_WAIT
 *             instead of before it announces.
 *  BUG_CLOSE_FLAG_FIRST  (with PCLOSE) the old endpoint.close: the shared
 *             closed flag is stored before Close takes mu, so a Send in
 *             progress publishes after it: a consumer may have returned
 *             EOF already, and Send returns nil for a lost message.
 *
 * Properties:
 *  (a) no invalid end state: every process ends (a side asleep forever is
 *      a deadlock that spin reports as an invalid end state);
 *  (b) the Monitor process at the end: no reachable state has a side blocked
 *      in FUTEX_WAIT while its wait condition holds (ready() would return
 *      true or an error, or its own endpoint is closed) and no wake is in
 *      flight to it (cwk/pwk count the wakers between the store that made
 *      the condition true and the end of their wake decision);
 *  (c) the consumer receives 1..K in order, each once (assertions in
 *      Consumer); at EOF it has received every record (and the urgent
 *      message) published before the producer's closed flag was stored;
 *      without CCLOSE/PCLOSE that is all K and the urgent message, and the
 *      consumer ends in EOF.
 */

#ifndef C
#define C 2		/* slots in the ring */
#endif
#ifndef K
#define K 3		/* messages the producer sends */
#endif
#ifndef URGENT
#define URGENT 1	/* urgent messages (0 or 1) */
#endif

/* results of a wait or an operation */
#define OK		0
#define EOF		1	/* errEOF */
#define ECLOSED		2	/* ErrClosed */
#define EPEERCLOSED	3	/* ErrPeerClosed */

/* ---- shared memory (the segment) ---- */
byte ring[C];		/* header word of each slot: 0, or message number 1..K */
byte chead;		/* consumer's published head, in records: c.me.pos (the producer's p.peer.pos) */
bit  pclosed;		/* producer's closed flag in its slot: p.me.closed */
bit  cclosed;		/* consumer's closed flag: c.me.closed */
bit  pwaiting;		/* producer's waiting flag: p.me.waiting */
bit  cwaiting;		/* consumer's waiting flag: c.me.waiting */
/* The futex words p.me.seq and c.me.seq, as what their sleeper can tell
 * from them: moved is set by every seq.Add(1) and cleared when the sleeper
 * loads the word (seq := e.seq.Load()), so moved is "seq != the value
 * read", a counter that never wraps (a 32-bit word wraps after 2^32
 * increments, which the model leaves out). */
bit  pmoved;		/* p.me.seq moved since the producer loaded it */
bit  cmoved;		/* c.me.seq moved since the consumer loaded it */
byte events;		/* out-of-band event count: OOBEvents */
bit  lane;		/* the urgent lane's record: 0 or 1 published */

/* ---- kernel: who is enqueued in FUTEX_WAIT on which word ---- */
bit pasleep;		/* the producer sleeps on p.me.seq */
bit casleep;		/* the consumer sleeps on c.me.seq */

/* ---- process-local state the never claim reads (written by its owner only) ---- */
byte ptail;		/* Producer.tail, in records */
byte chd;		/* Consumer.head, in records */
byte seen;		/* oobConsumer.seen */
bit  pclosedLocal;	/* the producer's waiter.closed */
bit  cclosedLocal;	/* the consumer's waiter.closed */
bit  udone;		/* the urgent sender returned */
bit  pmu;		/* the producer's mu: held by a data operation and by Close */
bit  umu;		/* the producer's oobMu: held by SendUrgent (and Close's quiesce) */
bit  cmu;		/* the consumer's mu */
byte sentAtClose;	/* ptail when the producer's closed flag was stored */
byte urgentAtClose;	/* events when the producer's closed flag was stored */

/* ---- ghosts: wakes in flight to each side ---- */
byte pwk;		/* wakers of the producer between their store and their wake decision */
byte cwk;		/* same for the consumer */

/* The waker's half: spsc.go endpoint.wakePeer, called after an atomic
 * publishing store that incremented wk in the same step. ok is a local. */
inline wakePeer(waiting, moved, asleep, wk) {
	/* spsc.go endpoint.wakePeer: if e.peer.waiting.Load() != 0 */
	d_step {
		if
		:: waiting != 0 -> ok = 1
		:: else -> ok = 0; wk--
		fi
	};
	if
	:: ok ->
		/* spsc.go endpoint.wakePeer: && e.peer.waiting.CompareAndSwap(1, 0) */
		d_step {
			if
			:: waiting == 1 -> waiting = 0
			:: else -> ok = 0; wk--
			fi
		}
	:: else
	fi;
	if
	:: ok ->
		/* spsc.go endpoint.wakePeer: e.peer.seq.Add(1) */
		moved = 1;
		/* spsc.go endpoint.wakePeer: futex.Wake(e.peer.seq, 1) */
		d_step { asleep = 0; wk--; ok = 0 }
	:: else
	fi
}

/* FUTEX_WAIT: futex/futex_linux.go Wait: "if word.Load() != val { return nil }"
 * and the syscall, which enqueues only if the word still holds val (one
 * atomic step), then blocks until a FUTEX_WAKE clears asleep. */
inline futexWait(moved, asleep) {
	atomic {
		if
		:: moved	/* the word changed since it was loaded */
		:: else -> asleep = 1; asleep == 0
		fi
	}
}

/* spsc.go Consumer.ready */
inline consumerReady() {
	/* spsc.go Consumer.ready: closed := c.peer.closed.Load() != 0 */
	cl = pclosed;
	if
	/* spsc.go Consumer.ready: if c.word(c.head).Load() != 0 { return true, nil } */
	:: ring[chd % C] != 0 -> rdy = 1
	:: else ->
		if
		/* spsc.go Consumer.ready: if o := c.oob; o != nil && o.words.events.Load() != o.seen */
		:: URGENT && events != seen -> rdy = 1
		:: else ->
			/* spsc.go Consumer.ready: if closed { return false, errEOF } */
			if
			:: cl -> err = EOF
			:: else
			fi
		fi
	fi;
	cl = 0
}

/* spsc.go Producer.room, for one record: p.tail+total-p.headCache <= p.capacity */
inline room() {
	if
	:: ptail + 1 - hc <= C -> rdy = 1
	:: else ->
		/* spsc.go Producer.room: h := p.peer.pos.Load() */
		hc = chead;
		if
		:: ptail + 1 - hc <= C -> rdy = 1
		:: else -> rdy = 0
		fi
	fi
}

/* the ready function of spsc.go Producer.acquire */
inline producerReady() {
	if
	/* spsc.go Producer.acquire (ready): if p.peer.closed.Load() != 0 { return false, ErrPeerClosed } */
	:: cclosed -> err = EPEERCLOSED
	:: else -> room()
	fi
}

/* The sleeper's half: wait.go waiter.wait, the loop after the spin phase.
 * isProducer picks the ready function (it sets rdy, or err); err holds the
 * result. Locals: rdy, err. */
inline waitLoop(moved, waiting, asleep, closedLocal, isProducer) {
	do
	::
#ifndef BUG_SEQ_LATE
		/* wait.go waiter.wait: seq := e.seq.Load() */
		moved = 0;
#endif
#ifndef BUG_CHECK_BEFORE_ANNOUNCE
		/* wait.go waiter.announce: e.waiting.Store(1) */
		waiting = 1;
#endif
		/* wait.go waiter.wait: ok, err := ready() */
		if
		:: isProducer -> producerReady()
		:: else -> consumerReady()
		fi;
		if
		:: rdy || err != OK ->
			/* wait.go waiter.wait: e.retract(); return err
			   (wait.go waiter.retract: e.waiting.Store(0)) */
			waiting = 0; rdy = 0; break
		:: else
		fi;
		/* wait.go waiter.wait: if e.closed.Load() { e.retract(); return ErrClosed } */
		if
		:: closedLocal -> waiting = 0; err = ECLOSED; break
		:: else
		fi;
#ifdef BUG_CHECK_BEFORE_ANNOUNCE
		waiting = 1;
#endif
#ifdef BUG_SEQ_LATE
		moved = 0;
#endif
		/* wait.go waiter.wait: err = futex.Wait(e.seq, seq, timeout) */
		futexWait(moved, asleep);
		/* wait.go waiter.wait: e.retract() (waiter.retract: e.waiting.Store(0)) */
		waiting = 0
	od
}

/* mutex steps: sync.Mutex Lock and Unlock of a process-local mutex */
#define lock(m)		atomic { m == 0 -> m = 1 }
#define unlock(m)	m = 0

/* spsc.go Producer.Close: endpoint.close with quiesce = oobMu Lock/Unlock */
inline producerClose() {
	/* spsc.go endpoint.close: e.closed.Store(true) (a wake in flight to the
	   producer's own waiter, the kick below) */
	d_step { pclosedLocal = 1; pwk++ };
#ifdef BUG_CLOSE_FLAG_FIRST
	/* old spsc.go endpoint.close: e.me.closed.Store(1) before e.mu.Lock() */
	d_step { pclosed = 1; cwk++; sentAtClose = ptail; urgentAtClose = events };
#endif
	/* spsc.go endpoint.close: e.kick() (wait.go waiter.kick: e.seq.Add(1)) */
	pmoved = 1;
	/* wait.go waiter.kick: futex.Wake(e.seq, 1<<30) */
	d_step { pasleep = 0; pwk-- };
	/* spsc.go endpoint.close: e.mu.Lock() (waits for the operation in progress) */
	lock(pmu);
	/* spsc.go Producer.Close's quiesce: p.oobMu.Lock(); p.oobMu.Unlock() */
	lock(umu);
	unlock(umu);
#ifndef BUG_CLOSE_FLAG_FIRST
	/* spsc.go endpoint.close: e.me.closed.Store(1) */
	d_step { pclosed = 1; cwk++; sentAtClose = ptail; urgentAtClose = events };
#endif
	/* spsc.go endpoint.close: e.peer.seq.Add(1) */
	cmoved = 1;
	/* spsc.go endpoint.close: futex.Wake(e.peer.seq, 1<<30) */
	d_step { casleep = 0; cwk-- };
	/* spsc.go endpoint.close: e.mu.Unlock() */
	unlock(pmu)
}

/* spsc.go Consumer.Close: endpoint.close */
inline consumerClose() {
	/* spsc.go endpoint.close: e.closed.Store(true) */
	d_step { cclosedLocal = 1; cwk++ };
	/* spsc.go endpoint.close: e.kick() (wait.go waiter.kick: e.seq.Add(1)) */
	cmoved = 1;
	/* wait.go waiter.kick: futex.Wake(e.seq, 1<<30) */
	d_step { casleep = 0; cwk-- };
	/* spsc.go endpoint.close: e.mu.Lock() */
	lock(cmu);
	/* spsc.go endpoint.close: e.me.closed.Store(1) */
	d_step { cclosed = 1; pwk++ };
	/* spsc.go endpoint.close: e.peer.seq.Add(1) */
	pmoved = 1;
	/* spsc.go endpoint.close: futex.Wake(e.peer.seq, 1<<30) */
	d_step { pasleep = 0; pwk-- };
	/* spsc.go endpoint.close: e.mu.Unlock() */
	unlock(cmu)
}

active proctype Producer() {
	byte i = 1, hc, err;
	bit rdy, ok;
	bit cl;		/* consumerReady's local, unused here (waitLoop names both ready functions) */

	do
	:: i > K -> break
	:: else ->
		/* spsc.go endpoint.begin: e.mu.Lock(); if e.closed.Load() { return ErrClosed } */
		lock(pmu);
		if
		:: pclosedLocal -> err = ECLOSED; unlock(pmu); break
		:: else
		fi;
		/* spsc.go Producer.acquire: if p.peer.closed.Load() != 0 { return ErrPeerClosed } */
		if
		:: cclosed -> err = EPEERCLOSED; unlock(pmu); break
		:: else
		fi;
		/* spsc.go Producer.acquire: if ok, err := p.room(total); ok || err != nil */
		room();
		if
		:: rdy -> rdy = 0
		:: else ->
			/* spsc.go Producer.acquire: return p.wait(ctx, func() ...) */
			waitLoop(pmoved, pwaiting, pasleep, pclosedLocal, 1);
			if
			:: err != OK -> unlock(pmu); break
			:: else
			fi
		fi;
#ifndef BUG_WAKE_BEFORE_STORE
		/* spsc.go Producer.write + Producer.store: p.pendWord.Store(p.pendHdr)
		   (the publishing store of the header; the payload was written before
		   it). Nothing is published after the closed flag: endpoint.close
		   stores it only once it holds mu. */
		d_step { assert(!pclosed); ring[ptail % C] = i; ptail++; cwk++ };
		/* spsc.go Producer.publish: p.wakePeer() */
		wakePeer(cwaiting, cmoved, casleep, cwk);
#else
		cwk++;
		wakePeer(cwaiting, cmoved, casleep, cwk);
		d_step { ring[ptail % C] = i; ptail++ };
#endif
		/* spsc.go Producer.SendContext: defer p.mu.Unlock() */
		unlock(pmu);
		i++
	od;
#ifndef PCLOSE
#if URGENT
	/* the program joins its SendUrgent goroutine before it calls Close
	   (see the abstractions above; PCLOSE closes concurrently) */
	udone;
#endif
	producerClose();
#endif
	i = 0; hc = 0; err = 0
}

#if URGENT
/* oob.go Producer.SendUrgent, from another goroutine of the producer process */
active proctype Urgent() {
	bit ok;

	/* oob.go Producer.oobBegin: p.oobMu.Lock() */
	lock(umu);
	/* oob.go Producer.oobBegin: case p.closed.Load(): ...; case p.peer.closed.Load() != 0: ...
	   (two loads, one step: both flags only go from 0 to 1) */
	if
	:: pclosedLocal || cclosed -> skip
	:: else ->
		/* oob.go Producer.SendUrgent: l.room(total) (the lane is empty: it
		   holds one record and this is the only urgent message) */
		/* oob.go Producer.SendUrgent: l.store() (the lane record's header;
		   never after the closed flag: Close waits for oobMu first) */
		d_step { assert(!pclosed); lane = 1 };
		/* oob.go Producer.SendUrgent: p.oob.words.events.Add(1) */
		d_step { events++; cwk++ };
		/* oob.go Producer.SendUrgent: l.wakePeer() (the lane's peer side is
		   the consumer's: laneSides shares the data ring's control slots) */
		wakePeer(cwaiting, cmoved, casleep, cwk)
	fi;
	/* oob.go Producer.SendUrgent: defer p.oobMu.Unlock() */
	unlock(umu);
	udone = 1
}
#endif

active proctype Consumer() {
	byte expect = 1, err, ev, v;
	bit rdy, ok, cl, waited, gotUrgent;
	byte hc;	/* room's local, unused here (waitLoop names both ready functions) */

	do	/* spsc.go Consumer.RecvMsg, repeatedly */
	::
		/* spsc.go endpoint.begin: e.mu.Lock(); if e.closed.Load() { return ErrClosed } */
		lock(cmu);
		if
		:: cclosedLocal -> err = ECLOSED; goto stop
		:: else
		fi;
		waited = 0;
		do	/* spsc.go Consumer.await: for waited := false; ; waited = true */
		::
#if URGENT
			/* oob.go Consumer.oobPoll: ev := o.words.events.Load() */
			ev = events;
			if
			:: ev != seen ->
				/* oob.go Consumer.oobPoll: o.lane.next(o.lane.head) (the lane's header load) */
				if
				:: lane ->
					/* an urgent message: spsc.go Consumer.take, r.urgent:
					   l.release(r.after): c.me.pos.Store(pos) (the lane's head;
					   the model clears the lane's record with it) */
					assert(!gotUrgent);
					gotUrgent = 1;
					d_step { lane = 0; pwk++; ev = 0 };
					/* spsc.go Consumer.release: c.wakePeer() (the lane's
					   peer is the producer's side) */
					wakePeer(pwaiting, pmoved, pasleep, pwk);
					goto received
				/* oob.go Consumer.oobPoll: o.seen = ev */
				:: else -> seen = ev; ev = 0
				fi
			:: else -> ev = 0
			fi;
#endif
			/* spsc.go Consumer.next: h := c.word(pos).Load() */
			v = ring[chd % C];
			if
			:: v != 0 ->
				/* (c) in order, each once */
				assert(v == expect);
				expect++;
				/* spsc.go Consumer.release: c.me.pos.Store(pos) */
				d_step { ring[chd % C] = 0; chd++; chead = chd; pwk++; v = 0 };
				/* spsc.go Consumer.release: c.wakePeer() */
				wakePeer(pwaiting, pmoved, pasleep, pwk);
				goto received
			:: else
			fi;
			/* spsc.go Consumer.await: if waited { c.check(ctx) }
			   (wait.go waiter.check: if e.closed.Load() { return ErrClosed }) */
			if
			:: waited && cclosedLocal -> err = ECLOSED; goto stop
			:: else
			fi;
			/* spsc.go Consumer.await: c.wait(ctx, c.ready) */
			waitLoop(cmoved, cwaiting, casleep, cclosedLocal, 0);
			if
			:: err != OK -> goto stop
			:: else
			fi;
			waited = 1
		od;
received:
		/* spsc.go Consumer.RecvMsg: defer c.mu.Unlock() */
		unlock(cmu);
		waited = 0
	od;
stop:
	/* spsc.go Consumer.RecvMsg: defer c.mu.Unlock() (the call that ended) */
	unlock(cmu);
	/* (c) EOF comes after everything published before the producer's
	   closed flag was stored was received */
	assert(err != EOF || (expect - 1 >= sentAtClose && gotUrgent >= urgentAtClose));
#if !defined(CCLOSE) && !defined(PCLOSE)
	/* (c) without Close from another goroutine: all K and the urgent
	   message, then EOF */
	assert(err == EOF && expect == K + 1 && gotUrgent == URGENT);
#endif
#ifndef CCLOSE
	consumerClose();
#endif
	err = 0; waited = 0
}

#ifdef CCLOSE
/* Consumer.Close from another goroutine of the consumer process */
active proctype ConsumerCloser() {
	consumerClose()
}
#endif

#ifdef PCLOSE
/* spsc.go Producer.Close from another goroutine of the producer process
 * (endpoint.close, whose quiesce waits for a SendUrgent in progress) */
active proctype ProducerCloser() {
	producerClose();
#if URGENT
	udone
#endif
}
#endif

/* (b) lost wakeup: a side asleep whose wait condition holds, with no wake
 * in flight to it. The conditions are the ready functions above (plus the
 * closed check of waiter.wait), evaluated on the current state. */
#define consumerCanGo	(ring[chd % C] != 0 || (URGENT && events != seen) || pclosed || cclosedLocal)
#define producerCanGo	(ptail + 1 - chead <= C || cclosed || pclosedLocal)
#define lostWakeup	((casleep && consumerCanGo && cwk == 0) || (pasleep && producerCanGo && pwk == 0))

/* The monitor can move only in a state where the lost-wakeup condition
 * holds, and then fails; otherwise it stays blocked at a valid end state, so
 * that it neither hides deadlocks nor adds states. (A never claim would do
 * the same but turns off the invalid-end-state check.) */
active proctype Monitor() {
end:	atomic { lostWakeup -> assert(!lostWakeup) }
}

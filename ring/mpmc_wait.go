package ring

// Sleep and wake in the MPMC ring: a side's sleeper count with its
// pending-wake bit, and the wakes that producers and consumers issue after
// their publishing stores. The sleeper's half (announce, retract, the
// futex sleep) is waiter, in wait.go. The ordering contract is in the
// opening comment of mpmc.go; the protocol is modelled in
// ring/model/mpmc.pml.

import "github.com/shmlane/shmlane/internal/futex"

// pendingBit is the top bit of a side's sleeper-count word
// (layout.MPMCWaitCount): set by a waker, cleared by every sleeper when it
// announces itself and when it retracts (waiter.announce, waiter.retract).
// While it is set, the sleepers counted have been woken (or are about to
// look at the ring) and further wakes would be redundant. The count and
// the bit share one word so that a waker decides on both in one CAS.
const pendingBit uint32 = 1 << 31

// wake wakes n sleepers of a side if any sleep and none was woken since
// the last sleeper looked at the ring. It follows an atomic publishing
// store (see the ordering notes in mpmc.go): a sleeper announces itself
// (count+1) before it re-checks the ring, so either it sees the publish or
// this sees it counted.
//
// The CAS sets pendingBit only on the exact word it read: if a sleeper
// retracted in between (count-1), the CAS fails and the word is read
// again, so the bit is never set on behalf of a sleeper that has gone
// (which would suppress every later wake). Every sleeper clears the bit
// when it retracts (waiter.retract), so a bit set while a sleeper was
// counted is cleared by that sleeper after it has looked at the ring; and
// when it announces itself (waiter.announce), so a sleeper that arrives
// after a wake is not left out of the next one.
// If the CAS keeps failing (a peer rewriting the word), it wakes anyway:
// a spare wake is harmless.
func (m *mpmcSide) wake(n int) {
	for try := 0; ; try++ {
		v := m.count.Load()
		if v&^pendingBit == 0 || v&pendingBit != 0 {
			return
		}
		if try < 4 && !m.count.CompareAndSwap(v, v|pendingBit) {
			continue
		}
		m.seq.Add(1)
		futex.Wake(m.seq, n)
		m.wakes.Add(1)
		return
	}
}

// wakeAll wakes every sleeper of a side whatever the count says, so that
// each re-checks its wait condition (the other side closed).
func (m *mpmcSide) wakeAll() {
	m.seq.Add(1)
	futex.Wake(m.seq, 1<<30)
}

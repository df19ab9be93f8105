package bench

// The Go channel: the baseline with no process boundary. Its peer runs
// in a goroutine of this process, driven by the same loops as every
// other transport's.

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"

	"github.com/shmlane/shmlane/internal/layout"
)

// chanTransport is the in-process baseline.
var chanTransport = &Transport{
	Name: "chan",
	How: "a buffered Go channel of []byte between two goroutines of this process (the baseline, no process boundary): " +
		"the producer copies each message into a slot of a preallocated pool and sends the slot, one channel send per message " +
		"whatever -batch says (a send takes the channel's lock and cannot be shared by a batch); the consumer copies it out. " +
		"The channel buffers as many messages as the ring's capacity holds records.",
	modes: bothModes,
	link:  chanLink{},
}

// chanLink connects two goroutines of this process with a buffered
// channel: for a stream, one that buffers as many messages as the ring's
// capacity holds records; for pingpong, one of one message each way.
type chanLink struct{}

// listen makes both sides at once: the peer's is handed to a goroutine.
func (chanLink) listen(c *caseSpec, _ string, l *listener) error {
	if c.mode != ModePingpong {
		k := max(c.capacity/int(layout.RecordSize(c.size)), 1)
		ch := make(chan []byte, k)
		l.local = &end{s: newChanSender(ch, c.size, k)}
		l.peer = &end{r: chanReceiver(ch)}
		return nil
	}
	req, resp := make(chan []byte, 1), make(chan []byte, 1)
	l.local = &end{s: newChanSender(req, c.size, 1), r: chanReceiver(resp)}
	l.peer = &end{s: newChanSender(resp, c.size, 1), r: chanReceiver(req)}
	return nil
}

// dial fails: a channel's peer is a goroutine of this process, given its
// end by listen.
func (chanLink) dial(context.Context, *peerSpec, []*os.File) (*end, error) {
	return nil, errors.New("a channel does not cross processes: its peer runs in the process that listens")
}

// chanSender sends copies of messages on a channel, in slots of a pool
// used round-robin. With a channel of capacity k between one sender and
// one receiver, k+2 slots make reuse safe: when the sender fills slot i,
// its send of message i-1 found room, so the receiver had received
// message i-k-1 and was done with every message before it, including
// i-k-2, the last user of slot i. Safe for one goroutine; Close may be
// called again, from the same goroutine or after it.
type chanSender struct {
	ch    chan<- []byte
	slots [][]byte
	next  int
	once  sync.Once
}

// newChanSender returns a sender on ch, of capacity k, of messages of up
// to size bytes.
func newChanSender(ch chan<- []byte, size, k int) *chanSender {
	backing := make([]byte, size*(k+2))
	s := &chanSender{ch: ch, slots: make([][]byte, k+2)}
	for i := range s.slots {
		s.slots[i] = backing[i*size : (i+1)*size : (i+1)*size]
	}
	return s
}

// Send copies msg into the next slot and sends the slot.
func (s *chanSender) Send(msg []byte) error {
	slot := s.slots[s.next]
	if s.next++; s.next == len(s.slots) {
		s.next = 0
	}
	s.ch <- slot[:copy(slot, msg)]
	return nil
}

// Close closes the channel: the receiver gets io.EOF once it has taken
// what is buffered.
func (s *chanSender) Close() error {
	s.once.Do(func() { close(s.ch) })
	return nil
}

// chanReceiver receives copies of messages from a channel.
type chanReceiver <-chan []byte

// Recv copies the next message into buf; io.EOF once the channel is
// closed and drained.
func (r chanReceiver) Recv(buf []byte) (int, error) {
	m, ok := <-r
	if !ok {
		return 0, io.EOF
	}
	return copy(buf, m), nil
}

// Close does nothing: the sending side closes a channel.
func (r chanReceiver) Close() error { return nil }
